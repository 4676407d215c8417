"""Latency on the target hardware: one timing protocol (timing.py), the backends it times (backends.py), the
benchmark stage that writes a run's report (stage.py) and the report's rendering (report.py)."""
