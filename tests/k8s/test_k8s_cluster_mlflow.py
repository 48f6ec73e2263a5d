"""MLflow as each overlay deploys it answers its in-cluster names, and the profiles and KFP's plugin point there.

The real ``mlflow server`` runs with the rendered Deployment's own arguments
and environment ($(VAR) references resolved, Secret-backed values given test
values); only the backend store (sqlite, or PostgreSQL where installed), the
artifact destination (a local folder, through its Secret value), the port (a
free one) and the bind address (loopback) are swapped. MLflow 3 checks the
Host header of every API call but not of ``/health``, so a healthy pod proves
nothing: the test calls the API with each name a client would send.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from mlflow.server.security_utils import is_allowed_host_header

from bettersynth.platform.placement import load_profile
from tests.k8s.test_k8s_manifests import OVERLAYS, PROFILE_OF_OVERLAY, kubectl, needs_kubectl, render
from tests.tracking.tracking_servers import BIN, _process, free_port, postgres_missing, postgres_server

SERVICE = "bettersynth-mlflow"
PLUGIN = Path("k8s/extras/kfp-mlflow-plugin")
SEARCH = "/api/2.0/mlflow/experiments/search?max_results=1"
# KFP 2.17.0's JSON field names (backend/src/common/plugins/mlflow/config.go: PluginConfig, TLSConfig,
# MLflowPluginSettings, CredentialSecretRef; backend/src/apiserver/plugins/mlflow/config.go:
# LauncherNamespaceConfig, LauncherNamespaceSettings, both decoded with DisallowUnknownFields).
PLUGIN_CONFIG_KEYS = {"endpoint", "timeout", "tls", "settings"}
TLS_KEYS = {"insecureSkipVerify", "caBundlePath"}
SETTINGS_KEYS = {"workspacesEnabled", "authType", "credentialSecretRef", "experimentDescription",
                 "defaultExperimentName", "kfpBaseURL", "kfpRunURLPathTemplate", "mlflowBaseURL",
                 "mlflowUIPathPrefix", "injectUserEnvVars"}
AUTH_TYPES = {"kubernetes", "bearer", "basic-auth", "none"}
LAUNCHER_SETTINGS_KEYS = {"experimentDescription", "defaultExperimentName", "injectUserEnvVars", "credentialSecretRef"}
GO_DURATION = re.compile(r"^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$")


def mlflow_deployment(resources: list[dict]) -> tuple[dict, str, int]:
    """(the MLflow container, its namespace, the Service port) of a rendered overlay."""
    deployment = next(r for r in resources if r["kind"] == "Deployment" and r["metadata"]["name"] == SERVICE)
    service = next(r for r in resources if r["kind"] == "Service" and r["metadata"]["name"] == SERVICE)
    (container,) = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "mlflow"]
    return container, deployment["metadata"]["namespace"], service["spec"]["ports"][0]["port"]


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion; an unknown reference is an error here (the kubelet would pass it on verbatim)."""
    def value(match: re.Match) -> str:
        if match.group(1) not in env:
            raise AssertionError(f"$({match.group(1)}) in {text!r} names no env var of the container")
        return env[match.group(1)]
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", value, text)


def container_env(container: dict, secret_values: dict[str, str]) -> dict[str, str]:
    """The container's environment in order, Secret-backed entries taken from ``secret_values`` by key."""
    env: dict[str, str] = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = expand(item["value"], env)
        else:
            key = item["valueFrom"]["secretKeyRef"]["key"]
            assert key in secret_values, f"env {item['name']}: no test value for Secret key {key!r}"
            env[item["name"]] = secret_values[key]
    return env


def swap(args: list[str], option: str, value: str) -> list[str]:
    """``args`` with ``option``'s value replaced; the option must be there exactly once."""
    hits = [i for i, arg in enumerate(args) if arg == option or arg.startswith(option + "=")]
    assert len(hits) == 1, f"{option} appears {len(hits)} times in {args}"
    i = hits[0]
    if args[i] == option:
        return args[: i + 1] + [value] + args[i + 2:]
    return args[:i] + [f"{option}={value}"] + args[i + 1:]


def allowed_hosts(container: dict) -> list[str]:
    """The Host patterns the server accepts: --allowed-hosts, else MLFLOW_SERVER_ALLOWED_HOSTS (both comma lists)."""
    for arg in container.get("args", []):
        if arg.startswith("--allowed-hosts="):
            return [h.strip() for h in arg.split("=", 1)[1].split(",")]
    env = {item["name"]: item.get("value") for item in container.get("env", [])}
    value = env.get("MLFLOW_SERVER_ALLOWED_HOSTS")
    assert value, "the MLflow container sets no allowed hosts: MLflow 3 then refuses every in-cluster name"
    return [h.strip() for h in value.split(",")]


def in_cluster_names(namespace: str, port: int) -> list[str]:
    return [f"{SERVICE}:{port}", f"{SERVICE}.{namespace}:{port}", f"{SERVICE}.{namespace}.svc:{port}",
            f"{SERVICE}.{namespace}.svc.cluster.local:{port}"]


def netloc(uri: str) -> str:
    parts = urlsplit(uri)
    return f"{parts.hostname}:{parts.port}"


def get_status(port: int, host: str) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", SEARCH, headers={"Host": host})
        return connection.getresponse().status
    finally:
        connection.close()


@pytest.fixture(scope="module")
def overlays() -> dict[str, list[dict]]:
    if kubectl is None:
        pytest.skip("kubectl not on PATH")
    return {name: render(f"k8s/overlays/{name}") for name in OVERLAYS}


@pytest.fixture(scope="module")
def servers(overlays, tmp_path_factory):
    """One real server per distinct (args, env) of the overlays' MLflow containers; {overlay: local port}."""
    with contextlib.ExitStack() as stack:
        backend = None
        if postgres_missing() is None:
            backend = stack.enter_context(postgres_server())
        started: dict[str, int] = {}
        ports: dict[str, int] = {}
        for name, resources in overlays.items():
            container = mlflow_deployment(resources)[0]
            key = json.dumps([container.get("command"), container["args"], container.get("env")], sort_keys=True)
            if key not in started:
                root = tmp_path_factory.mktemp(f"mlflow-{name}")
                (root / "artifacts").mkdir()
                secrets = {"password": "test-password", "MLFLOW_ARTIFACT_DESTINATION": (root / "artifacts").as_uri(),
                           "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                           "MLFLOW_S3_ENDPOINT_URL": "http://127.0.0.1:9"}
                env = container_env(container, secrets)
                args = [expand(arg, env) for arg in container["args"]]
                assert args[:2] == ["mlflow", "server"], args
                port = free_port()
                args = swap(args, "--backend-store-uri", backend or f"sqlite:///{root / 'mlflow.db'}")
                args = swap(swap(args, "--port", str(port)), "--host", "127.0.0.1")
                base = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
                stack.enter_context(_process([str(BIN / "mlflow"), *args[1:]], root / "server.log",
                                             f"http://127.0.0.1:{port}/health", env=base | env))
                started[key] = port
            ports[name] = started[key]
        yield ports


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_mlflow_answers_its_in_cluster_names_and_refuses_others(overlay, overlays, servers):
    _, namespace, service_port = mlflow_deployment(overlays[overlay])
    port = servers[overlay]
    other = "kubeflow" if namespace != "kubeflow" else "bettersynth"
    expected = {host: 200 for host in in_cluster_names(namespace, service_port)}
    expected |= {f"localhost:{port}": 200, f"127.0.0.1:{port}": 200, "evil.example.com:5000": 403,
                 f"{SERVICE}.{other}.svc.cluster.local:{service_port}": 403, f"{SERVICE}.{other}:{service_port}": 403}
    if overlay in PROFILE_OF_OVERLAY:
        uri = load_profile(f"k8s/profiles/{PROFILE_OF_OVERLAY[overlay]}.yaml").env["MLFLOW_TRACKING_URI"]
        expected[netloc(uri)] = 200
    assert {host: get_status(port, host) for host in expected} == expected


@needs_kubectl
@pytest.mark.parametrize("overlay", sorted(PROFILE_OF_OVERLAY))
def test_paired_profile_logs_to_a_host_its_overlay_allows(overlay, overlays):
    profile = load_profile(f"k8s/profiles/{PROFILE_OF_OVERLAY[overlay]}.yaml")
    container, namespace, port = mlflow_deployment(overlays[overlay])
    uri = profile.env.get("MLFLOW_TRACKING_URI")
    assert uri, f"{profile.name}: no MLFLOW_TRACKING_URI in env:, the steps log to a sqlite file of their own"
    assert netloc(uri) in in_cluster_names(namespace, port), (uri, namespace)
    assert is_allowed_host_header(allowed_hosts(container), netloc(uri))


@needs_kubectl
def test_kfp_standalone_docs_say_where_mlflow_moved(overlays):
    container, namespace, port = mlflow_deployment(overlays["kfp-standalone"])
    uri = f"http://{SERVICE}.{namespace}.svc.cluster.local:{port}"
    comments = "\n".join(line for line in Path("k8s/overlays/kfp-standalone/kustomization.yaml").read_text().splitlines()
                         if line.lstrip().startswith("#"))
    assert "MLFLOW_TRACKING_URI" in comments and uri in comments
    assert is_allowed_host_header(allowed_hosts(container), netloc(uri))
    for profile in sorted(Path("k8s/profiles").glob("*.yaml")):
        assert not is_allowed_host_header(allowed_hosts(container), netloc(load_profile(profile).env["MLFLOW_TRACKING_URI"]))


def test_host_check_refuses_what_it_should():
    container = {"env": [{"name": "MLFLOW_SERVER_ALLOWED_HOSTS", "value": "a:5000, localhost:*"}],
                 "args": ["--port=$(PORT)"]}
    assert allowed_hosts(container) == ["a:5000", "localhost:*"]
    assert is_allowed_host_header(allowed_hosts(container), "localhost:1234")
    assert not is_allowed_host_header(allowed_hosts(container), "a:80")
    with pytest.raises(AssertionError, match=r"\$\(PORT\)"):
        expand(container["args"][0], {})
    assert swap(["--port", "5000", "--host=0.0.0.0"], "--port", "1") == ["--port", "1", "--host=0.0.0.0"]
    with pytest.raises(AssertionError, match="appears 0 times"):
        swap(["--host=0.0.0.0"], "--port", "1")
    with pytest.raises(AssertionError, match="no MLFLOW_SERVER_ALLOWED_HOSTS|sets no allowed hosts"):
        allowed_hosts({"env": []})


def plugin_config() -> dict:
    return json.loads((PLUGIN / "api-server-config.json").read_text())["plugins"]["mlflow"]


def test_kfp_plugin_config_uses_only_kfps_settings():
    config = plugin_config()
    assert set(config) <= PLUGIN_CONFIG_KEYS, set(config) - PLUGIN_CONFIG_KEYS
    assert set(config.get("tls", {})) <= TLS_KEYS
    settings = config["settings"]
    assert set(settings) <= SETTINGS_KEYS, set(settings) - SETTINGS_KEYS
    assert GO_DURATION.match(config["timeout"]), config["timeout"]
    # The in-cluster server has no auth: KFP's default (kubernetes) would set MLFLOW_TRACKING_AUTH in every step.
    assert settings["authType"] == "none" and settings["workspacesEnabled"] is False
    assert settings["injectUserEnvVars"] is True


def test_kfp_launcher_fragment_uses_only_what_a_namespace_may_override():
    configmap = yaml.safe_load((PLUGIN / "kfp-launcher.yaml").read_text())
    assert configmap["kind"] == "ConfigMap" and configmap["metadata"]["name"] == "kfp-launcher"
    assert set(configmap["data"]) == {"plugins.mlflow"}, "a merge patch: defaultPipelineRoot stays the namespace's own"
    fragment = json.loads(configmap["data"]["plugins.mlflow"])
    assert set(fragment) == {"settings"} and set(fragment["settings"]) <= LAUNCHER_SETTINGS_KEYS
    assert fragment["settings"]["defaultExperimentName"] == plugin_config()["settings"]["defaultExperimentName"]


@needs_kubectl
def test_kfp_plugin_endpoint_is_the_profiles_tracking_uri_and_an_allowed_host(overlays):
    config = plugin_config()
    for path in sorted(Path("k8s/profiles").glob("*.yaml")):
        env = load_profile(path).env
        assert config["endpoint"] == env["MLFLOW_TRACKING_URI"], path
        assert config["settings"]["defaultExperimentName"] == env["MLFLOW_EXPERIMENT_NAME"], path
    for overlay in PROFILE_OF_OVERLAY:
        assert is_allowed_host_header(allowed_hosts(mlflow_deployment(overlays[overlay])[0]), netloc(config["endpoint"]))


@needs_kubectl
def test_kfp_launcher_patch_keeps_the_namespaces_pipeline_root(tmp_path):
    existing = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kfp-launcher", "namespace": "bettersynth"},
                "data": {"defaultPipelineRoot": "minio://mlpipeline/v2/artifacts"}}
    (tmp_path / "existing.yaml").write_text(yaml.safe_dump(existing))
    result = subprocess.run([kubectl, "patch", "--local", "-f", str(tmp_path / "existing.yaml"), "--type", "merge",
                             "--patch-file", str(PLUGIN / "kfp-launcher.yaml"), "-o", "yaml"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    data = yaml.safe_load(result.stdout)["data"]
    assert data["defaultPipelineRoot"] == "minio://mlpipeline/v2/artifacts" and "plugins.mlflow" in data
