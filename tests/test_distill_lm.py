import pytest

from kdcompile.distill_lm import METHODS, LMConfig, LMDistillConfig, distill_lm, train_char_lm_teacher
from kdcompile.lm import pydoc_text


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    path = tmp_path_factory.mktemp("lm") / "teacher.pt"
    train_char_lm_teacher(path, LMConfig(d=32, heads=2, layers=1, context=32, steps=40, batch_size=16))
    return path


def test_pydoc_text_is_real_english_with_a_fixed_holdout():
    a, b = pydoc_text(), pydoc_text()
    assert len(a.train) + len(a.test) > 400_000 and a.vocab == b.vocab and (a.test == b.test).all()
    assert "e" in a.vocab and " " in a.vocab


@pytest.mark.parametrize("method", METHODS)
def test_every_method_distils_and_reports(teacher, tmp_path, method):
    r = distill_lm(teacher, tmp_path / "s.pt", LMDistillConfig(method=method, d=16, heads=2, layers=1, steps=6,
                                                                batch_size=8))
    assert r["nll"] > 0 and r["kl_to_teacher"] >= 0 and r["student_parameters"] < r["teacher_parameters"]
    assert (tmp_path / "s.pt").exists()
    g = r["generation"]["T0.7"]
    assert g["tnll"] > 0 and g["self_nll"] > 0 and 0 <= g["word_validity"] <= 1 and 0 < g["distinct2"] <= 1
    if method == "tip":
        assert 0 < r["tip_kept_share"] <= 0.5 + 1e-9 and r["tip_loss_bytes_saved_per_batch"] > 0
    assert r["on_policy"] == (0.5 if method in ("gjsd", "tip") else 0.0)


def test_a_users_text_file_trains_and_distils(tmp_path):
    text = tmp_path / "book.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 200)
    teacher = tmp_path / "t.pt"
    train_char_lm_teacher(teacher, LMConfig(d=16, heads=2, layers=1, context=16, steps=5, batch_size=4,
                                            text=str(text)))
    r = distill_lm(teacher, tmp_path / "s.pt", LMDistillConfig(method="rkl", d=8, heads=2, layers=1, steps=3,
                                                               batch_size=4))
    assert r["nll"] > 0


def test_interrupted_lm_distillation_resumes_to_the_same_student(teacher, tmp_path, monkeypatch):
    import torch

    import kdcompile.distill_lm as d

    cfg = LMDistillConfig(method="hpd", d=16, heads=2, layers=1, steps=8, batch_size=4)
    straight = distill_lm(teacher, tmp_path / "a.pt", cfg)
    real_train = d._train

    def killed_in_step_six(*args, **kwargs):
        loss_of_batch, calls = args[8], []

        def counting(*a):
            calls.append(1)
            if len(calls) == 6:
                raise KeyboardInterrupt  # Ctrl-C in step 6, after step 5's checkpoint
            return loss_of_batch(*a)

        return real_train(*args[:8], counting, **dict(kwargs, checkpoint_every=5))

    with monkeypatch.context() as m:
        m.setattr(d, "_train", killed_in_step_six)
        with pytest.raises(KeyboardInterrupt):
            distill_lm(teacher, tmp_path / "b.pt", cfg)
    (state,) = tmp_path.glob(".b.pt.*.state")  # beside the output, named after the run
    assert torch.load(state, weights_only=True)["step"] == 5
    steps_run = []

    def counting_train(*args, **kwargs):
        loss_of_batch = args[8]
        return real_train(*args[:8], lambda *a: (steps_run.append(1), loss_of_batch(*a))[1], **kwargs)

    with monkeypatch.context() as m:
        m.setattr(d, "_train", counting_train)
        resumed = distill_lm(teacher, tmp_path / "b.pt", cfg)
    assert len(steps_run) == 3  # steps 6-8 only: it resumed
    assert not state.exists()  # removed once the student is saved
    assert resumed["nll"] == straight["nll"]
    a, b = torch.load(tmp_path / "a.pt", weights_only=True), torch.load(tmp_path / "b.pt", weights_only=True)
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])


def _weights(path):

    from kdcompile.load import load_model

    return {k: v.clone() for k, v in load_model(path).module.state_dict().items()}


def test_init_starts_the_student_from_the_given_checkpoint(teacher, tmp_path):
    """Stage 1 trains a CE student; stage 2 starts from it: with a zero learning rate its weights come out
    unchanged, while a run without --init starts elsewhere."""
    import torch

    small = dict(d=16, heads=2, layers=1, batch_size=8)
    distill_lm(teacher, tmp_path / "stage1.pt", LMDistillConfig(method="ce", steps=5, **small))
    init = _weights(tmp_path / "stage1.pt")
    distill_lm(teacher, tmp_path / "from_init.pt", LMDistillConfig(method="fkl", steps=3, lr=0.0, ce_weight=0.5,
                                                                   init=str(tmp_path / "stage1.pt"), **small))
    assert all(torch.equal(init[k], v) for k, v in _weights(tmp_path / "from_init.pt").items())
    distill_lm(teacher, tmp_path / "fresh.pt", LMDistillConfig(method="fkl", steps=3, lr=0.0, seed=1, **small))
    assert not all(torch.equal(init[k], v) for k, v in _weights(tmp_path / "fresh.pt").items())


def test_init_of_another_architecture_or_a_bad_ce_weight_is_one_sentence(teacher, tmp_path):
    from kdcompile.errors import KdError

    distill_lm(teacher, tmp_path / "s.pt", LMDistillConfig(method="ce", d=16, heads=2, layers=1, steps=2,
                                                           batch_size=4))
    with pytest.raises(KdError, match="another architecture than this student \\(d 16 vs 32"):
        distill_lm(teacher, tmp_path / "t.pt", LMDistillConfig(d=32, heads=2, layers=1, steps=2, batch_size=4,
                                                               init=str(tmp_path / "s.pt")))
    with pytest.raises(KdError, match="--ce-weight is a share"):
        distill_lm(teacher, tmp_path / "u.pt", LMDistillConfig(steps=2, batch_size=4, ce_weight=1.5))


def test_the_tail_guard_trains_and_refuses_methods_without_a_divergence(teacher, tmp_path):
    from kdcompile.errors import KdError

    small = dict(d=16, heads=2, layers=1, steps=3, batch_size=4)
    r = distill_lm(teacher, tmp_path / "s.pt", LMDistillConfig(method="rkl", teacher_top_k=5, **small))
    assert r["nll"] > 0 and r["config"]["teacher_top_k"] == 5
    with pytest.raises(KdError, match="--teacher-top-k"):
        distill_lm(teacher, tmp_path / "t.pt", LMDistillConfig(method="hpd", teacher_top_k=5, **small))


def test_the_linear_on_policy_schedule_starts_off_policy_and_calibration_reports_its_temperature(teacher, tmp_path):
    small = dict(method="gjsd", d=16, heads=2, layers=1, steps=12, batch_size=4, on_policy=1.0)
    const = distill_lm(teacher, tmp_path / "a.pt", LMDistillConfig(**small))
    assert const["on_policy_steps"] == list(range(12))  # a share of 1: every batch written by the student
    ramp = distill_lm(teacher, tmp_path / "b.pt", LMDistillConfig(on_policy_schedule="linear",
                                                                   calibrate_teacher=True, **small))
    assert 0 not in ramp["on_policy_steps"] and 0 < len(ramp["on_policy_steps"]) < 12
    assert 0.5 <= ramp["teacher_temperature"] <= 3.0 and const["teacher_temperature"] == 1.0
    d = ramp["diagnostics"]
    assert 0 <= d["teacher_tail_mass"] <= 1 and d["teacher_ece"] >= 0
    assert set(d["teacher_on_student_prefixes"]) == {"top1", "entropy"}


def test_teacher_mixed_sampling_draws_from_the_mixture(teacher, tmp_path):
    """m = 0 is the student's own sampling, m = 1 the teacher's, draw for draw (same generator); a bad share is
    refused before training."""
    import torch

    from kdcompile.errors import KdError
    from kdcompile.lm import char_lm, sample_continuations
    from kdcompile.load import load_model

    loaded = load_model(teacher)
    t, kw = loaded.module.eval(), loaded.meta["arch_kwargs"]
    torch.manual_seed(0)
    s = char_lm(vocab=kw["vocab"], d=16, heads=2, layers=1, context=kw["context"]).eval()
    prompts = torch.randint(0, 10, (4, 8))

    def draw(model, **kw):
        with torch.no_grad():
            return sample_continuations(model, prompts, 12, torch.Generator().manual_seed(3), **kw)

    assert torch.equal(draw(s, teacher=t, teacher_mix=0.0), draw(s))
    assert torch.equal(draw(s, teacher=t, teacher_mix=1.0), draw(t))
    assert not torch.equal(draw(s, teacher=t, teacher_mix=0.5), draw(s))
    with pytest.raises(KdError, match="--teacher-mix is a share"):
        distill_lm(teacher, tmp_path / "s.pt", LMDistillConfig(teacher_mix=1.5, steps=2, batch_size=4))
