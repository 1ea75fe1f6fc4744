"""Prometheus exporter for Huawei Cloud CCE jobs."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("cce-job-exporter")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
