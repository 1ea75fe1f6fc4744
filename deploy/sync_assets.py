"""Copy the alerting rules and the dashboard into deploy/kubernetes/prometheus-operator/.

Kustomize reads no file outside a kustomization's folder, so the variant keeps
copies: `config/alerts.yml` as a PrometheusRule and
`grafana/dashboards/cce-jobs.json` as it is. `make deploy-assets` writes them;
`--check` only tells whether they are up to date (exit 1 when not).
"""

import argparse
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
ALERTS = ROOT / "config" / "alerts.yml"
DASHBOARD = ROOT / "grafana" / "dashboards" / "cce-jobs.json"
VARIANT = ROOT / "deploy" / "kubernetes" / "prometheus-operator"

RULE_HEADER = """\
# Generated from config/alerts.yml by `make deploy-assets`: edit that file (its
# comments say why each rule is as it is), not this one. spec is its groups.
#
# A Prometheus only loads the PrometheusRules its ruleSelector matches
# (kube-prometheus-stack: a `release: <name>` label; see kustomization.yaml).
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: cce-job-exporter
  labels:
    app.kubernetes.io/name: cce-job-exporter
spec:
"""


class _BlockDumper(yaml.SafeDumper):
    """Writes text of several lines as a literal block.

    Not the rule file's own text: kustomize's YAML library changes some folded
    (`>`) scalars as it renders them, a literal block it keeps as it is.
    """


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _text)


def prometheus_rule(alerts: str) -> str:
    """Return the PrometheusRule whose spec holds the groups of the rule file `alerts`."""
    spec = {"groups": yaml.safe_load(alerts)["groups"]}
    body = yaml.dump(spec, Dumper=_BlockDumper, sort_keys=False, width=100, indent=2)
    return RULE_HEADER + "".join(f"  {line}\n" for line in body.splitlines())


def copies() -> dict[Path, str]:
    """Each copy's path and the text it must hold."""
    return {
        VARIANT / "prometheusrule.yaml": prometheus_rule(ALERTS.read_text()),
        VARIANT / DASHBOARD.name: DASHBOARD.read_text(),
    }


def main(argv: list[str] | None = None) -> int:
    """Write the copies, or with --check report those that differ from their sources."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 on drift")
    args = parser.parse_args(argv)
    stale = [
        path for path, text in copies().items() if not path.is_file() or path.read_text() != text
    ]
    if args.check:
        for path in stale:
            print(f"{path.relative_to(ROOT)} differs from its source: run make deploy-assets")
        return 1 if stale else 0
    for path in stale:
        path.write_text(copies()[path])
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
