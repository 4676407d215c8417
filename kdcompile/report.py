"""Rendering a run's report: markdown for the run folder, a rich table for the terminal.

A distilled run's report is about the student, and leads with what it kept of the teacher; a run made for an
ONNX file has one model (rundir.MODEL) and no accuracy figures."""

from __future__ import annotations

from rich.table import Table

from kdcompile.progress import console
from kdcompile.rundir import MODEL


def _fmt(v, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


def _kept_lines(r: dict) -> list[str]:
    """The report's first words: what the student kept of the teacher, and how it was trained on the data."""
    kept = r.get("kept")
    if not kept:
        return []
    s, t = r["student"], r["teacher"]
    if kept["metric"] == "cosine":
        what = (f"the mean cosine of its sentence embeddings to the teacher's on held-out sentences; the nearest "
                f"held-out neighbour of a sentence is the teacher's for {s['nn_agreement']:.1%} of them")
    elif s.get("nll") is not None:
        what = (f"it predicts the teacher's most likely next token at {s['agreement']:.1%} of held-out positions; "
                f"held-out NLL {s['nll']:.3f} nats/token, KL to the teacher {s['kl_to_teacher']:.3f}")
    elif kept["metric"] == "accuracy":
        what = f"{s['accuracy']:.4f} against the teacher's {t['accuracy']:.4f}"
    else:
        what = f"it predicts the teacher's class on {s['agreement']:.1%} of held-out inputs"
    verdict = "" if kept["share"] >= kept["threshold"] else \
        f" **Below the {kept['threshold']:.0%} threshold: accepted with --min-kept.**"
    shift = (r.get("augmentation") or {}).get("pixels") or 0
    return [f"**The student keeps {kept['share']:.1%} of the teacher's {kept['metric']}** ({what}; agreement "
            f"{s['agreement']:.4f}).{verdict} Augmentation: "
            + (f"random shifts of up to {shift:g} pixels." if shift else "none."), ""]


def main_model(r: dict) -> str:
    """The model a report is about: a distilled run's student, or the one model of an ONNX file's run."""
    return "student" if "student" in r else MODEL


def _machine(r: dict) -> str:
    return (f"Machine: {r['machine']['cpu']}, {r['machine']['threads']} threads "
            f"(1-min load average {r['machine']['load_avg_1min_before']:.2f} before timing).")


def _distilled_lines(r: dict) -> list[str]:
    t, s = r["teacher"], r["student"]
    flops_x = t["flops"] / s["flops"] if t["flops"] and s["flops"] else None
    return [*_kept_lines(r), f"{_machine(r)} Dataset: {r['dataset']}.", "",
            "| model | accuracy | agreement with teacher | parameters | FLOPs |", "|---|---|---|---|---|",
            f"| teacher | {_fmt(t['accuracy'], '.4f')} | 1 | {t['parameters'] or 'n/a'} | {t['flops'] or 'n/a'} |",
            f"| student | {_fmt(s['accuracy'], '.4f')} | {s['agreement']:.4f} | {s['parameters']} | {s['flops']}"
            + (f" ({flops_x:.1f}x fewer) |" if flops_x else " |"), "",
            "Latency, batch 1, milliseconds:", ""]


def _source_lines(r: dict) -> list[str]:
    src = r["source"]
    shape = ",".join(str(d) for d in src["input_shape"])
    return [f"Model: `{src['path']}` (input '{src['input_name']}', shape {shape}), compiled and tuned as it is: "
            f"nothing was distilled. {_machine(r)}", "", f"Latency, input shape {shape}, milliseconds:", ""]


def render_markdown(r: dict) -> str:
    main = main_model(r)
    tokens = r.get("sequence_length")  # a Hugging Face run: one sequence of this many tokens per call
    lines = ["# kdcompile report", "", *(_distilled_lines(r) if main == "student" else _source_lines(r))]
    if tokens:
        lines[-2] = f"Latency, batch 1, one sequence of {tokens} tokens, milliseconds (and microseconds per token):"
    lines += ["| model | backend | p50 | p90 | p99 |" + (" p50 per token (µs) |" if tokens else ""),
              "|---|---|---|---|---|" + ("---|" if tokens else "")]
    for m, backends in r["latency_ms"].items():
        for b, v in backends.items():
            lines.append(f"| {m} | {b} | {v['p50']:.4f} | {v['p90']:.4f} | {v['p99']:.4f} |"
                         + (f" {v['p50'] * 1e3 / tokens:.2f} |" if tokens else ""))
    p, tvm = r["parity"], f"TVM vs onnxruntime {_fmt(r['parity']['tvm_max_abs'], '.2e')}"
    parity = f"ONNX vs PyTorch {_fmt(p['onnx_max_abs'], '.2e')}, {tvm} (student)" if main == "student" else \
        f"{tvm}, on seeded random inputs"  # no PyTorch model to compare the ONNX file with
    lines += ["", f"Parity (max abs error): {parity}.", ""]
    lines.append(f"Fastest backend for the {main}: **{r['fastest_backend'][main]}**.")
    if "tvm_vs_best_other" in r:
        v = r["tvm_vs_best_other"]
        verdict = "faster than" if v["ratio_p50"] < 1 else "slower than"
        lines.append(f"The tuned TVM build is {verdict} {v['backend']} "
                     f"(p50 ratio {v['ratio_p50']:.2f}); ship {r['fastest_backend'][main]} for the lowest latency.")
    for m in r["latency_ms"]:
        if m in r["tuning"]:
            tu = r["tuning"][m]
            chosen = tu.get("layout_ms")  # --layout auto: the zero-trial builds it compared
            why = f" (auto, zero-trial builds: {', '.join(f'{k} {v:.3f} ms' for k, v in chosen.items())})" \
                if chosen else ""
            lines.append(f"- {m}: {tu['tasks']} tasks, {tu['trials']} trials, {tu['tuning_s']:.0f} s of tuning "
                         f"({r['tuning'].get('cost_model', '?')} cost model), layout {tu.get('layout') or 'nchw'}"
                         f"{why}" + (f"; {tu['known_defaults']} tasks started from the dataset's fastest measured "
                                     "program of the same workload (--known)" if tu.get("known_defaults") else "")
                         + ".")
    return "\n".join(lines) + "\n"


def print_table(r: dict) -> None:
    shape = "batch 1" if "student" in r else "input " + ",".join(str(d) for d in r["source"]["input_shape"])
    table = Table(title=f"latency (ms, {shape})")
    for col in ("model", "backend", "p50", "p90", "p99"):
        table.add_column(col, justify="left" if col in ("model", "backend") else "right")
    for m, backends in r["latency_ms"].items():
        for b, v in backends.items():
            table.add_row(m, b, f"{v['p50']:.4f}", f"{v['p90']:.4f}", f"{v['p99']:.4f}")
    console.print(table)
    if main_model(r) != "student":
        console.print(f"fastest backend: {r['fastest_backend'][main_model(r)]}")
        return
    t, s = r["teacher"], r["student"]
    if s.get("cosine") is not None or s.get("nll") is not None:
        shown = f"embedding cosine to the teacher {s['cosine']:.4f}" if s.get("cosine") is not None else \
            f"held-out NLL {s['nll']:.3f}, next-token agreement {s['agreement']:.4f}"
        console.print(f"{shown}; fastest student backend: {r['fastest_backend']['student']}")
        return
    console.print(f"accuracy: teacher {_fmt(t['accuracy'], '.4f')}, student {_fmt(s['accuracy'], '.4f')}, "
                  f"agreement {s['agreement']:.4f}; fastest student backend: {r['fastest_backend']['student']}")
