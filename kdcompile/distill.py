"""Stage 1, distill: build a student from the teacher and train it on the teacher's outputs.

Writes run.json (how to reload the teacher), student.pt2 and distill.json to the run folder.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from torch import nn

from kdcompile import parallel
from kdcompile.data import DistillData, data_source, load_dataset
from kdcompile.errors import KdError
from kdcompile.files import atomic_path, file_sha256
from kdcompile.machine import cores
from kdcompile.load import LoadedModel, check_input_shape, import_factory, load_model
from kdcompile.objectives import make_objective
from kdcompile.progress import console
from kdcompile.rundir import RunDir
from kdcompile.student import flops_and_params, keep_blocks, prune_once, prune_width
from kdcompile.train import accuracy, agreement, fit, predict


@dataclass
class TeacherSpec:
    """Where the teacher is and how to load it; saved in run.json so that later stages reload it the same way."""

    path: str
    arch: str | None = None  # package.module:factory, for a state_dict
    trust_pickle: bool = False  # allow a fully pickled nn.Module (runs code from the file)
    input_shape: tuple[int, ...] | None = None  # one batch-1 input, e.g. (1, 1, 28, 28)

    def load(self) -> LoadedModel:
        return load_model(self.path, self.arch, self.trust_pickle)


@dataclass
class DistillConfig:
    """Student construction and KD training."""

    data: str | None = None  # built-in dataset name or .npy/.pt file; default: the one the teacher file names
    flops_ratio: float = 0.25  # the pruned student has at most this fraction of the teacher's FLOPs
    student: str | None = None  # "depth:K" (keep K repeated blocks) or package.module:factory (your own)
    loss: str = "hinton"  # a method of kdcompile.objectives: hinton, fkl, rkl, skl, srkl, gjsd, tvd, dkd, fitnets,
    #                       at, rkd, ce, scratch
    feature_layer: str | None = None  # module name for fitnets/at/rkd (default: the middle conv/linear layer)
    feature_weight: float | None = None  # weight of the feature loss (default: fitnets 100, at 1000, rkd 1)
    temperature: float = 4.0
    alpha: float = 0.9  # weight of the KD term; (1 - alpha) goes to cross-entropy on labels, when there are labels
    epochs: int = 8
    batch_size: int | None = None  # None: 64 for classifiers; Hugging Face teachers: distill_hf.HF_BATCH
    lr: float | None = None  # AdamW peak learning rate; None: 3e-3 for classifiers, distill_hf.HF_LR for HF models
    seed: int = 0
    threads: int = 0  # 0: the cores this process may use
    augment_pixels: float | None = None  # random shifts of image inputs, up to this many pixels; None: 2 on the
    #                                      built-in mnist5k (28x28), off for any other data
    min_kept: float = 0.95  # the student must keep this share of the teacher's accuracy (or agreement without
    #                         labels; for a Hugging Face encoder, the embeddings' cosine), else the stage fails after
    #                         saving it; 0 accepts any student
    seq_len: int | None = None  # Hugging Face teachers: the fixed sequence length of the exported graph (None: 128)
    on_policy: float | None = None  # Hugging Face causal LMs: share of batches whose second half the student writes


# Fields added after run folders existed: left out of the identity while unset, so older runs are still reused.
LATER_FIELDS = ("seq_len", "on_policy")
CLASSIFIER_DEFAULTS = {"batch_size": 64, "lr": 3e-3}  # what None means for a classifier (as before it could be None)


# How far augmentation may lower the teacher's own held-out accuracy before it is refused: its soft targets on
# shifted inputs would teach the student wrong answers (digits 8x8 shifted 2 px: 0.99 -> 0.68, issue #20).
MAX_AUGMENT_DROP = 0.02
AUTO_AUGMENT = {"mnist5k": 2.0}  # built-in data with a known-good shift; everything else is off unless asked


def identity_of(spec: TeacherSpec, cfg: DistillConfig) -> dict:
    """What makes two distillations the same: the teacher file and how it is loaded, the config, and the
    contents of every file the config names (data, a student model file). A changed one distils again."""
    config = {k: v for k, v in asdict(cfg).items()  # min_kept: the verdict, not the student
              if k != "min_kept" and not (k in LATER_FIELDS and v is None)}
    own_student = cfg.student if cfg.student and Path(cfg.student).is_file() else None
    return {"config": config, "teacher_sha256": file_sha256(spec.path),
            "teacher_load": {"arch": spec.arch, "input_shape": list(spec.input_shape) if spec.input_shape else None},
            "data": data_source(cfg.data) if cfg.data else None,
            "student_sha256": file_sha256(own_student) if own_student else None}


def hf_teacher_kind(spec: TeacherSpec) -> str | None:
    """"encoder" or "causal_lm" for a Hugging Face folder or GGUF file, read from its config alone (the weights
    load later); None for any other teacher."""
    from kdcompile.hf import config_kind, is_gguf, is_hf_folder

    path = Path(spec.path)
    return config_kind(path) if is_hf_folder(path) or is_gguf(path) else None


def kept_share(result: dict) -> dict:
    """What the student kept of the teacher: its accuracy over the teacher's when there are labels, else its
    agreement with the teacher."""
    s, t = result["student"], result["teacher"]
    if s.get("cosine") is not None:  # a sentence encoder: how close its embeddings are to the teacher's
        return {"metric": "cosine", "share": s["cosine"]}
    if s.get("accuracy") is not None and t.get("accuracy"):
        return {"metric": "accuracy", "share": s["accuracy"] / t["accuracy"]}
    return {"metric": "agreement", "share": s["agreement"]}


def check_kept(result: dict, min_kept: float, run_dir: Path) -> None:
    kept = kept_share(result)
    if kept["share"] < min_kept:
        raise KdError(f"The student kept only {kept['share']:.0%} of the teacher's {kept['metric']} (threshold "
                      f"{min_kept:.0%}); it is saved in {run_dir} but not worth shipping: train longer (--epochs), "
                      "choose a larger student, or pass --min-kept 0 to go on with it.")


def resolve_input_shape(teacher: LoadedModel, spec: TeacherSpec, ds: DistillData | None) -> tuple[int, ...]:
    shape = spec.input_shape or teacher.input_shape or ((1, *ds.sample_shape) if ds is not None else None)
    if shape is None:
        raise KdError("The input shape is unknown: pass --input-shape, e.g. --input-shape 1,3,224,224.")
    if shape[0] != 1:
        raise KdError(f"--input-shape describes one batch-1 input; got batch {shape[0]}.")
    return tuple(shape)


def build_student(teacher: LoadedModel, example: torch.Tensor, cfg: DistillConfig) -> nn.Module:
    """`student` is None (width pruning to `flops_ratio`), "width:R" (prune a share R of channels), "depth:K" (keep
    K repeated blocks), a saved model file, or a package.module:factory. A compiled teacher (TorchScript,
    torch.export) is pruned through kdcompile.unlift's trainable module."""
    if cfg.student and Path(cfg.student).is_file():
        own = load_model(cfg.student)
        if not own.is_eager:
            raise KdError(f"The student {cfg.student} is a compiled graph that cannot be trained; save its weights "
                          "as a state_dict or kdcompile checkpoint instead.")
        return own.module
    if cfg.student and cfg.student.startswith("mlp:"):
        raise KdError("--student mlp:N narrows the MLPs of a Hugging Face teacher; for this teacher use width:R "
                      "(a share of channels pruned), depth:K, or --student package.module:factory.")
    if cfg.student and not cfg.student.startswith(("depth:", "width:")):
        return import_factory(cfg.student)().eval()
    module = teacher.module
    if not teacher.is_eager:  # a compiled graph: its layers as torch.nn modules again, then pruned like any model
        if cfg.student and cfg.student.startswith("depth:"):
            raise KdError(f"--student depth:K drops repeated blocks of a module tree, which a "
                          f"{teacher.kind.replace('_', ' ')} teacher no longer has; use width:R (or the default "
                          "width pruning), or --student package.module:factory.")
        from kdcompile.unlift import trainable

        module = trainable(getattr(module, "graph", module) if isinstance(module, _OneAtATime) else module,
                           teacher.kind, example)
    if cfg.student and cfg.student.startswith("width:"):
        try:
            ratio = float(cfg.student.split(":", 1)[1])
        except ValueError:
            ratio = -1.0
        if not 0 < ratio < 1:
            raise KdError(f"--student width:R needs a channel pruning ratio between 0 and 1, got '{cfg.student}'.")
        return prune_once(module, example, ratio, round_to=None)
    if cfg.student:
        try:
            num_blocks = int(cfg.student.split(":", 1)[1])
        except ValueError:
            raise KdError(f"--student depth:K needs a whole number of blocks, got '{cfg.student}'.")
        return keep_blocks(module, example, num_blocks)
    return prune_width(module, example, cfg.flops_ratio)


def distill(spec: TeacherSpec, run_dir: Path, cfg: DistillConfig = DistillConfig(), force: bool = False) -> dict:
    """Build the student, distil it, and save it with its metrics. Returns distill.json's content.

    A run folder that already holds a student distilled from the same teacher with the same config is reused
    (so that rerunning distill-and-tune resumes at tuning) unless `force`. Training state is checkpointed every
    epoch; an interrupted run with the same teacher and config resumes from it (same result as uninterrupted).
    """
    run = RunDir(run_dir)
    hf_kind = hf_teacher_kind(spec)
    if hf_kind is not None:
        from kdcompile.distill_hf import resolved

        cfg = resolved(cfg, hf_kind)
    else:
        cfg = replace(cfg, **{k: v for k, v in CLASSIFIER_DEFAULTS.items() if getattr(cfg, k) is None})
    identity = identity_of(spec, cfg)
    if not force and run.student.exists() and (run.root / "distill.json").exists():
        done = run.read_json("distill.json")
        if done.get("identity") == identity:
            console.print(f"reusing the student in {run.root} (same teacher, data and config; --force to redo)")
            if done["kept"]["threshold"] != cfg.min_kept:  # the verdict is this run's, the report says which
                done["kept"]["threshold"] = cfg.min_kept
                run.write_json("distill.json", done)
            check_kept(done, cfg.min_kept, run.root)
            return done
        if "identity" not in done:
            console.print(f"{run.root} holds a student distilled by an older kdcompile: distilling again")
    state = run.root / "distill_state.pt"  # holds `identity`: only the same teacher and config resume from it
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads or parallel.threads_per_process(cores()))
    teacher = spec.load()
    if teacher.hf is not None:
        from kdcompile.distill_hf import distill_hf

        return distill_hf(spec, teacher.hf, run, cfg, identity, force)
    if teacher.kind == "exported_program":
        teacher = batched(teacher)
    data_name = cfg.data or teacher.meta.get("dataset")
    if data_name is None:
        raise KdError(f"{spec.path} names no dataset to distil on: pass --data (mnist5k, digits, a .npy/.pt tensor "
                      "of inputs, a .csv file or a folder of images).")
    ds = load_dataset(data_name)
    shape = resolve_input_shape(teacher, spec, ds)
    if tuple(shape[1:]) != ds.sample_shape:
        raise KdError(f"The dataset '{ds.name}' has inputs of shape {list(ds.sample_shape)}, "
                      f"but the model's input shape is {list(shape)}.")
    example = torch.zeros(shape)
    check_input_shape(teacher, shape)
    student = build_student(teacher, example, cfg)
    check_input_shape(LoadedModel(student, "pickle"), shape)

    t_test = predict(teacher.module, ds.x_test)
    has_labels = ds.y_train is not None
    objective = make_objective(cfg.loss, teacher.module, student, example, has_labels=has_labels,
                               temperature=cfg.temperature, alpha=cfg.alpha, feature_layer=cfg.feature_layer,
                               feature_weight=cfg.feature_weight)

    def status(epoch: int) -> str:
        s_test = predict(student, ds.x_test)
        acc = f"acc {accuracy(s_test, ds.y_test):.4f} " if has_labels else ""
        return f"{acc}agree {agreement(s_test, t_test):.4f}"

    augment = augmentation(teacher.module, ds, data_name, cfg.augment_pixels, t_test)
    try:
        fit(student, ds.x_train, ds.y_train, objective.loss_fn, epochs=cfg.epochs, batch_size=cfg.batch_size,
            lr=cfg.lr, seed=cfg.seed, description=f"distill ({cfg.loss})",
            augment_pixels=augment["pixels"], on_epoch=status, on_epoch_start=objective.start_epoch, checkpoint=state,
            resume=False if force else None, identity=identity, extra=objective.extra)
    finally:
        objective.close()
    if not parallel.is_main():  # torchrun: rank 0 evaluates and writes the student
        return {}

    s_test = predict(student, ds.x_test)
    t_flops, t_params = flops_and_params(teacher.module, example) if teacher.is_eager else \
        compiled_flops_and_params(teacher.module, example)
    s_flops, s_params = flops_and_params(student, example)
    result = {
        "dataset": ds.name,
        "teacher": {"accuracy": accuracy(t_test, ds.y_test) if has_labels else None, "flops": t_flops,
                    "parameters": t_params, "kind": teacher.kind},
        "student": {"accuracy": accuracy(s_test, ds.y_test) if has_labels else None, "flops": s_flops,
                    "parameters": s_params, "agreement": agreement(s_test, t_test),
                    "built_by": cfg.student or f"width pruning to <= {cfg.flops_ratio} of the teacher's FLOPs"},
        "config": asdict(cfg),
        "teacher_sha256": identity["teacher_sha256"],
        "identity": identity,
        "augmentation": augment,
    }
    result["kept"] = kept_share(result) | {"threshold": cfg.min_kept}
    run.root.mkdir(parents=True, exist_ok=True)
    teacher_spec = asdict(spec) | {"path": str(Path(spec.path).resolve()), "input_shape": list(shape)}
    run.write_json("run.json", {"teacher": teacher_spec, "dataset": ds.name, "data": data_source(data_name)})
    save_student(student, example, run.student)
    run.write_json("distill.json", result)
    s, t = result["student"], result["teacher"]
    console.print(f"student: {s_params / 1e6:.3f} M parameters, {s_flops / 1e6:.1f} MFLOPs"
                  + (f" ({t_flops / s_flops:.1f}x fewer)" if t_flops else "")
                  + (f", held-out accuracy {s['accuracy']:.4f} (teacher {t['accuracy']:.4f})" if has_labels else "")
                  + f", agreement {s['agreement']:.4f}")
    check_kept(result, cfg.min_kept, run.root)
    return result


def augmentation(teacher: nn.Module, ds: DistillData, data_name: str, pixels: float | None,
                 t_test: torch.Tensor) -> dict:
    """The random shift distillation applies to image inputs, and what it does to the teacher: {"pixels",
    "teacher_accuracy", "teacher_accuracy_shifted"} (agreement with its unshifted predictions, without labels).
    Off unless asked, but for built-in data with a known-good shift; refused when it costs the teacher more than
    MAX_AUGMENT_DROP of its own accuracy, since the student would learn the teacher's mistakes on shifted inputs."""
    from kdcompile.train import random_shift

    pixels = AUTO_AUGMENT.get(data_name, 0.0) if pixels is None else float(pixels)
    if pixels <= 0 or ds.x_test.ndim != 4:
        return {"pixels": 0.0}
    shifted = predict(teacher, random_shift(ds.x_test, pixels, torch.Generator().manual_seed(0)))
    if ds.y_test is not None:
        before, after = accuracy(t_test, ds.y_test), accuracy(shifted, ds.y_test)
    else:
        before, after = 1.0, agreement(shifted, t_test)
    if before - after > MAX_AUGMENT_DROP:
        side = min(ds.x_test.shape[-2:])
        raise KdError(f"Shifting the {side}-pixel inputs by up to {pixels:g} pixels lowers the teacher's own "
                      f"held-out {'accuracy' if ds.y_test is not None else 'agreement'} from {before:.2f} to "
                      f"{after:.2f}: pass a smaller --augment-pixels, or 0 for none.")
    return {"pixels": pixels, "teacher_accuracy": before, "teacher_accuracy_shifted": after}


class _OneAtATime(nn.Module):
    """A graph exported for batch 1 only, run on a batch one input at a time."""

    def __init__(self, graph: nn.Module):
        super().__init__()
        self.graph = graph

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.graph(x[i:i + 1]) for i in range(len(x))])

    def train(self, mode: bool = True) -> "_OneAtATime":
        return self  # an exported graph's mode was fixed when it was exported


def batched(teacher: LoadedModel) -> LoadedModel:
    """An ExportedProgram teacher that runs on batches: as it is when it was exported with a dynamic batch, else
    one input at a time (slower, and said)."""
    shape = teacher.input_shape or (1,)
    try:
        with torch.inference_mode():
            teacher.module(torch.zeros(2, *shape[1:]))
        return teacher
    except Exception:  # noqa: BLE001 - torch.export's shape guard: the batch is fixed at 1
        console.print("[yellow]The exported teacher takes batch 1 only (export it with a dynamic batch, "
                      "torch.export.Dim, to distil faster): running it one input at a time.[/]")
        return LoadedModel(_OneAtATime(teacher.module), teacher.kind, teacher.input_shape, teacher.meta)


def compiled_flops_and_params(module: nn.Module, example: torch.Tensor) -> tuple[int | None, int]:
    """FLOPs and parameters of a compiled graph (TorchScript, torch.export), which the pruning library cannot
    trace: parameters counted directly, FLOPs by PyTorch's FLOP counter over one forward pass (matmuls and
    convolutions, 2 per multiply-add, as for eager models)."""
    from torch.utils.flop_counter import FlopCounterMode

    params = sum(p.numel() for p in module.parameters())
    try:
        with FlopCounterMode(display=False) as counter, torch.inference_mode():
            module(example)
        return int(counter.get_total_flops()) or None, int(params)
    except Exception:  # noqa: BLE001 - a graph the counter cannot follow: say nothing rather than guess
        return None, int(params)


def save_student(student: nn.Module, example: torch.Tensor, path: Path) -> None:
    """torch.export with a dynamic batch: loads without pickle, runs at any batch, and exports to ONNX."""
    batch = torch.export.Dim("batch", min=1, max=65536)
    ep = torch.export.export(student.eval(), (example.expand(2, *example.shape[1:]).contiguous(),),
                             dynamic_shapes=({0: batch},))
    with atomic_path(path) as tmp:
        torch.export.save(ep, str(tmp))
