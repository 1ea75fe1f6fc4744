"""Subprocesses and real programs: Prometheus, Alertmanager, Chromium, the soak."""
