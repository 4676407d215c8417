"""report.png: the run's report as a picture, embedded in report.md.

Three panels: latency per model and backend (bar at the median, whisker to p99, the p90 marked); each tuned
model's latency against trials, as MetaSchedule estimates it (the sum over tasks of the best time measured so
far), with onnxruntime's measured latency as a line; accuracy and size of teacher and student (not drawn for a
run made for an ONNX file, which has neither).
"""

from __future__ import annotations

from pathlib import Path

from kdcompile.files import atomic_path

COLORS = {"torch": "#7f7f7f", "onnxruntime": "#1f77b4", "tvm": "#d62728"}


def render_png(r: dict, curves: dict[str, list[float | None]], path: Path) -> Path:
    """Draw the report `r` (report.json's content) and the tuning curves (model -> ms after each trial)."""
    import matplotlib

    matplotlib.use("Agg")  # no screen needed
    import matplotlib.pyplot as plt

    distilled = "student" in r
    ratios = [1.2, 1.3, 1] if distilled else [1.2, 1.3]
    fig, axes = plt.subplots(1, len(ratios), figsize=(15 if distilled else 10.5, 4.6),
                             gridspec_kw={"width_ratios": ratios})
    _latency(axes[0], r)
    _tuning(axes[1], r, curves)
    if distilled:
        _size(axes[2], r)
    batch = "batch 1" if distilled else "input " + ",".join(str(d) for d in r["source"]["input_shape"])
    fig.suptitle(f"kdcompile report: {r['machine']['cpu']}, {r['machine']['threads']} threads, {batch}",
                 fontsize=11)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return path


def _latency(ax, r: dict) -> None:
    x, positions, labels = 0.0, [], []
    for model, backends in r["latency_ms"].items():
        for backend, v in backends.items():
            ax.bar(x, v["p50"], color=COLORS.get(backend, "#2ca02c"), width=0.7)
            ax.errorbar(x, v["p50"], yerr=[[0], [v["p99"] - v["p50"]]], color="black", capsize=4, lw=1)
            ax.plot(x, v["p90"], marker="_", color="black", ms=10)
            ax.annotate(f"{v['p50']:.3f}", (x, v["p50"]), textcoords="offset points", xytext=(0, 3), ha="right",
                        fontsize=8)
            positions.append(x)
            labels.append(f"{model}\n{backend}")
            x += 1
        x += 0.5  # a gap between models
    ax.set_xticks(positions, labels, fontsize=8)
    ax.set_ylabel("milliseconds (bar p50, tick p90, whisker p99)")
    ax.set_title("latency per model and backend")


def _tuning(ax, r: dict, curves: dict[str, list[float | None]]) -> None:
    drawn = False
    for model, curve in curves.items():
        points = [(i + 1, v) for i, v in enumerate(curve) if v is not None]
        if not points:
            continue
        best, xs, ys = float("inf"), [], []
        for trial, v in points:
            best = min(best, v)
            xs.append(trial)
            ys.append(best)
        line, = ax.step(xs, ys, where="post", label=f"{model}: TVM, estimated from per-task bests")
        ort = r["latency_ms"].get(model, {}).get("onnxruntime")
        if ort:
            ax.axhline(ort["p50"], ls="--", color=line.get_color(), lw=1, label=f"{model}: onnxruntime p50")
        tvm = r["latency_ms"].get(model, {}).get("tvm")
        if tvm:
            ax.plot(xs[-1], tvm["p50"], marker="o", color=line.get_color(), label=f"{model}: tuned build p50")
        drawn = True
    if not drawn:
        why = "no model was tuned" if not curves else \
            "some tasks got no measured trial,\nso no estimate of the whole model"
        ax.text(0.5, 0.5, f"no tuning curve:\n{why}", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("trials")
    ax.set_ylabel("milliseconds")
    ax.set_title("best latency against trials")
    if drawn:
        ax.legend(fontsize=7)


def _size(ax, r: dict) -> None:
    t, s = r["teacher"], r["student"]
    names = ["accuracy", "agreement\nwith teacher", "parameters\n/ teacher's", "FLOPs\n/ teacher's"]
    teacher = [t.get("accuracy") or 0, 1.0, 1.0, 1.0]
    student = [s.get("accuracy") or 0, s["agreement"], (s["parameters"] / t["parameters"]) if t.get("parameters")
               else 0, (s["flops"] / t["flops"]) if t.get("flops") else 0]
    xs = range(len(names))
    ax.bar([x - 0.18 for x in xs], teacher, width=0.36, label="teacher", color="#9467bd")
    ax.bar([x + 0.18 for x in xs], student, width=0.36, label="student", color="#ff7f0e")
    for x, v in zip(xs, student):
        ax.annotate(f"{v:.3f}", (x + 0.18, v), textcoords="offset points", xytext=(0, 3), ha="center", fontsize=8)
    ax.set_xticks(list(xs), names, fontsize=8)
    ax.set_ylim(0, 1.15)
    ax.set_title("what the student kept, and its size")
    ax.legend(fontsize=8)
