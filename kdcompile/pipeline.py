"""distill-and-tune: the four stages in a row, meeting at files in one run folder."""

from __future__ import annotations

import time
from pathlib import Path

from kdcompile import parallel
from kdcompile.distill import DistillConfig, TeacherSpec, distill
from kdcompile.export import ExportConfig, export
from kdcompile.progress import console
from kdcompile.tune import TuneConfig, tune


def distill_and_tune(spec: TeacherSpec, run_dir: Path, distill_cfg: DistillConfig = DistillConfig(),
                     export_cfg: ExportConfig = ExportConfig(), tune_cfg: TuneConfig = TuneConfig(),
                     bench_cfg=None, force: bool = False) -> dict:
    """Distil, export, tune and benchmark; returns the report. Each stage's files stay in `run_dir`."""
    from kdcompile.bench import BenchConfig, bench

    report: dict = {}
    for i, (stage, run) in enumerate([
        ("distill", lambda: distill(spec, run_dir, distill_cfg, force)),
        ("export", lambda: export(run_dir, export_cfg)),
        ("tune", lambda: tune(run_dir, tune_cfg)),
        ("bench", lambda: report.update(bench(run_dir, bench_cfg or BenchConfig()))),
    ], start=1):
        console.rule(f"[bold]{i}/4 {stage}")
        start = time.perf_counter()
        run()
        console.print(f"{stage}: {time.perf_counter() - start:.0f} s")  # where a long run's time went
        if not parallel.is_main():  # torchrun: the other ranks only help distil
            return {}
    console.print(f"run folder: {run_dir} (report.md, report.json)")
    return report
