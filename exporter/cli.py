"""The command line: flags, settings, and the choice of what to run."""

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from exporter import __version__
from exporter.app import install_signal_handlers, run_once, run_service
from exporter.demo.run import run_demo
from exporter.logs import setup_logging
from exporter.settings.load import ConfigError, env_name, load_settings
from exporter.settings.model import SECRET_FIELDS, Settings

EXIT_CONFIG = 2

_HELP = {
    "endpoint": "CCE base URL, e.g. https://cce.cn-north-4.myhuaweicloud.com",
    "region": "region name, e.g. cn-north-4; the endpoints are derived from it",
    "project_id": "project whose jobs are watched",
    "job_ids": "comma-separated job IDs to watch",
    "targets": "several projects, regions or accounts, a list in the --config file only",
    "poll_interval": "seconds between polls of a job that is not finished",
    "poll_concurrency": "most API requests in flight at once",
    "request_timeout": "seconds for one API request",
    "rate_limit": "most API requests per second",
    "finished_retention": "seconds a finished job keeps its series",
    "sparse_metrics": "only the current phase, sub-job counts above zero, errors that happened",
    "listen_address": "host:port of the HTTP server",
    "log_level": "debug, info, warning or error",
    "log_format": "text or json",
    "ca_bundle": "PEM file of CA certificates to trust for the CCE and IAM endpoints",
    "insecure_skip_verify": "do not verify the CCE and IAM endpoints' TLS certificates",
    "iam_endpoint": "IAM base URL for tokens; derived from the region when not set",
    "iam_domain": "account (domain) name of the IAM user",
    "iam_username": "name of the IAM user",
    "web_config_file": "exporter-toolkit web config: TLS and basic auth for the HTTP server",
    "discover": "also watch the jobs that the project's job list shows",
    "discover_interval": "seconds between two reads of the job list",
    "discover_max_age": "pick up only jobs created within this many seconds",
    "discover_job_types": "regular expression a job's type must match to be picked up",
    "discover_clusters": "comma-separated cluster names or IDs: discover only their jobs",
    "job_ids_file": "file of job IDs to watch, one a line; re-read when it changes",
    "max_jobs": "most jobs watched at once",
    "shard_count": "number of exporters sharing the jobs",
    "shard_index": "this exporter's share, 0..shard_count-1, or auto (from the host name)",
    "cluster_refresh_interval": "seconds between two reads of the cluster lists",
}


def _help(name: str) -> str:
    """Say what a setting's flag is for."""
    if name.endswith("_file") and name in SECRET_FIELDS:
        return f"file holding the secret {name.removesuffix('_file')}"
    return _HELP[name]


def _default(value: object) -> str:
    """Show the default of a setting for the help, or nothing when it has none."""
    if value is None or value == ():
        return ""
    if isinstance(value, bool):
        return f"default {str(value).lower()}; "
    return f"default {value}; "


def build_parser() -> argparse.ArgumentParser:
    """Build the parser: the commands, and a flag for every setting that is not a secret."""
    parser = argparse.ArgumentParser(
        prog="cce-job-exporter",
        # No abbreviations: `--auth-token SECRET` must not pass for `--auth-token-file`.
        allow_abbrev=False,
        description="Prometheus exporter for Huawei Cloud CCE jobs.",
        epilog=(
            "Every setting can also be set as an environment variable CCE_EXPORTER_<NAME> "
            "or in the --config file. Secrets (auth_token, ...) have no flag: pass them "
            "in the environment, the config file, or a <name>_file. targets, for "
            f"{_HELP['targets']}, has no flag or variable either (docs/configuration.md)."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--config", type=Path, metavar="PATH", help="YAML file of settings")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--demo", action="store_true", help="run against a built-in simulated CCE API"
    )
    mode.add_argument(
        "--once", action="store_true", help="poll every watched job once, print the metrics, exit"
    )
    mode.add_argument("--check-config", action="store_true", help="validate the settings and exit")
    # A list of targets is YAML's to say: the flag is there only to be refused
    # with a message that says so (load_settings), rather than as an unknown one.
    parser.add_argument("--targets", metavar="VALUE", default=None, help=argparse.SUPPRESS)
    settings = parser.add_argument_group("settings")
    for name, field in Settings.model_fields.items():
        # A secret has no flag (the command line is visible to every user of
        # the machine); the path of its file may have one.
        if (name in SECRET_FIELDS and not name.endswith("_file")) or name == "targets":
            continue
        flag = "--" + name.replace("_", "-")
        help_text = f"{_help(name)} ({_default(field.default)}env {env_name(name)})"
        if field.annotation is bool:
            settings.add_argument(
                flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=help_text
            )
        else:
            settings.add_argument(flag, dest=name, metavar="VALUE", default=None, help=help_text)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    flags: dict[str, Any] = {
        name: value
        for name, value in vars(args).items()
        if name in Settings.model_fields and value is not None
    }
    try:
        settings = load_settings(flags, args.config, demo=args.demo)
        if args.check_config:
            print("configuration OK")
            return 0
        setup_logging(settings.log_level.value, settings.log_format.value)
        if args.once:
            return asyncio.run(run_once(settings))
        return asyncio.run(_serve(settings, demo=args.demo))
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"cce-job-exporter: configuration error: {problem}", file=sys.stderr)
        return EXIT_CONFIG


async def _serve(settings: Settings, *, demo: bool) -> int:
    stop, reload = asyncio.Event(), asyncio.Event()
    install_signal_handlers(stop, reload)
    if demo:
        return await run_demo(settings, stop, reload=reload)
    return await run_service(settings, stop, reload=reload)
