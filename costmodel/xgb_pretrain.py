"""TVM's XGBoost cost model trained on the dataset before tuning starts.

Two users: the fair baseline for a pretrained cost model (cost-model issue), and the picker of default schedules
for tasks that get no measured trial (`kdcompile tune`, zero trials included). Trained on the training networks
only, so the held-out networks stay unseen. The model file (TVM's format: booster plus the feature data it
retrains on) is built on first use and cached next to the dataset, keyed by the size of the task files it read:
at 40,080 programs it featurises 19,402 training programs first (minutes on 2 cores; seen, not benchmarked). So the picker ships ready-made, booster only (`ship_picker`,
costmodel/weights/xgb_cpu.tar, 0.7 MB), and only the tuning baseline, which retrains on the data with every batch,
builds the full file (4.6 MB).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from costmodel.dataset import ProgramDataset
from costmodel.features import featurize_task
from costmodel.splits import split_by_network, tasks_of
from kdcompile.errors import KdError
from kdcompile.files import atomic_path, write_text
from kdcompile.progress import progress

DEFAULT_DATA = Path(__file__).resolve().parent.parent / "datasets" / "cpu-znver4-2c"


def feature_groups(ds: ProgramDataset, task_hashes: list[str]) -> dict[str, tuple[list[np.ndarray], np.ndarray]]:
    """Per task: each successfully measured program's PerStoreFeature rows and its mean seconds."""
    groups = {}
    with progress() as bar:
        job = bar.add_task("featurise", total=len(task_hashes), info="")
        for h in task_hashes:
            bar.update(job, advance=1)
            if not ds.task(h).exists():
                continue
            f = featurize_task(ds, h, with_store_features=True)
            ok = [i for i in np.flatnonzero(np.isfinite(f["latency_s"]))
                  if f["psf_offsets"][i + 1] > f["psf_offsets"][i]]
            if len(ok) >= 2:
                off = f["psf_offsets"]
                groups[h] = ([f["psf"][off[i]:off[i + 1]] for i in ok], f["latency_s"][ok])
    return groups


def pretrained_xgb_path(data: str | Path = DEFAULT_DATA, split: str = "train") -> Path:
    """The cached model trained on `split` ("train" or "all") of the dataset; (re)built when the data grew."""
    ds = ProgramDataset(data)
    if not (ds.root / "networks.json").exists():
        raise KdError(f"No tensor-program dataset at {ds.root} (run `kdcompile costmodel collect`).")
    splits = split_by_network(ds)
    hashes = tasks_of(splits["train"]) if split == "train" else ds.task_hashes()
    size = sum(ds.task(h).path.stat().st_size for h in hashes if ds.task(h).exists())  # grows with every record
    out = ds.root / "models" / f"xgb_{split}.tar"
    stamp = out.with_suffix(".json")
    if out.exists() and stamp.exists() and json.loads(stamp.read_text()).get("bytes") == size:
        return out
    from kdcompile.tvm_layer.cost_models import pretrained_xgb

    groups = feature_groups(ds, hashes)
    if not groups:
        raise KdError(f"The dataset at {ds.root} has no measured programs in its {split} split yet.")
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        pretrained_xgb(groups).save(str(tmp))
    write_text(stamp, json.dumps({"bytes": size, "tasks": len(groups), "programs": sum(len(c) for _, c in groups.values()),
                                 "split": split}))
    return out


def ship_picker(data: str | Path = DEFAULT_DATA, out: str | Path | None = None) -> Path:
    """Write the default-schedule picker: the booster trained on the training split, without the feature data
    (a picker only predicts, so it needs neither the data nor its featurisation). Records what it was trained on."""
    from kdcompile.tvm_layer.cost_models import load_xgb

    full = pretrained_xgb_path(data)
    out = Path(out) if out else Path(__file__).resolve().parent / "weights" / "xgb_cpu.tar"
    model = load_xgb(full)
    model.data.clear()
    model.data_size = model.last_train_size = 0
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        model.save(str(tmp))
    trained_on = json.loads(full.with_suffix(".json").read_text())
    write_text(out.with_suffix(".json"), json.dumps({k: trained_on[k] for k in ("tasks", "programs", "split")}
                                                   | {"dataset": Path(data).name}, indent=1) + "\n")
    return out
