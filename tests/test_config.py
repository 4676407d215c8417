import pytest

from kdcompile.config import build, load_yaml
from kdcompile.distill import DistillConfig
from kdcompile.errors import KdError
from kdcompile.tune import TuneConfig


def test_yaml_fills_configs_and_the_command_line_wins(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("distill: {loss: dkd, epochs: 3}\ntune: {trials: 50, models: [student]}\n")
    cfg = load_yaml(path)
    d = build(DistillConfig, cfg["distill"], {"epochs": 5, "alpha": 0.9}, explicit={"epochs"})
    assert (d.loss, d.epochs, d.alpha) == ("dkd", 5, 0.9)
    t = build(TuneConfig, cfg["tune"], {"trials": 200}, explicit=set())
    assert t.trials == 50 and t.models == ("student",)


@pytest.mark.parametrize("text,match", [
    ("distill: {lossy: 1}", "Unknown option"),
    ("distil: {loss: dkd}", "unknown section"),
    ("distill: [1, 2]", "must map sections"),
    ("distill: {loss: [", "not valid YAML"),
])
def test_bad_config_files_say_what_is_wrong(tmp_path, text, match):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(KdError, match=match):
        build(DistillConfig, load_yaml(path).get("distill", {}), {}, set())


def test_cli_passes_the_config_file_through(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "run.yaml"
    path.write_text("distill: {lossy: 1}\n")
    r = subprocess.run([sys.executable, "-m", "kdcompile.cli", "distill", "missing.pt", "--config", str(path)],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "Unknown option(s) ['lossy']" in r.stderr
