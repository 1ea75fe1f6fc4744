"""`python -m exporter` runs the same command as `cce-job-exporter`."""

from exporter.cli import main

raise SystemExit(main())
