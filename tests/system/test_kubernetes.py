"""The Kubernetes manifests, checked offline: the base and the example overlay render with
`kubectl kustomize`, every object validates against the Kubernetes schemas (kubernetes-validate,
bundled, no cluster or network), every container is locked down and probed, the NetworkPolicy lets
only gateway pods reach the upstream, and the gateway container's own command, environment and
probes work when run natively against MariaDB and Redis."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from copy import deepcopy
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from yarl import URL

from tests.support.processes import REPO, Processes, add_user_by_cli, free_port, wait_for_port
from tests.support.services import IN_CI, MySqlDatabase
from tests.support.wire import http, raw_get

# The Kubernetes release the manifests are validated for (kubernetes-validate ships its schemas;
# strict mode also refuses unknown fields, so a misspelt key fails here, not at apply time).
KUBERNETES_VERSION = "1.32"
KUSTOMIZE = REPO / "deploy" / "kubernetes"
BASE, OVERLAY = KUSTOMIZE / "base", KUSTOMIZE / "overlays" / "example"
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}
Object = dict[str, Any]


def render(directory: Path) -> list[Object]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        if IN_CI:
            pytest.fail("CI=true but kubectl is not installed: the manifests cannot be checked")
        pytest.skip("kubectl is not installed (needed for `kubectl kustomize`)")
    result = subprocess.run(
        [kubectl, "kustomize", str(directory)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
def base() -> list[Object]:
    return render(BASE)


@pytest.fixture(scope="module")
def overlay() -> list[Object]:
    return render(OVERLAY)


@pytest.fixture(params=["base", "overlay"])
def rendered(request: pytest.FixtureRequest) -> list[Object]:
    objects: list[Object] = request.getfixturevalue(request.param)
    return objects


def named(objects: list[Object], kind: str, name: str) -> Object:
    return next(o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name)


def pod_spec(workload: Object) -> Object:
    spec: Object = workload["spec"]["template"]["spec"]
    return spec


def containers(workload: Object, *, init: bool = True) -> list[Object]:
    spec = pod_spec(workload)
    return [*(spec.get("initContainers", []) if init else []), *spec["containers"]]


def env_of(container: Object) -> dict[str, Object]:
    return {item["name"]: item for item in container.get("env", [])}


def gateway_pod_labels(objects: list[Object]) -> dict[str, str]:
    labels: dict[str, str] = named(objects, "Deployment", "auth-gateway")["spec"]["template"][
        "metadata"
    ]["labels"]
    return labels


def selects(selector: Object, labels: dict[str, str]) -> bool:
    """A label selector (matchLabels and matchExpressions) against a pod's labels."""
    if not all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values")
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and labels.get(key) in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


def duration_seconds(text: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    return sum(float(number) * units[unit] for number, unit in re.findall(r"(\d+)(ms|s|m|h)", text))


def config_default(variable: str) -> str:
    found = re.search(rf"\$\{{{variable}:-([^}}]*)\}}", (REPO / "config.yaml").read_text())
    assert found, f"config.yaml does not read {variable}"
    return found.group(1)


# --- rendering and schemas ----------------------------------------------------------------------


def test_every_object_matches_the_kubernetes_schema(rendered: list[Object]) -> None:
    assert rendered
    problems = []
    for obj in rendered:
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            problems.append(f"{obj['kind']}/{obj['metadata']['name']}: {exc.message}")
    assert not problems, "\n".join(problems)


def test_base_holds_what_a_replicated_gateway_needs(base: list[Object]) -> None:
    kinds = {(o["apiVersion"], o["kind"]) for o in base}
    assert {
        ("apps/v1", "Deployment"),
        ("v1", "Service"),
        ("v1", "ConfigMap"),
        ("policy/v1", "PodDisruptionBudget"),
        ("autoscaling/v2", "HorizontalPodAutoscaler"),
        ("networking.k8s.io/v1", "NetworkPolicy"),
    } <= kinds


def test_no_secret_is_committed(rendered: list[Object]) -> None:
    assert not [o for o in rendered if o["kind"] == "Secret"], "Secrets are created by hand"
    for workload in (o for o in rendered if o["kind"] in WORKLOADS):
        for container in containers(workload):
            for name in ("JWT_SECRET", "DATABASE_URL", "JWT_PRIVATE_KEY"):
                item = env_of(container).get(name)
                if item is not None:
                    assert "secretKeyRef" in item.get("valueFrom", {}), (container["name"], name)


def test_config_map_is_the_repository_config(base: list[Object]) -> None:
    copy = (BASE / "config.yaml").read_text()
    assert copy == (REPO / "config.yaml").read_text(), (
        "deploy/kubernetes/base/config.yaml drifted from config.yaml: "
        "cp config.yaml deploy/kubernetes/base/config.yaml"
    )
    config_maps = [o for o in base if o["kind"] == "ConfigMap"]
    assert [c["data"] for c in config_maps] == [{"config.yaml": copy}]
    # Generated with a content hash in its name, so a config change rolls the pods.
    name = config_maps[0]["metadata"]["name"]
    assert re.fullmatch(r"auth-gateway-config-[a-z0-9]{10}", name)
    volumes = pod_spec(named(base, "Deployment", "auth-gateway"))["volumes"]
    assert {"name": "config", "configMap": {"name": name}} in volumes


# --- the gateway Deployment ---------------------------------------------------------------------


def test_gateway_deployment_is_replicated_probed_and_wired(rendered: list[Object]) -> None:
    deployment = named(rendered, "Deployment", "auth-gateway")
    assert deployment["spec"]["replicas"] >= 2
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    (gateway,) = containers(deployment, init=False)
    (init,) = pod_spec(deployment)["initContainers"]
    assert gateway["image"] == init["image"]
    assert gateway["image"].rpartition(":")[0].endswith("auth-gateway")
    assert init["args"][:2] == ["db", "init"]
    assert gateway["args"][0] == "serve"

    env = env_of(gateway)
    ports = {p["name"]: p["containerPort"] for p in gateway["ports"]}
    assert int(env["GATEWAY_PORT"]["value"]) == ports["http"]
    assert env["GATEWAY_HOST"]["value"] == "0.0.0.0"
    assert env["REDIS_URL"]["value"].startswith("redis://"), "replicas must share login limits"
    assert env["GATEWAY_WORKERS"]["value"] == "1"
    for name in ("JWT_SECRET", "DATABASE_URL"):
        assert env[name]["valueFrom"]["secretKeyRef"]["name"] == "auth-gateway"

    assert gateway["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert gateway["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert gateway["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}

    # Prometheus scrapes the metrics port, which the Service does not expose.
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    assert int(annotations["prometheus.io/port"]) == ports["metrics"]
    assert int(env["METRICS_PORT"]["value"]) == ports["metrics"]
    service = named(rendered, "Service", "auth-gateway")
    assert selects({"matchLabels": service["spec"]["selector"]}, gateway_pod_labels(rendered))
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]


def test_gateway_drains_before_the_kubelet_kills_it(rendered: list[Object]) -> None:
    deployment = named(rendered, "Deployment", "auth-gateway")
    (gateway,) = containers(deployment, init=False)
    pause = gateway["lifecycle"]["preStop"]["exec"]["command"]
    assert pause[0] == "sleep"
    shutdown = env_of(gateway).get("SHUTDOWN_TIMEOUT", {}).get("value") or config_default(
        "SHUTDOWN_TIMEOUT"
    )
    grace = pod_spec(deployment)["terminationGracePeriodSeconds"]
    assert grace > float(pause[1]) + duration_seconds(shutdown), (grace, pause, shutdown)


def test_disruption_budget_and_autoscaler_cover_the_gateway(rendered: list[Object]) -> None:
    labels = gateway_pod_labels(rendered)
    budget = named(rendered, "PodDisruptionBudget", "auth-gateway")
    assert selects(budget["spec"]["selector"], labels)
    assert budget["spec"].get("maxUnavailable") == 1 or budget["spec"].get("minAvailable")
    scaler = named(rendered, "HorizontalPodAutoscaler", "auth-gateway")
    assert scaler["apiVersion"] == "autoscaling/v2"
    assert scaler["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "auth-gateway",
    }
    assert scaler["spec"]["minReplicas"] >= 2
    assert scaler["spec"]["maxReplicas"] > scaler["spec"]["minReplicas"]
    (metric,) = scaler["spec"]["metrics"]
    assert metric["type"] == "Resource" and metric["resource"]["name"] == "cpu"


def test_every_variable_the_deployment_sets_is_read_by_the_config(rendered: list[Object]) -> None:
    read = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", (REPO / "config.yaml").read_text()))
    (gateway,) = containers(named(rendered, "Deployment", "auth-gateway"), init=False)
    unread = set(env_of(gateway)) - read
    assert not unread, f"the Deployment sets variables the gateway never reads: {sorted(unread)}"


# --- every container ----------------------------------------------------------------------------


def container_problems(workload: Object) -> list[str]:
    """What is missing from a workload's containers' hardening, probes, resources and preStop."""
    spec = pod_spec(workload)
    pod = spec.get("securityContext", {})
    problems = []
    init_names = {c["name"] for c in spec.get("initContainers", [])}
    for container in containers(workload):
        where = f"{workload['metadata']['name']}/{container['name']}"
        security = container.get("securityContext", {})

        def effective(key: str, sc: Object = security) -> Any:
            return sc.get(key, pod.get(key))

        if effective("runAsNonRoot") is not True:
            problems.append(f"{where}: runAsNonRoot is not true")
        if effective("runAsUser") == 0:
            problems.append(f"{where}: runAsUser 0")
        if security.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{where}: readOnlyRootFilesystem is not true")
        if security.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{where}: allowPrivilegeEscalation is not false")
        if security.get("privileged"):
            problems.append(f"{where}: privileged")
        if "ALL" not in security.get("capabilities", {}).get("drop", []):
            problems.append(f"{where}: capabilities are not all dropped")
        if security.get("capabilities", {}).get("add"):
            problems.append(f"{where}: adds capabilities")
        if effective("seccompProfile", security).get("type") not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{where}: no seccomp profile")
        for kind in ("requests", "limits"):
            if set(container.get("resources", {}).get(kind, {})) < {"cpu", "memory"}:
                problems.append(f"{where}: resources.{kind} lacks cpu or memory")
        if container["name"] in init_names:
            continue  # run to completion: neither probed nor stopped
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            if probe not in container:
                problems.append(f"{where}: no {probe}")
        if "httpGet" in container.get("readinessProbe", {}):
            # Serves HTTP behind a Service: keeps serving until the endpoints are updated.
            command = container.get("lifecycle", {}).get("preStop", {}).get("exec", {})
            if not command.get("command"):
                problems.append(f"{where}: no preStop pause before SIGTERM")
    return problems


def test_every_container_is_locked_down_probed_and_bounded(rendered: list[Object]) -> None:
    workloads = [o for o in rendered if o["kind"] in WORKLOADS]
    assert workloads
    problems = [problem for workload in workloads for problem in container_problems(workload)]
    assert not problems, "\n".join(problems)
    for workload in workloads:
        assert pod_spec(workload).get("automountServiceAccountToken") is False


def test_the_container_check_notices_a_weakened_container(overlay: list[Object]) -> None:
    workload = deepcopy(named(overlay, "Deployment", "auth-gateway"))
    gateway = containers(workload, init=False)[0]
    del gateway["securityContext"]["readOnlyRootFilesystem"]
    gateway["securityContext"]["capabilities"] = {"add": ["NET_ADMIN"]}
    del gateway["lifecycle"]
    del gateway["resources"]["limits"]
    pod_spec(workload)["securityContext"]["runAsNonRoot"] = False
    del gateway["securityContext"]["runAsNonRoot"]
    problems = "\n".join(container_problems(workload))
    for expected in (
        "auth-gateway/gateway: runAsNonRoot",
        "readOnlyRootFilesystem",
        "capabilities are not all dropped",
        "adds capabilities",
        "resources.limits",
        "preStop",
    ):
        assert expected in problems


def test_the_preStop_command_exists_in_the_image() -> None:
    # python:*-slim is Debian with coreutils; the same `sleep` is on this machine's PATH.
    assert re.search(r"^FROM python:[\d.]+-slim$", (REPO / "Dockerfile").read_text(), re.M)
    assert shutil.which("sleep")


# --- the network policy -------------------------------------------------------------------------


def upstream_pod_labels(objects: list[Object]) -> dict[str, str]:
    """The pods behind the gateway's UPSTREAM_URL: its host names a Service, which selects them."""
    (gateway,) = containers(named(objects, "Deployment", "auth-gateway"), init=False)
    host = URL(env_of(gateway)["UPSTREAM_URL"]["value"]).host
    service = named(objects, "Service", str(host))
    matches = [
        o["spec"]["template"]["metadata"]["labels"]
        for o in objects
        if o["kind"] in WORKLOADS
        and selects(
            {"matchLabels": service["spec"]["selector"]},
            o["spec"]["template"]["metadata"]["labels"],
        )
    ]
    assert len(matches) == 1, f"Service {host} selects {len(matches)} workloads"
    labels: dict[str, str] = matches[0]
    return labels


def network_problems(objects: list[Object]) -> list[str]:
    """Why something other than the gateway pods could connect to the upstream pods."""
    upstream = upstream_pod_labels(objects)
    gateway = gateway_pod_labels(objects)
    others = [
        o["spec"]["template"]["metadata"]["labels"]
        for o in objects
        if o["kind"] in WORKLOADS and o["spec"]["template"]["metadata"]["labels"] != gateway
    ]
    policies = [
        p
        for p in objects
        if p["kind"] == "NetworkPolicy"
        and selects(p["spec"]["podSelector"], upstream)
        and "Ingress" in p["spec"].get("policyTypes", ["Ingress"])
    ]
    if not policies:
        return ["no NetworkPolicy restricts ingress to the upstream pods"]
    problems = []
    # Policies add up: every rule of every policy selecting the upstream must admit gateways only.
    for policy in policies:
        name = policy["metadata"]["name"]
        for index, rule in enumerate(policy["spec"].get("ingress", [])):
            if not rule.get("from"):
                problems.append(f"{name}.ingress[{index}]: no `from`: admits every source")
            for peer in rule.get("from", []):
                if set(peer) != {"podSelector"}:
                    problems.append(f"{name}.ingress[{index}]: admits {sorted(set(peer))}")
                    continue
                selector = peer["podSelector"]
                if not selects(selector, gateway):
                    problems.append(f"{name}.ingress[{index}]: does not admit the gateway")
                if not selector or any(selects(selector, labels) for labels in others):
                    problems.append(f"{name}.ingress[{index}]: admits pods other than the gateway")
    return problems


def test_only_gateway_pods_may_reach_the_upstream(overlay: list[Object]) -> None:
    assert upstream_pod_labels(overlay).get("auth-gateway/upstream") == "true"
    assert network_problems(overlay) == []


@pytest.mark.parametrize(
    "loophole",
    [
        {"from": [{"namespaceSelector": {}}]},
        {"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]},
        {"from": [{"podSelector": {}}]},
        {"from": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "redis"}}}]},
        {"ports": [{"port": 3000}]},
    ],
)
def test_the_network_check_notices_a_loophole(
    overlay: list[Object], loophole: dict[str, Any]
) -> None:
    objects = deepcopy(overlay)
    extra = deepcopy(named(objects, "NetworkPolicy", "auth-gateway-upstreams"))
    extra["metadata"]["name"] = "loophole"
    extra["spec"]["ingress"] = [loophole]
    assert network_problems([*objects, extra])


# --- the pod's commands, run natively -----------------------------------------------------------


def natively(value: str, ports: dict[str, int]) -> str:
    """A cluster URL (http://upstream-demo:3000, redis://auth-gateway-redis:6379/0), here."""
    url = URL(value)
    if url.host and url.port and "." not in url.host:
        return str(url.with_host("127.0.0.1").with_port(ports.get(url.host, url.port)))
    return value


@pytest.mark.mysql
@pytest.mark.redis
def test_pod_commands_run_natively(
    tmp_path: Path, processes: Processes, overlay: list[Object], mysql_database: MySqlDatabase
) -> None:
    deployment = named(overlay, "Deployment", "auth-gateway")
    spec = pod_spec(deployment)
    (init,) = spec["initContainers"]
    (gateway,) = spec["containers"]
    config_map = named(overlay, "ConfigMap", spec["volumes"][0]["configMap"]["name"])
    mount = next(m for m in gateway["volumeMounts"] if m["name"] == "config")["mountPath"]
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    for key, text in config_map["data"].items():
        (config_dir / key).write_text(text)
    secret = {"jwt-secret": secrets.token_urlsafe(48), "database-url": mysql_database.url}
    ports = {"http": free_port(), "metrics": free_port(), "upstream-demo": free_port()}
    bin_dir = Path(sys.executable).parent
    base_env = {"PATH": f"{bin_dir}:{os.environ.get('PATH', '')}", "HOME": str(tmp_path)}

    def environment(container: Object) -> dict[str, str]:
        env = dict(base_env)
        for name, item in env_of(container).items():
            if "valueFrom" in item:
                env[name] = secret[item["valueFrom"]["secretKeyRef"]["key"]]
            else:
                env[name] = natively(item["value"], {"auth-gateway-redis": 6379, **ports})
        return env

    def argv(container: Object) -> list[str]:
        # The image's ENTRYPOINT is `gateway`; the mount path is a directory here.
        command = container.get("command", ["gateway"]) + container.get("args", [])
        return [arg.replace(mount, str(config_dir)) for arg in command]

    # Pods starting together all run the init container: the migration lock makes that safe.
    init_env = environment(init)
    with ThreadPoolExecutor(4) as pool:
        runs = list(
            pool.map(
                lambda _: subprocess.run(
                    argv(init), env=init_env, cwd=tmp_path, capture_output=True, text=True
                ),
                range(4),
            )
        )
    assert [r.returncode for r in runs] == [0] * 4, [r.stderr for r in runs]
    assert len({r.stdout for r in runs}) == 1 and "database ready" in runs[0].stdout

    upstream_container = containers(named(overlay, "Deployment", "upstream-demo"))[0]
    upstream_argv = argv(upstream_container)
    assert upstream_argv[:3] == ["python", "-m", "upstream_demo"]
    upstream_argv[upstream_argv.index("--port") + 1] = str(ports["upstream-demo"])
    upstream = processes.start("upstream", upstream_argv[1:], tmp_path, base_env)
    wait_for_port(ports["upstream-demo"], upstream)

    env = environment(gateway)
    env["GATEWAY_PORT"], env["METRICS_PORT"] = str(ports["http"]), str(ports["metrics"])
    serve = argv(gateway)
    assert serve[0] == "gateway"
    proc = processes.start("gateway", ["-m", "gateway", *serve[1:]], tmp_path, env)
    wait_for_port(ports["http"], proc, timeout=30)
    url = f"http://127.0.0.1:{ports['http']}"
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        status, _, body = raw_get(url + gateway[probe]["httpGet"]["path"])
        assert status == 200, (probe, body)
    status, _, body = raw_get(f"http://127.0.0.1:{ports['metrics']}/metrics")
    assert status == 200 and b"# TYPE" in body
    assert raw_get(f"{url}/metrics")[0] == 404  # not through the Service's port

    add_user_by_cli(tmp_path, env, "kube", "kube-password", "--config", serve[-1])
    status, pair = http(
        "POST", f"{url}/user/login", {"username": "kube", "password": "kube-password"}
    )
    assert status == 200, pair
    assert http("GET", f"{url}/bbb", token=pair["access_token"]) == (200, "bbb")

    # The kubelet's stop: preStop, then SIGTERM; the gateway drains and exits 0 within the grace.
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=spec["terminationGracePeriodSeconds"]) == 0
    assert time.monotonic() - started < duration_seconds(env["SHUTDOWN_TIMEOUT"])
    assert '"level"' in processes.output(proc)  # LOG_FORMAT json
    with urllib.request.urlopen(f"http://127.0.0.1:{ports['upstream-demo']}/aaa") as resp:
        assert resp.read() == b"aaa"
