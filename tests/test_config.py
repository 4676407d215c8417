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


def test_population_reaches_tune_and_a_tiny_one_is_refused(monkeypatch):
    from typer.testing import CliRunner

    from kdcompile import cli, tune
    from kdcompile.tune import check_config

    with pytest.raises(KdError, match="--population must be at least 8"):
        check_config(TuneConfig(population=4))
    seen = {}
    monkeypatch.setattr(tune, "tune", lambda run_dir, cfg, **_: seen.update(cfg=cfg))
    r = CliRunner().invoke(cli.app, ["tune", "runs/x", "--population", "256"])
    assert r.exit_code == 0, r.output
    assert seen["cfg"].population == 256
    assert CliRunner().invoke(cli.app, ["tune", "runs/x"]).exit_code == 0
    assert seen["cfg"].population is None  # TVM's default
    r = CliRunner().invoke(cli.app, ["distill-and-tune", "t.pt", "--population", "4"])
    assert r.exit_code == 2 and "--population" in r.output  # a usage error, before distill would start
