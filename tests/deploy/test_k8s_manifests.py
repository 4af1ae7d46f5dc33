"""deploy/k8s: the kustomize base and prod overlay render, every object matches its schema (Kubernetes, or its
CRD's), and the properties a rollout, the autoscaler and the security model depend on hold."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import generate_latest
from typer.testing import CliRunner

from mlplatform.api.actuator import router as actuator_router
from mlplatform.config import load_settings
from mlplatform.metrics import MULTIPROCESS_ENV, Metrics
from mlplatform.serving.metrics import ServingMetrics
from mlplatform.settings import Settings
from tests.deploy.k8s import (
    K8S,
    Object,
    crd_errors,
    dask_cluster_schema,
    find,
    kubernetes_errors,
    one,
    prometheus_operator_errors,
    render,
)

OVERLAYS = ["base", "overlays/prod"]
CUSTOM_KINDS = {"DaskCluster", "ServiceMonitor"}
SERVER = {"app.kubernetes.io/name": "mlplatform", "app.kubernetes.io/component": "server"}


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request: pytest.FixtureRequest) -> list[Object]:
    return render(request.param)


@pytest.fixture(scope="module")
def prod() -> list[Object]:
    return render("overlays/prod")


def server_container(objects: list[Object]) -> Object:
    (container,) = one(objects, "Deployment", "mlplatform")["spec"]["template"]["spec"]["containers"]
    return container


def pod_specs(objects: list[Object]) -> Iterator[tuple[str, Object]]:
    """Every pod this deployment makes: the server, the migration Job, the Dask scheduler and workers."""
    for obj in objects:
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        if obj["kind"] in ("Deployment", "Job"):
            yield name, obj["spec"]["template"]["spec"]
        elif obj["kind"] == "DaskCluster":
            yield f"{name} scheduler", obj["spec"]["scheduler"]["spec"]
            yield f"{name} worker", obj["spec"]["worker"]["spec"]


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def cpu_cores(quantity: str) -> float:
    return int(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


# --- schemas ------------------------------------------------------------------------------------------------


def test_every_object_matches_the_kubernetes_schemas(rendered: list[Object]) -> None:
    kinds = {o["kind"] for o in rendered}
    assert {
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "NetworkPolicy",
    } <= kinds
    assert {"Job", "ConfigMap", "ServiceAccount", *CUSTOM_KINDS} <= kinds
    problems = [p for o in rendered if o["kind"] not in CUSTOM_KINDS for p in kubernetes_errors(o)]
    assert problems == []


def test_custom_resources_match_their_crds(rendered: list[Object]) -> None:
    schema = dask_cluster_schema()
    problems = [p for o in find(rendered, "DaskCluster") for p in crd_errors(schema, o)]
    problems += prometheus_operator_errors(find(rendered, "ServiceMonitor"))
    assert problems == []
    # The operator's pods from the DaskCluster are checked as Pods too, by the current Kubernetes schema.
    for name, spec in pod_specs(find(rendered, "DaskCluster")):
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name.split()[-1]}, "spec": spec}
        assert kubernetes_errors(pod) == []


def test_the_prometheus_adapter_rule_renders_and_matches_the_schema() -> None:
    (config_map,) = render("prometheus-adapter")
    assert kubernetes_errors(config_map) == []


def test_the_checks_refuse_a_broken_object() -> None:
    """The validation is not vacuous: an unknown field or a wrong type in each kind of object is caught."""
    objects = render("base")
    deployment = copy.deepcopy(one(objects, "Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    assert any("livenesProbe" in p for p in kubernetes_errors(deployment))
    cluster = copy.deepcopy(one(objects, "DaskCluster"))
    cluster["spec"]["worker"]["replica"] = 2
    cluster["spec"]["scheduler"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "8786"
    problems = crd_errors(dask_cluster_schema(), cluster)
    assert any("replica" in p for p in problems) and any("containerPort" in p for p in problems)
    monitor = copy.deepcopy(one(objects, "ServiceMonitor"))
    monitor["spec"]["endpoints"][0]["interval"] = 15
    assert any("interval" in p for p in prometheus_operator_errors([monitor]))


# --- the server: rollout, probes, shutdown -----------------------------------------------------------------


def test_rollout_adds_before_it_removes(rendered: list[Object]) -> None:
    deployment = one(rendered, "Deployment", "mlplatform")
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    assert "replicas" not in deployment["spec"], "the HPA owns replicas; re-applying must not reset them"
    assert deployment["spec"]["selector"]["matchLabels"] == SERVER


def test_probes_use_the_actuator_paths_the_server_has(rendered: list[Object]) -> None:
    container = server_container(rendered)
    paths = {route.path for route in actuator_router.routes}  # type: ignore[attr-defined]
    probes = {kind: container[f"{kind}Probe"]["httpGet"] for kind in ("startup", "liveness", "readiness")}
    assert probes["startup"]["path"] == probes["liveness"]["path"] == "/actuator/health/liveness"
    assert probes["readiness"]["path"] == "/actuator/health/readiness"
    assert {p["path"] for p in probes.values()} <= paths
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert all(p["port"] in ports for p in probes.values())


def test_termination_outlasts_the_pause_and_the_graceful_shutdown(
    rendered: list[Object], tmp_path: Path
) -> None:
    spec = one(rendered, "Deployment", "mlplatform")["spec"]["template"]["spec"]
    pause = server_container(rendered)["lifecycle"]["preStop"]["sleep"]["seconds"]
    settings = effective_settings(rendered, tmp_path)
    assert pause >= 5, "endpoints and load balancers need a few seconds to stop sending to a terminating pod"
    assert spec["terminationGracePeriodSeconds"] > pause + settings.server.graceful_shutdown_seconds


# --- configuration and secrets -----------------------------------------------------------------------------


def container_environment(objects: list[Object], container: Object) -> dict[str, str]:
    """The variables Kubernetes gives the container: envFrom ConfigMaps, then `env` (which wins)."""
    environ: dict[str, str] = {}
    for source in container.get("envFrom", []):
        environ.update(one(objects, "ConfigMap", source["configMapRef"]["name"])["data"])
    for variable in container.get("env", []):
        assert "valueFrom" not in variable, f"{variable['name']}: secrets come from files (*_FILE), not env"
        environ[variable["name"]] = variable["value"]
    return environ


def effective_settings(objects: list[Object], folder: Path) -> Settings:
    """The server's settings as its pod would load them: the mounted ConfigMap as the config folder, the
    environment of the manifests, and a stand-in file for every secret the pod reads."""
    spec = one(objects, "Deployment", "mlplatform")["spec"]["template"]["spec"]
    container = server_container(objects)
    environ = container_environment(objects, container)
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    config_volume = volumes[mounts[environ["MLPLATFORM_CONFIG_DIR"]]]
    config_dir = folder / "config"
    for name, text in one(objects, "ConfigMap", config_volume["configMap"]["name"])["data"].items():
        config_dir.mkdir(parents=True, exist_ok=True)
        (config_dir / name).write_text(text)
    environ["MLPLATFORM_CONFIG_DIR"] = str(config_dir)
    for name, path in list(environ.items()):
        if name.endswith("_FILE"):
            mount = str(Path(path).parent)
            assert "secret" in volumes[mounts[mount]], f"{name}: {mount} is not a Secret volume"
            stand_in = folder / "secrets" / Path(path).name
            stand_in.parent.mkdir(parents=True, exist_ok=True)
            stand_in.write_text(f"secret-{Path(path).name}\n")
            environ[name] = str(stand_in)
    return load_settings(environ=environ, config_dir=config_dir)


def test_configuration_loads_as_the_prod_profile(rendered: list[Object], tmp_path: Path) -> None:
    settings = effective_settings(rendered, tmp_path)
    env = one(rendered, "ConfigMap", server_container(rendered)["envFrom"][0]["configMapRef"]["name"])["data"]
    assert settings.profile == "prod" and not settings.development
    assert settings.server.host == "0.0.0.0"
    assert (
        settings.server.port
        == {p["name"]: p["containerPort"] for p in server_container(rendered)["ports"]}["http"]
    )
    assert settings.database.url == f"postgresql+psycopg://{env['DB_HOST']}:5432/{env['DB_NAME']}"
    assert settings.database.password is not None
    assert settings.database.password.get_secret_value() == "secret-db-password"
    assert settings.cache.url.startswith(f"redis://{env['REDIS_HOST']}:")
    assert settings.storage.url.startswith(f"s3://{env['ML_MODELS_BUCKET']}?")
    assert settings.logging.format == "json"
    # One server process per requested core.
    requested = server_container(rendered)["resources"]["requests"]["cpu"]
    assert settings.server.workers == cpu_cores(requested)


def test_secrets_are_files_never_literals(rendered: list[Object]) -> None:
    assert find(rendered, "Secret") == [], "no Secret in the manifests: the operator creates it"
    for name, spec in pod_specs(rendered):
        for container in spec["containers"]:
            for variable in container.get("env", []):
                secretish = any(w in variable["name"] for w in ("PASSWORD", "SECRET", "KEY"))
                assert not secretish or variable["name"].endswith("_FILE"), f"{name}: {variable['name']}"


def test_the_prod_configuration_reads_the_documented_variables() -> None:
    """deploy/k8s's prod profile reads the same variables as config/application-prod.yml (DESIGN §3)."""
    import re

    placeholder = re.compile(r"\$\{([A-Z_]+)")
    ours = set(placeholder.findall((K8S / "base" / "application-prod.yml").read_text()))
    repo = set(placeholder.findall((K8S.parents[1] / "config" / "application-prod.yml").read_text()))
    assert ours == repo


# --- pods: non-root, read-only, sized ----------------------------------------------------------------------


def test_every_pod_runs_restricted_with_a_read_only_root(rendered: list[Object]) -> None:
    for name, spec in pod_specs(rendered):
        pod_security = spec["securityContext"]
        assert pod_security["runAsNonRoot"] is True and pod_security["runAsUser"] > 0, name
        assert pod_security["seccompProfile"]["type"] == "RuntimeDefault", name
        assert spec["automountServiceAccountToken"] is False, name
        assert not any("hostPath" in v for v in spec.get("volumes", [])), name
        writable = {v["name"] for v in spec.get("volumes", []) if "emptyDir" in v}
        for container in spec["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["capabilities"]["drop"] == ["ALL"], name
            assert "privileged" not in security, name
            mounted = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            assert mounted.get("/tmp") in writable, f"{name}: /tmp must be an emptyDir"
            assert set(container["resources"]["requests"]) >= {"cpu", "memory"}, name
            assert set(container["resources"]["limits"]) >= {"cpu", "memory"}, name
            assert not container["image"].endswith(":latest") and ":" in container["image"], name


def test_the_server_writes_only_to_its_empty_dirs(rendered: list[Object], tmp_path: Path) -> None:
    spec = one(rendered, "Deployment", "mlplatform")["spec"]["template"]["spec"]
    container = server_container(rendered)
    writable = {v["name"] for v in spec["volumes"] if "emptyDir" in v}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"] if m["name"] in writable}
    settings = effective_settings(rendered, tmp_path)
    environ = container_environment(rendered, container)

    def on_writable(path: str) -> bool:
        return any(Path(path).is_relative_to(mount) for mount in mounts)

    assert on_writable(settings.ml.models.local_cache_dir)
    assert on_writable(environ[MULTIPROCESS_ENV]), "the workers' metric files"
    assert settings.logging.file.name is None or on_writable(settings.logging.file.name)
    assert all(m.get("readOnly") for m in container["volumeMounts"] if m["name"] not in writable)


def test_resources_follow_the_sizing_table(rendered: list[Object], prod: list[Object]) -> None:
    # The guide's table: Small 4 vCPU / 8 GB, Medium 8 vCPU / 16 GB.
    requests = server_container(rendered)["resources"]["requests"]
    assert (cpu_cores(requests["cpu"]), requests["memory"]) in {(4, "8Gi"), (8, "16Gi")}
    # Prod: requests equal limits (Guaranteed QoS), the Medium size.
    resources = server_container(prod)["resources"]
    assert resources["requests"] == resources["limits"]
    assert (cpu_cores(resources["requests"]["cpu"]), resources["requests"]["memory"]) == (8, "16Gi")


def test_prod_pins_its_image_and_namespace(prod: list[Object]) -> None:
    namespace = one(prod, "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert all(o["metadata"].get("namespace") == "mlplatform" for o in prod if o["kind"] != "Namespace")
    images = {c["image"] for _, spec in pod_specs(prod) for c in spec["containers"]}
    assert len(images) == 1 and next(iter(images)).startswith("registry.example.com/mlplatform:")


# --- autoscaling -------------------------------------------------------------------------------------------


def adapter_rules() -> list[dict[str, Any]]:
    config = yaml.safe_load((K8S / "prometheus-adapter" / "config.yaml").read_text())
    values = yaml.safe_load((K8S / "prometheus-adapter" / "values.yaml").read_text())
    assert config["rules"] == values["rules"]["custom"], (
        "config.yaml and the Helm values must carry the same rule"
    )
    rules: list[dict[str, Any]] = config["rules"]
    return rules


def test_hpa_scales_on_cpu_memory_and_predictions_per_second(rendered: list[Object]) -> None:
    hpa = one(rendered, "HorizontalPodAutoscaler", "mlplatform")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", one(rendered, "Deployment")["metadata"]["name"])
    assert hpa["spec"]["minReplicas"] >= 2
    by_type = {
        (m["type"], m["resource"]["name"] if m["type"] == "Resource" else m["pods"]["metric"]["name"])
        for m in hpa["spec"]["metrics"]
    }
    assert by_type == {("Resource", "cpu"), ("Resource", "memory"), ("Pods", "ml_predictions_per_second")}
    served = {rule["name"]["as"] for rule in adapter_rules()}
    assert "ml_predictions_per_second" in served


def test_the_adapter_rule_reads_a_counter_the_server_exports() -> None:
    (rule,) = [r for r in adapter_rules() if r["name"]["as"] == "ml_predictions_per_second"]
    counter = rule["name"]["matches"].strip("^$")
    assert rule["seriesQuery"].startswith(counter + "{")
    assert "rate(<<.Series>>" in rule["metricsQuery"] and set(rule["resources"]["overrides"]) == {
        "namespace",
        "pod",
    }
    metrics = Metrics(application="mlplatform", environment="test")
    ServingMetrics(metrics).observe("iris", "iris-v1-20250101000000", 1.0)
    exposition = generate_latest(metrics.exposition()).decode()
    assert f"\n{counter}{{" in exposition, f"/actuator/prometheus has no {counter}"


def test_prod_scales_like_the_guide(prod: list[Object]) -> None:
    hpa = one(prod, "HorizontalPodAutoscaler")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 20)


# --- who reaches what --------------------------------------------------------------------------------------


def test_service_monitor_and_pdb_select_the_server(rendered: list[Object]) -> None:
    pod_labels = one(rendered, "Deployment", "mlplatform")["spec"]["template"]["metadata"]["labels"]
    service = one(rendered, "Service", "mlplatform")
    assert matches(service["spec"]["selector"], pod_labels)
    assert matches(one(rendered, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"], pod_labels)
    monitor = one(rendered, "ServiceMonitor")
    assert matches(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/actuator/prometheus"
    assert endpoint["authorization"]["type"] == "Bearer", "/actuator/prometheus needs an API key"
    # The Job's pods are not server pods: the Service, the PDB and the Deployment leave them alone.
    job_labels = one(rendered, "Job")["spec"]["template"]["metadata"]["labels"]
    assert not matches(service["spec"]["selector"], job_labels)


def test_the_server_network_policy(rendered: list[Object]) -> None:
    policy = one(rendered, "NetworkPolicy", "mlplatform")
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    selector = policy["spec"]["podSelector"]["matchLabels"]
    for name, labels in [
        ("server", one(rendered, "Deployment")["spec"]["template"]["metadata"]["labels"]),
        ("migration", one(rendered, "Job")["spec"]["template"]["metadata"]["labels"]),
    ]:
        assert matches(selector, labels), f"the {name} pods must be covered"
    (ingress,) = policy["spec"]["ingress"]
    assert ingress["ports"] == [{"port": "http", "protocol": "TCP"}]
    sources = {f["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] for f in ingress["from"]}
    assert sources == {"ingress-nginx", "monitoring"}
    egress_ports = {p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"]}
    assert egress_ports == {53, 5432, 6379, 443, 8786}
    # The operator copies a DaskCluster's labels to its pods: the server's policy must not select them.
    for cluster in find(rendered, "DaskCluster"):
        assert not matches(selector, cluster["metadata"]["labels"])


def test_only_the_server_workers_and_operator_reach_the_dask_scheduler(
    rendered: list[Object], tmp_path: Path
) -> None:
    cluster = one(rendered, "DaskCluster")
    name = cluster["metadata"]["name"]
    scheduler_labels = {"dask.org/cluster-name": name, "dask.org/component": "scheduler"}
    service = cluster["spec"]["scheduler"]["service"]
    assert service["type"] == "ClusterIP", "never a LoadBalancer or NodePort"
    comm_port = {p["name"]: p["port"] for p in service["ports"]}["tcp-comm"]
    settings = effective_settings(rendered, tmp_path)
    assert settings.jobs.scheduler == f"tcp://{name}-scheduler:{comm_port}"
    (policy,) = [
        p
        for p in find(rendered, "NetworkPolicy")
        if p["spec"]["podSelector"]["matchLabels"] == scheduler_labels
    ]
    assert "Ingress" in policy["spec"]["policyTypes"]
    allowed: dict[int, list[Object]] = {}
    for rule in policy["spec"]["ingress"]:
        for port in rule["ports"]:
            allowed.setdefault(port["port"], []).extend(rule["from"])
    assert set(allowed) == {comm_port, 8787}
    assert all("ipBlock" not in peer for peers in allowed.values() for peer in peers)
    server_pods = one(rendered, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert any(
        not peer.get("namespaceSelector") and matches(peer["podSelector"]["matchLabels"], server_pods)
        for peer in allowed[comm_port]
    )
    assert len(allowed[comm_port]) == 3, "the server, the cluster's workers and the operator, nobody else"
    worker_args = cluster["spec"]["worker"]["spec"]["containers"][0]["args"]
    assert "--no-dashboard" in worker_args


# --- commands the pods run exist ---------------------------------------------------------------------------


def test_the_migration_job_runs_mlplatform_db_upgrade(rendered: list[Object]) -> None:
    from mlplatform.cli import app

    job = one(rendered, "Job")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["mlplatform", "db", "upgrade"]
    assert container["image"] == server_container(rendered)["image"]
    job_env = container_environment(rendered, container)
    server_env = container_environment(rendered, server_container(rendered))
    assert all(job_env.get(k) == v for k, v in server_env.items() if k != MULTIPROCESS_ENV), (
        "same configuration"
    )
    answer = CliRunner().invoke(app, [*container["command"][1:], "--help"])
    assert answer.exit_code == 0, f"`{' '.join(container['command'])}` is not a command: {answer.output}"


def test_the_dask_pods_run_options_the_installed_dask_has(rendered: list[Object]) -> None:
    from distributed.cli.dask_scheduler import main as scheduler_main
    from distributed.cli.dask_worker import main as worker_main

    cluster = one(rendered, "DaskCluster")
    for role, main in (("worker", worker_main), ("scheduler", scheduler_main)):
        (container,) = cluster["spec"][role]["spec"]["containers"]
        assert container["command"] == ["dask"] and container["args"][0] == role
        options = {o for p in main.params for o in (*p.opts, *p.secondary_opts)}
        given = {a for a in container["args"][1:] if a.startswith("--")}
        assert given <= options, f"dask {role} has no {given - options}"
