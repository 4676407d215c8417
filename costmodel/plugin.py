"""costmodel's entries in kdcompile's plug-in slots (kdcompile.plugins), registered in pyproject.toml.

Cost models for the tuner: "xgb-pretrained" (TVM's XGBoost first trained on the dataset's training split, the fair
baseline), "mamba" (the Mamba ranker, d=64 x 2 layers, pretrained on the dataset, fine-tuned online on the run's
measurements) and "mamba-small" (d=32 x 1 layer, distilled from it). Pickers of default schedules: "xgb" (the
shipped XGBoost picker) and "mamba" (the shipped ranker). Both learned pickers know this CPU only. Known programs:
"dataset" (the shipped dataset's measured programs of the very task being tuned, where it has them).
"""

from __future__ import annotations

from pathlib import Path

from kdcompile.progress import console

WEIGHTS = Path(__file__).resolve().parent / "weights"


def _ranker(file: str) -> object:
    from costmodel.online import MambaScorer
    from kdcompile.tvm_layer.cost_models import TraceRankerCostModel

    weights = WEIGHTS / file
    if not weights.exists():
        console.print(f"[yellow]No pretrained weights at {weights}: the Mamba cost model starts untrained.[/]")
        return TraceRankerCostModel(MambaScorer())
    return TraceRankerCostModel(MambaScorer.load(weights))


def mamba() -> object:
    return _ranker("mamba_cpu.pt")


def mamba_small() -> object:
    return _ranker("mamba_cpu_small.pt")


def xgb_pretrained() -> object:
    """TVM's XGBoost holding the dataset's training split: every update retrains on it plus the run's new
    measurements. The full model file is built from the dataset on first use (slow: it featurises every program)."""
    from costmodel.xgb_pretrain import DEFAULT_DATA, pretrained_xgb_path
    from kdcompile.tvm_layer.cost_models import load_xgb

    return load_xgb(pretrained_xgb_path(DEFAULT_DATA))


def xgb_picker() -> object:
    """TVM's XGBoost trained on the shipped dataset's training networks (weights/xgb_cpu.tar, written by
    `kdcompile costmodel xgb-picker`; without it, built from the dataset on first use, then cached; without
    either, an untrained model, which picks random programs)."""
    from costmodel.xgb_pretrain import DEFAULT_DATA, pretrained_xgb_path
    from kdcompile.tvm_layer.cost_models import load_xgb, untrained_xgb

    if (WEIGHTS / "xgb_cpu.tar").exists():
        return load_xgb(WEIGHTS / "xgb_cpu.tar")
    if (DEFAULT_DATA / "networks.json").exists():
        return load_xgb(pretrained_xgb_path(DEFAULT_DATA))
    console.print(f"[yellow]No picker in {WEIGHTS} and no dataset at {DEFAULT_DATA}: default schedules are random "
                  "programs.[/]")
    return untrained_xgb()


def mamba_picker() -> object:
    if not (WEIGHTS / "mamba_cpu.pt").exists():
        from kdcompile.tvm_layer.cost_models import untrained_xgb

        console.print(f"[yellow]No Mamba weights in {WEIGHTS}: default schedules are random programs.[/]")
        return untrained_xgb()
    return mamba()


def known() -> object:
    """The shipped dataset's lookup of measured programs by task hash, fastest first (`ProgramDataset.fastest`):
    a task the dataset holds starts from its fastest measured program instead of a predicted one. They were timed
    on the dataset's machine (datasets/README.md); the tuner times its default again here, as a trial, so another
    CPU ranks it by its own measurement. None when the checkout has no dataset."""
    from costmodel.dataset import ProgramDataset
    from costmodel.xgb_pretrain import DEFAULT_DATA

    return ProgramDataset(DEFAULT_DATA).fastest if (DEFAULT_DATA / "networks.json").exists() else None
