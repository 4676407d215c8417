"""Rendering a run's report: markdown for the run folder, a rich table for the terminal."""

from __future__ import annotations

from rich.table import Table

from kdcompile.progress import console


def _fmt(v, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


def _kept_lines(r: dict) -> list[str]:
    """The report's first words: what the student kept of the teacher, and how it was trained on the data."""
    kept = r.get("kept")
    if not kept:
        return []
    s, t = r["student"], r["teacher"]
    what = (f"{s['accuracy']:.4f} against the teacher's {t['accuracy']:.4f}" if kept["metric"] == "accuracy"
            else f"it predicts the teacher's class on {s['agreement']:.1%} of held-out inputs")
    verdict = "" if kept["share"] >= kept["threshold"] else \
        f" **Below the {kept['threshold']:.0%} threshold: accepted with --min-kept.**"
    shift = (r.get("augmentation") or {}).get("pixels") or 0
    return [f"**The student keeps {kept['share']:.1%} of the teacher's {kept['metric']}** ({what}; agreement "
            f"{s['agreement']:.4f}).{verdict} Augmentation: "
            + (f"random shifts of up to {shift:g} pixels." if shift else "none."), ""]


def render_markdown(r: dict) -> str:
    t, s = r["teacher"], r["student"]
    flops_x = t["flops"] / s["flops"] if t["flops"] and s["flops"] else None
    lines = ["# kdcompile report", "", *_kept_lines(r)] + [
        f"Machine: {r['machine']['cpu']}, {r['machine']['threads']} threads "
        f"(1-min load average {r['machine']['load_avg_1min_before']:.2f} before timing). Dataset: {r['dataset']}.", "",
        "| model | accuracy | agreement with teacher | parameters | FLOPs |", "|---|---|---|---|---|",
        f"| teacher | {_fmt(t['accuracy'], '.4f')} | 1 | {t['parameters'] or 'n/a'} | {t['flops'] or 'n/a'} |",
        f"| student | {_fmt(s['accuracy'], '.4f')} | {s['agreement']:.4f} | {s['parameters']} | {s['flops']}"
        + (f" ({flops_x:.1f}x fewer) |" if flops_x else " |"), "",
        "Latency, batch 1, milliseconds:", "",
        "| model | backend | p50 | p90 | p99 |", "|---|---|---|---|---|",
    ]
    for m, backends in r["latency_ms"].items():
        for b, v in backends.items():
            lines.append(f"| {m} | {b} | {v['p50']:.4f} | {v['p90']:.4f} | {v['p99']:.4f} |")
    p = r["parity"]
    lines += ["", f"Parity (max abs error): ONNX vs PyTorch {_fmt(p['onnx_max_abs'], '.2e')}, "
                  f"TVM vs onnxruntime {_fmt(p['tvm_max_abs'], '.2e')} (student).", ""]
    lines.append(f"Fastest backend for the student: **{r['fastest_backend']['student']}**.")
    if "tvm_vs_best_other" in r:
        v = r["tvm_vs_best_other"]
        verdict = "faster than" if v["ratio_p50"] < 1 else "slower than"
        lines.append(f"The tuned TVM build is {verdict} {v['backend']} "
                     f"(p50 ratio {v['ratio_p50']:.2f}); ship {r['fastest_backend']['student']} for the lowest latency.")
    for m in ("teacher", "student"):
        if m in r["tuning"]:
            tu = r["tuning"][m]
            chosen = tu.get("layout_ms")  # --layout auto: the zero-trial builds it compared
            why = f" (auto, zero-trial builds: {', '.join(f'{k} {v:.3f} ms' for k, v in chosen.items())})" \
                if chosen else ""
            lines.append(f"- {m}: {tu['tasks']} tasks, {tu['trials']} trials, {tu['tuning_s']:.0f} s of tuning "
                         f"({r['tuning'].get('cost_model', '?')} cost model), layout {tu.get('layout') or 'nchw'}"
                         f"{why}.")
    return "\n".join(lines) + "\n"


def print_table(r: dict) -> None:
    table = Table(title="latency (ms, batch 1)")
    for col in ("model", "backend", "p50", "p90", "p99"):
        table.add_column(col, justify="left" if col in ("model", "backend") else "right")
    for m, backends in r["latency_ms"].items():
        for b, v in backends.items():
            table.add_row(m, b, f"{v['p50']:.4f}", f"{v['p90']:.4f}", f"{v['p99']:.4f}")
    console.print(table)
    t, s = r["teacher"], r["student"]
    console.print(f"accuracy: teacher {_fmt(t['accuracy'], '.4f')}, student {_fmt(s['accuracy'], '.4f')}, "
                  f"agreement {s['agreement']:.4f}; fastest student backend: {r['fastest_backend']['student']}")
