"""Distillation under torchrun (kdcompile/parallel.py): two processes on gloo end with the weights one process gets
with the same global batch, rank 0 alone checkpoints, every rank resumes from it, and `kdcompile distill` runs
under torchrun. Each run starts real processes (seconds each)."""

import json
import subprocess
import sys
import textwrap

import torch

from kdcompile.load import save_checkpoint
from kdcompile.models import mnist_cnn

SCRIPT = textwrap.dedent('''
    import json, sys, torch
    import torch.nn.functional as F
    from kdcompile import parallel
    from kdcompile.train import fit

    torch.set_num_threads(1)
    torch.manual_seed(0)
    x, y = torch.randn(33, 12), torch.randint(0, 3, (33,))  # batches of 16, 16 and 1: one rank idles at the end
    model = torch.nn.Sequential(torch.nn.Linear(12, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    ran = fit(model, x, y, lambda z, _x, yb: F.cross_entropy(z, yb), epochs=3, batch_size=16, lr=1e-2, seed=0,
              description="fit", checkpoint=sys.argv[1] + "/state.pt", resume=None)
    rank, size = parallel.world()
    json.dump({"ran": ran, "size": size}, open(f"{sys.argv[1]}/ran{rank}.json", "w"))
    if rank == 0:
        torch.save(model.state_dict(), sys.argv[1] + "/weights.pt")
''')


def _torchrun(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           *args], capture_output=True, text=True, timeout=300, cwd=cwd,
                          env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})


def test_two_processes_train_to_the_weights_of_one_with_the_same_global_batch_and_resume(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    single, double = tmp_path / "single", tmp_path / "double"
    single.mkdir(), double.mkdir()
    one = subprocess.run([sys.executable, str(script), str(single)], capture_output=True, text=True, timeout=120)
    assert one.returncode == 0, one.stderr[-2000:]
    two = _torchrun(str(script), str(double))
    assert two.returncode == 0, two.stderr[-3000:]
    assert [json.loads((double / f"ran{r}.json").read_text()) for r in (0, 1)] == [{"ran": 3, "size": 2}] * 2
    a, b = torch.load(single / "weights.pt"), torch.load(double / "weights.pt")
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a), max(float((a[k] - b[k]).abs().max()) for k in a)
    again = _torchrun(str(script), str(double))  # the checkpoint says training is done: every rank resumes at the end
    assert again.returncode == 0, again.stderr[-3000:]
    assert [json.loads((double / f"ran{r}.json").read_text())["ran"] for r in (0, 1)] == [0, 0]
    assert torch.equal(torch.load(double / "weights.pt")["0.weight"], b["0.weight"])


def test_kdcompile_distill_runs_under_torchrun_and_rank_zero_writes_the_student(tmp_path):
    torch.manual_seed(0)
    teacher = tmp_path / "teacher.pt"
    save_checkpoint(mnist_cnn(width=4).eval(), teacher, "kdcompile.models:mnist_cnn", {"width": 4}, (1, 1, 8, 8))
    run = tmp_path / "run"
    done = _torchrun("-m", "kdcompile", "distill", str(teacher), "--data", "digits", "--epochs", "1",
                     "--min-kept", "0", "--out", str(run), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    distilled = json.loads((run / "distill.json").read_text())
    assert distilled["student"]["flops"] < distilled["teacher"]["flops"] and (run / "student.pt2").exists()
    assert (run / "distill_state.pt").exists()


LM_SCRIPT = textwrap.dedent('''
    import sys, torch
    from kdcompile.distill_lm import LMConfig, train_char_lm_teacher

    torch.set_num_threads(1)
    out = sys.argv[1] + "/lm.pt"
    train_char_lm_teacher(out, LMConfig(d=16, heads=2, layers=1, context=16, steps=6, batch_size=6,
                                        text=sys.argv[2]))
''')


def test_the_char_lm_loop_trains_to_the_same_weights_under_torchrun(tmp_path):
    from kdcompile.load import load_model

    text = tmp_path / "book.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 100)
    script = tmp_path / "lm.py"
    script.write_text(LM_SCRIPT)
    single, double = tmp_path / "single", tmp_path / "double"
    single.mkdir(), double.mkdir()
    one = subprocess.run([sys.executable, str(script), str(single), str(text)], capture_output=True, text=True,
                         timeout=120)
    assert one.returncode == 0, one.stderr[-2000:]
    two = _torchrun(str(script), str(double), str(text))
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = (load_model(d / "lm.pt").module.state_dict() for d in (single, double))
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
