"""The one training-state mechanism: exact round trip, and the resume rule (identity match, explicit --resume)."""

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from kdcompile.checkpoint import Checkpoint, save_due
from kdcompile.errors import KdError

IDENTITY = {"config": {"d_model": 8, "steps": 10}, "teacher": "t.pt"}


def _objects(seed: int) -> dict:
    """A model, its optimiser and schedule after one step, and both kinds of generator, all seeded by `seed`."""
    torch.manual_seed(seed)
    model = nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-2, total_steps=10)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    sched.step()
    gen = torch.Generator().manual_seed(seed)
    torch.rand(5, generator=gen)
    rng = np.random.default_rng(seed)
    rng.random(7)
    return {"model": model, "optimizer": opt, "scheduler": sched, "generator": gen, "rng": rng}


def _equal(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    return a == b


def test_round_trip_restores_every_kind_of_state_exactly(tmp_path):
    saved = _objects(1)
    torch.manual_seed(123)
    torch_rng = torch.get_rng_state()
    ckpt = Checkpoint(tmp_path / "s.pt", IDENTITY)
    ckpt.save(4, saved, meta={"losses": [0.5, 0.25]})
    torch.manual_seed(0)  # move the global generator away; restore must bring it back

    fresh = _objects(2)
    assert not _equal(fresh["model"].state_dict(), saved["model"].state_dict())
    assert Checkpoint(tmp_path / "s.pt", IDENTITY).restore(fresh) == 4
    assert _equal(fresh["model"].state_dict(), saved["model"].state_dict())
    assert _equal(fresh["optimizer"].state_dict(), saved["optimizer"].state_dict())
    assert _equal(fresh["scheduler"].state_dict(), saved["scheduler"].state_dict())
    assert torch.equal(fresh["generator"].get_state(), saved["generator"].get_state())
    assert fresh["rng"].bit_generator.state == saved["rng"].bit_generator.state
    assert fresh["rng"].random() == saved["rng"].random()  # the generators go on identically
    assert torch.equal(torch.get_rng_state(), torch_rng)


def test_meta_comes_back_with_a_resume_and_is_empty_when_fresh(tmp_path):
    Checkpoint(tmp_path / "s.pt", IDENTITY).save(3, _objects(0), meta={"losses": [1.0]})
    ckpt = Checkpoint(tmp_path / "s.pt", IDENTITY)
    ckpt.restore(_objects(0))
    assert ckpt.meta == {"losses": [1.0]}
    ckpt.restore(_objects(0), resume=False)
    assert ckpt.meta == {}


def test_tuples_in_the_identity_match_after_the_round_trip(tmp_path):
    identity = {"config": {"models": ("student",)}}
    Checkpoint(tmp_path / "s.pt", identity).save(2, _objects(0))
    assert Checkpoint(tmp_path / "s.pt", identity).restore(_objects(0), resume=True) == 2


def test_another_identity_starts_fresh_by_default(tmp_path):
    Checkpoint(tmp_path / "s.pt", IDENTITY).save(5, _objects(1))
    other = IDENTITY | {"config": {"d_model": 16, "steps": 10}}
    fresh = _objects(2)
    before = {k: v.clone() for k, v in fresh["model"].state_dict().items()}
    assert Checkpoint(tmp_path / "s.pt", other).restore(fresh) == 0
    assert _equal(fresh["model"].state_dict(), before)  # nothing was loaded


def test_another_identity_with_resume_names_what_differs(tmp_path):
    Checkpoint(tmp_path / "s.pt", IDENTITY).save(5, _objects(1))
    other = IDENTITY | {"teacher": "bigger.pt"}
    with pytest.raises(KdError, match=r"another teacher;") as e:
        Checkpoint(tmp_path / "s.pt", other).restore(_objects(2), resume=True)
    assert "config" not in str(e.value)


def test_resume_without_a_checkpoint_is_an_error(tmp_path):
    with pytest.raises(KdError, match="no checkpoint"):
        Checkpoint(tmp_path / "missing.pt", IDENTITY).restore(_objects(0), resume=True)
    with pytest.raises(KdError, match="no checkpoint"):
        Checkpoint(None, IDENTITY).restore(_objects(0), resume=True)
    assert Checkpoint(tmp_path / "missing.pt", IDENTITY).restore(_objects(0)) == 0


def test_resume_false_ignores_a_matching_checkpoint(tmp_path):
    Checkpoint(tmp_path / "s.pt", IDENTITY).save(5, _objects(1))
    assert Checkpoint(tmp_path / "s.pt", IDENTITY).restore(_objects(2), resume=False) == 0


@pytest.mark.parametrize("old", ["epoch_dict", "format_0", "pickle_only", "not_torch"])
def test_an_old_format_file_is_not_resumed(tmp_path, old):
    path = tmp_path / "s.pt"
    if old == "epoch_dict":  # what kdcompile.train wrote before this format
        torch.save({"epoch": 0, "model": nn.Linear(3, 2).state_dict()}, path)
    elif old == "format_0":
        torch.save({"format": 0, "identity": IDENTITY, "step": 5}, path)
    elif old == "pickle_only":  # weights_only loading refuses arbitrary objects
        torch.save({"format": 1, "obj": save_due}, path)
    else:
        path.write_text("not a checkpoint")
    assert Checkpoint(path, IDENTITY).restore(_objects(0)) == 0
    with pytest.raises(KdError, match="older kdcompile.*delete it or drop --resume"):
        Checkpoint(path, IDENTITY).restore(_objects(0), resume=True)


def test_save_is_atomic_and_remove_deletes(tmp_path):
    ckpt = Checkpoint(tmp_path / "sub" / "s.pt", IDENTITY)
    ckpt.save(1, _objects(0))
    ckpt.save(2, _objects(0))
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["s.pt"]  # no temporary file left behind
    assert torch.load(tmp_path / "sub" / "s.pt", weights_only=True)["step"] == 2


def test_a_save_killed_halfway_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    ckpt = Checkpoint(tmp_path / "s.pt", IDENTITY)
    ckpt.save(1, _objects(0))

    def torn_save(obj, path):
        Path(path).write_bytes(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", torn_save)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save(2, _objects(0))
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["s.pt"]
    assert ckpt.restore(_objects(0)) == 1
    ckpt.remove()
    assert not (tmp_path / "s.pt").exists()
    ckpt.remove()  # removing twice is fine


def test_save_due_every_n_and_at_the_end():
    assert [n for n in range(1, 13) if save_due(n, 5, 12)] == [5, 10, 12]
