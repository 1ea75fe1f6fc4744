from pathlib import Path
from typing import Any

import kubernetes_validate
import kubernetes_validate.utils
import pytest
import yaml

import exporter.settings.model
from exporter.settings.load import ConfigError, load_settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
# The oldest Kubernetes still commonly run, and the newest the validator knows.
VERSIONS = ("1.29.0", kubernetes_validate.utils.latest_version())


def _documents() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(DEPLOY.glob("*.yaml")):
        docs += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return docs


def _one(kind: str) -> dict[str, Any]:
    found = [doc for doc in _documents() if doc["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


@pytest.mark.parametrize("version", VERSIONS)
def test_core_manifests_validate_against_the_kubernetes_schemas(version: str) -> None:
    """Every built-in resource passes strict schema validation, offline."""
    checked = []
    for doc in _documents():
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # a CRD: checked by the test below
        kubernetes_validate.validate(doc, version, strict=True)
        checked.append(doc["kind"])
    assert sorted(checked) == ["ConfigMap", "Secret", "Service", "StatefulSet"]


def test_service_monitor_fields() -> None:
    """The ServiceMonitor has the Prometheus Operator's fields and selects the Service's port."""
    monitor = _one("ServiceMonitor")
    service = _one("Service")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(monitor) == {"apiVersion", "kind", "metadata", "spec"}
    spec = monitor["spec"]
    assert set(spec) <= {"selector", "endpoints", "namespaceSelector", "jobLabel"}
    labels = service["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    port_names = {port["name"] for port in service["spec"]["ports"]}
    allowed = {"port", "path", "interval", "scrapeTimeout", "scheme", "honorLabels"}
    for endpoint in spec["endpoints"]:
        assert set(endpoint) <= allowed
        assert endpoint["port"] in port_names
        assert endpoint["path"] == "/metrics"
        interval = int(endpoint["interval"].removesuffix("s"))
        assert int(endpoint["scrapeTimeout"].removesuffix("s")) <= interval


def test_statefulset_shards_by_pod_ordinal() -> None:
    """The shard count equals the replicas, and each pod takes its index from its name."""
    sts = _one("StatefulSet")
    service = _one("Service")
    spec = sts["spec"]
    container = spec["template"]["spec"]["containers"][0]
    env = {item["name"]: item["value"] for item in container["env"]}
    assert env["CCE_EXPORTER_SHARD_COUNT"] == str(spec["replicas"])
    assert env["CCE_EXPORTER_SHARD_INDEX"] == "auto"
    assert spec["serviceName"] == service["metadata"]["name"]
    assert service["spec"]["clusterIP"] == "None"
    template_labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= template_labels.items()
    assert service["spec"]["selector"].items() <= template_labels.items()
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert service["spec"]["ports"][0]["targetPort"] in ports
    assert ports["metrics"] == 9849
    probes = (container["livenessProbe"], container["readinessProbe"])
    assert [probe["httpGet"]["path"] for probe in probes] == ["/healthz", "/readyz"]
    # Secrets come from files, not the environment.
    assert not {"CCE_EXPORTER_ACCESS_KEY", "CCE_EXPORTER_SECRET_KEY"} & set(env)


def test_the_example_authenticates_with_keys_that_do_not_expire() -> None:
    """The Secret and the pod use AK/SK files, not a static token that expires in 24 h."""
    secret = _one("Secret")
    assert set(secret["stringData"]) == {"access_key", "secret_key", "admin_token"}
    container = _one("StatefulSet")["spec"]["template"]["spec"]["containers"][0]
    names = {item["name"] for item in container["env"]}
    assert {"CCE_EXPORTER_ACCESS_KEY_FILE", "CCE_EXPORTER_SECRET_KEY_FILE"} <= names
    assert not any("AUTH_TOKEN" in name for name in names)


def test_the_secret_files_are_readable_by_the_exporter_only() -> None:
    """The Secret's files are group-readable by the pod's fsGroup, which the exporter runs as."""
    pod = _one("StatefulSet")["spec"]["template"]["spec"]
    volume = next(volume for volume in pod["volumes"] if "secret" in volume)
    assert volume["secret"]["defaultMode"] == 0o440
    context = pod["securityContext"]
    assert context["fsGroup"] == context["runAsGroup"]


def test_the_pod_gets_no_service_links() -> None:
    """The pod spec turns off service links, whose variables no exporter setting uses."""
    pod = _one("StatefulSet")["spec"]["template"]["spec"]
    assert pod["enableServiceLinks"] is False


def test_mounted_files_are_those_the_settings_name() -> None:
    """The config, jobs file and secret files the settings name are all mounted from somewhere."""
    sts = _one("StatefulSet")
    pod = sts["spec"]["template"]["spec"]
    container = pod["containers"][0]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    mounted: dict[str, str] = {}
    for mount in container["volumeMounts"]:
        volume = volumes[mount["name"]]
        source = volume.get("configMap") or volume.get("secret") or {}
        for item in source.get("items", []):
            mounted[f"{mount['mountPath']}/{item['path']}"] = item["key"]
        if "secret" in volume:
            for key in _one("Secret")["stringData"]:
                mounted[f"{mount['mountPath']}/{key}"] = key
    env = {item["name"]: item["value"] for item in container["env"]}
    config = yaml.safe_load(_one("ConfigMap")["data"]["config.yaml"])
    assert container["args"][1] in mounted
    assert config["job_ids_file"] in mounted
    assert env["CCE_EXPORTER_ACCESS_KEY_FILE"] in mounted
    assert env["CCE_EXPORTER_SECRET_KEY_FILE"] in mounted
    assert env["CCE_EXPORTER_ADMIN_TOKEN_FILE"] in mounted


def test_the_shipped_config_is_valid(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    """The ConfigMap's settings, with the pod's environment, pass the exporter's own checks."""
    configmap = _one("ConfigMap")
    config = yaml.safe_load(configmap["data"]["config.yaml"])
    jobs = tmp_path / "jobs.txt"
    jobs.write_text(configmap["data"]["jobs.txt"])
    access_key = tmp_path / "access_key"
    access_key.write_text("AK")
    secret_key = tmp_path / "secret_key"
    secret_key.write_text("SK")
    config["job_ids_file"] = str(jobs)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    clean_env.setenv("CCE_EXPORTER_SHARD_COUNT", "3")
    clean_env.setenv("CCE_EXPORTER_SHARD_INDEX", "auto")
    clean_env.setenv("CCE_EXPORTER_ACCESS_KEY_FILE", str(access_key))
    clean_env.setenv("CCE_EXPORTER_SECRET_KEY_FILE", str(secret_key))
    clean_env.setattr(exporter.settings.model.socket, "gethostname", lambda: "cce-job-exporter-1")
    settings = load_settings({}, path)
    assert settings.auth_method == "aksk"
    assert settings.discover
    assert settings.shard == 1
    clean_env.setattr(exporter.settings.model.socket, "gethostname", lambda: "cce-job-exporter-3")
    with pytest.raises(ConfigError, match="shard_index"):
        load_settings({}, path)
