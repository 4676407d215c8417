import pytest
import torch

from kdcompile.errors import KdError
from kdcompile.feature_kd import FeatureHooks, attention_transfer, hint_loss, projector, relational_kd


def test_hooks_capture_named_outputs_and_leave_no_trace(tiny_cnn):
    x = torch.randn(2, 1, 8, 8)
    with FeatureHooks(tiny_cnn, ["features.1", "features.4"]) as hooks:
        tiny_cnn(x)
        assert hooks.features["features.1"].shape == (2, 8, 8, 8)
        assert hooks.features["features.4"].shape == (2, 16, 4, 4)
    assert all(not m._forward_hooks for m in tiny_cnn.modules())
    with pytest.raises(KdError, match="No module named 'nope'"):
        FeatureHooks(tiny_cnn, ["nope"])


def test_hint_projector_learns_the_map_between_widths():
    torch.manual_seed(0)
    f_s = torch.randn(16, 4, 6, 6)
    mix = torch.randn(8, 4)
    f_t = torch.einsum("oc,bchw->bohw", mix, f_s)  # teacher features are a linear map of the student's
    proj = projector(f_s.shape, f_t.shape)
    assert proj(f_s).shape == f_t.shape
    opt = torch.optim.Adam(proj.parameters(), lr=0.05)
    first = hint_loss(f_s, f_t, proj).item()
    for _ in range(300):
        opt.zero_grad()
        loss = hint_loss(f_s, f_t, proj)
        loss.backward()
        opt.step()
    assert loss.item() < 0.05 * first
    assert projector(torch.Size([2, 7, 32]), torch.Size([2, 7, 64]))(torch.randn(2, 7, 32)).shape == (2, 7, 64)


def test_attention_transfer_ignores_channel_count_and_scale():
    f = torch.randn(3, 8, 6, 6)
    assert attention_transfer(f, f * 3).item() < 1e-10  # maps are normalised
    assert attention_transfer(f[:, :4], torch.cat([f[:, :4]] * 4, 1)).item() < 1e-10
    assert attention_transfer(torch.randn(3, 4, 12, 12), f).item() > 0  # different sizes are pooled


def test_relational_kd_is_invariant_to_scale_and_rotation():
    e = torch.randn(6, 10)
    q, _ = torch.linalg.qr(torch.randn(10, 10))
    assert relational_kd(e, 2.5 * e @ q).item() < 1e-6  # distances are mean-normalised, angles rotation-free
    assert relational_kd(e, torch.randn(6, 3)).item() > 0  # and it compares any widths
