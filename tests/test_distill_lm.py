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
