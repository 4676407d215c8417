"""The command line as a user meets it: choices checked before any work, one sentence per bad value, Ctrl-C."""

import os
import signal
import subprocess
import sys
import time

import pytest


def _cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "kdcompile.cli", *args], capture_output=True, text=True,
                          env=dict(os.environ, KDCOMPILE_QUIET="1"), **kw)


@pytest.mark.parametrize("args, named", [
    (["tune", "no-such-run", "--cost-model", "xgboost"], "xgb-pretrained"),
    (["tune", "no-such-run", "--defaults", "best"], "mamba"),
    (["tune", "no-such-run", "--layout", "NCHW16c"], "nhwc"),
    (["tune", "no-such-run", "--models", "student,techer"], "teacher"),
    (["distill", "no-such-file.pt", "--loss", "kl"], "hinton"),
    (["distill", "no-such-file.pt", "--student", "widht:0.5"], "width:R"),
    (["distill-lm", "no-such-file.pt", "--method", "ppo"], "tip"),
])
def test_a_bad_choice_is_refused_while_parsing(args, named):
    r = _cli(*args)
    # the choice is named, not the missing file: nothing ran before the check
    assert r.returncode == 1 and named in r.stderr and "no-such" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_help_lists_the_choices():
    out = _cli("tune", "--help").stdout
    assert all(name in out for name in ("xgb-pretrained", "mamba", "random", "nhwc"))


def test_ctrl_c_prints_the_resume_hint_and_exits_130(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "kdcompile.cli", "example", "mnist-cnn", "-o",
                             str(tmp_path / "t.pt")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, KDCOMPILE_QUIET="1"),
                            # a test run started in the background inherits SIGINT ignored; a user's shell does not
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    # into the training: wait for its first epoch line (a fixed sleep can end inside the imports on a loaded
    # machine, where a Ctrl-C is Python's own KeyboardInterrupt, before kdcompile handles anything)
    seen = []
    deadline = time.time() + 300
    for line in proc.stderr:
        seen.append(line)
        if "epoch" in line or time.time() > deadline:
            break
    proc.send_signal(signal.SIGINT)
    _, rest = proc.communicate(timeout=60)
    err = "".join(seen) + rest
    assert proc.returncode == 130, err[-500:]  # typer used to turn it into "Aborted!" and exit 1
    assert "rerun" in err and "Traceback" not in err


def test_debug_shows_what_caused_an_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("distill: [unclosed\n")
    plain = _cli("distill", "x.pt", "--config", str(bad))
    assert plain.returncode == 1 and "not valid YAML" in plain.stderr and "Traceback" not in plain.stderr
    debug = _cli("--debug", "distill", "x.pt", "--config", str(bad))
    assert "yaml" in debug.stderr.lower() and "Traceback" in debug.stderr
    assert "ScannerError" in debug.stderr or "ParserError" in debug.stderr  # the cause, once hidden by `from None`
