"""The Kubernetes manifests: rendered by ``kubectl kustomize``, valid for the API server, and
holding to docs/deploy/kubernetes.md and docs/overview.md#running-more-than-one-instance.

Built-in kinds are validated by ``kubernetes-validate --strict`` against the oldest and newest
Kubernetes versions it knows here. It has no schema for prometheus-operator's custom resources
(it only warns), so the ServiceMonitor and the PrometheusRule are validated against
``tests/data/prometheus-operator-v1.schema.json``: the CRDs' fields for what rotator uses, with
unknown fields refused (the API server would prune them silently).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import certifi
import httpx
import jsonschema  # type: ignore[import-untyped]
import pytest
import yaml

from rotator.config import Config, load_config
from rotator.daemon.control import Health
from rotator.daemon.http import build_app
from rotator.daemon.leader import SERVICE_ACCOUNT_DIR, Timing, release_bound
from rotator.daemon.metrics import Metrics
from rotator.daemon.runner import Timings
from rotator.destinations.vault.schema import KubernetesAuth, VaultStore
from rotator.engine.engine import TargetStatus

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
KUSTOMIZE = ROOT / "deploy/kubernetes"
VARIANTS = {"base": KUSTOMIZE / "base", "ha": KUSTOMIZE / "overlays/ha"}
VALIDATE = Path(sys.executable).with_name("kubernetes-validate")
CRD_SCHEMA = ROOT / "tests/data/prometheus-operator-v1.schema.json"
K8S_VERSIONS = ("1.30.0", "1.37.0")
"""The oldest Kubernetes we support and the newest kubernetes-validate knows."""
CUSTOM_KINDS = frozenset({"ServiceMonitor", "PrometheusRule"})
IMAGE_USER = 10001
"""The numeric user and group of rotator's image (Dockerfile ``USER 10001:10001``)."""
PROBE_PORT = 9402
STOP_MARGIN = 5.0
"""Seconds left for what the daemon's stop does after the lease release (HTTP server, clients)."""


def kubectl() -> str:
    found = shutil.which("kubectl")
    if found is None:
        pytest.fail("kubectl is missing: run scripts/ensure-tools (Debian: kubernetes-client)")
    return found


@cache
def render_text(variant: str) -> str:
    """``kubectl kustomize`` of a variant (base or ha)."""
    done = subprocess.run(
        [kubectl(), "kustomize", str(VARIANTS[variant])],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"kubectl kustomize {variant} failed: {done.stderr}"
    return done.stdout


def render(variant: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(render_text(variant)) if doc]


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def by_name(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def pod_spec(objects: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = one(objects, "Deployment")["spec"]["template"]["spec"]
    return spec


def rotator_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    containers = pod_spec(objects)["containers"]
    assert [c["name"] for c in containers] == ["rotator"]
    container: dict[str, Any] = containers[0]
    return container


def all_containers(spec: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    for key in ("initContainers", "containers", "ephemeralContainers"):
        yield from spec.get(key, [])


# --------------------------------------------------------------------------------------------
# Rendering and schema validation
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variant", "kinds"),
    [
        (
            "base",
            (
                "ConfigMap Deployment PersistentVolumeClaim PrometheusRule Role RoleBinding Secret"
                " Service ServiceAccount ServiceMonitor"
            ),
        ),
        (
            "ha",
            (
                "ConfigMap ConfigMap Deployment PodDisruptionBudget PrometheusRule Role RoleBinding"
                " Secret Secret Service ServiceAccount ServiceMonitor"
            ),
        ),
    ],
)
def test_kustomize_renders_the_expected_objects(variant: str, kinds: str) -> None:
    """Each variant renders exactly its objects, all in one namespace (the HA overlay has a
    PDB and the PostgreSQL Secret instead of the volume claim)."""
    objects = render(variant)
    assert sorted(o["kind"] for o in objects) == kinds.split()
    assert {o["metadata"].get("namespace") for o in objects} == {"rotator"}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_builtin_object_passes_kubernetes_validate_strict(
    variant: str, version: str, tmp_path: Path
) -> None:
    """``kubernetes-validate --strict`` passes every built-in object and only warns about the
    two prometheus-operator kinds (validated against their own schema below)."""
    if not VALIDATE.is_file():
        pytest.fail(f"{VALIDATE} is missing: install the dev requirements into .venv")
    rendered = tmp_path / f"{variant}.yaml"
    rendered.write_text(render_text(variant))
    done = subprocess.run(
        [str(VALIDATE), "--strict", "-k", version, str(rendered)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    lines = done.stdout.splitlines()
    assert done.returncode == 0, done.stdout + done.stderr
    builtin = [o for o in render(variant) if o["kind"] not in CUSTOM_KINDS]
    passed = [line for line in lines if line.startswith("INFO") and " passed " in line]
    assert len(passed) == len(builtin), done.stdout
    warned = sorted(re.findall(r"for kind (\w+) with api version", done.stdout))
    assert warned == sorted(CUSTOM_KINDS), done.stdout
    assert len(lines) == len(passed) + len(warned), done.stdout


@cache
def crd_validator(kind: str) -> jsonschema.Draft202012Validator:
    schema = json.loads(CRD_SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator({**schema, "$ref": f"#/$defs/{kind}"})


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_prometheus_operator_objects_match_their_schema(variant: str) -> None:
    """The ServiceMonitor and the PrometheusRule match the CRD schema subset; rule group names
    are unique and alert names too."""
    objects = render(variant)
    for kind in sorted(CUSTOM_KINDS):
        obj = one(objects, kind)
        errors = [e.message for e in crd_validator(kind).iter_errors(obj)]
        assert errors == [], f"{kind}: {errors}"
    groups = one(objects, "PrometheusRule")["spec"]["groups"]
    names = [g["name"] for g in groups]
    alerts = [r["alert"] for g in groups for r in g["rules"]]
    assert len(set(names)) == len(names)
    assert len(set(alerts)) == len(alerts)


@pytest.mark.parametrize(
    ("kind", "path", "value"),
    [
        ("ServiceMonitor", ("spec", "endpoints", 0, "intervall"), "30s"),
        ("ServiceMonitor", ("spec", "endpoints", 0, "interval"), "30 seconds"),
        ("ServiceMonitor", ("spec", "selector"), None),
        ("PrometheusRule", ("spec", "groups", 0, "rules", 0, "fore"), "5m"),
        ("PrometheusRule", ("spec", "groups", 0, "rules", 0, "record"), "also_a_record"),
        ("PrometheusRule", ("spec", "groups", 0, "rules", 0, "expr"), None),
    ],
)
def test_the_crd_schema_refuses_a_misspelled_or_missing_field(
    kind: str, path: tuple[str | int, ...], value: object
) -> None:
    """The schema is strict: a misspelled field, a bad duration, a rule both alert and record,
    or a missing required field fails (so the check above can fail)."""
    obj = json.loads(json.dumps(one(render("base"), kind)))
    parent = obj
    for step in path[:-1]:
        parent = parent[step]
    if value is None:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    assert list(crd_validator(kind).iter_errors(obj)), f"{path} = {value!r} passed"


# --------------------------------------------------------------------------------------------
# Policy: the pod, probes, shutdown and RBAC rules of docs/deploy/kubernetes.md
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_pods_run_under_the_restricted_security_profile(variant: str) -> None:
    """Pod and every container: non-root numeric user 10001, RuntimeDefault seccomp, no
    privilege escalation, all capabilities dropped, read-only root with an emptyDir /tmp, no
    service links, no host namespaces or paths, and no automounted service-account token."""
    objects = render(variant)
    spec = pod_spec(objects)
    pod = spec["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert (pod["runAsUser"], pod["runAsGroup"], pod["fsGroup"]) == (IMAGE_USER,) * 3
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["enableServiceLinks"] is False
    assert spec["automountServiceAccountToken"] is False
    assert one(objects, "ServiceAccount")["automountServiceAccountToken"] is False
    assert not {"hostNetwork", "hostPID", "hostIPC", "hostUsers"} & set(spec)
    assert all("hostPath" not in v for v in spec["volumes"])
    volumes = {v["name"]: v for v in spec["volumes"]}
    for container in all_containers(spec):
        sc = container["securityContext"]
        assert sc.get("runAsNonRoot", True) is True, container["name"]
        assert sc.get("runAsUser", IMAGE_USER) == IMAGE_USER, container["name"]
        assert sc["allowPrivilegeEscalation"] is False, container["name"]
        assert sc.get("privileged", False) is False, container["name"]
        assert sc["readOnlyRootFilesystem"] is True, container["name"]
        assert sc["capabilities"] == {"drop": ["ALL"]}, container["name"]
        assert sc.get("seccompProfile", pod["seccompProfile"]) == {"type": "RuntimeDefault"}
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert "emptyDir" in volumes[mounts["/tmp"]], "/tmp must be a writable emptyDir"
        limits, requests = container["resources"]["limits"], container["resources"]["requests"]
        assert {"cpu", "memory"} <= set(limits) & set(requests), container["name"]


class _ProbeControl:
    """Just enough of a DaemonControl for the health routes."""

    def __init__(self, health: Health) -> None:
        self.health = health

    def target_names(self) -> list[str]:
        return []

    async def status(self) -> list[TargetStatus]:
        return []

    def request_rotation(self, target: str, *, emergency: bool) -> str:
        raise PermissionError(target)

    async def rotation_view(self, rotation_id: str) -> dict[str, object] | None:
        return None


@pytest.mark.parametrize("variant", sorted(VARIANTS))
async def test_probes_hit_the_daemons_health_routes(variant: str) -> None:
    """Startup and liveness probe /livez, readiness /readyz, on the named port 9402; rotator's
    own HTTP app answers those paths (200 when live and ready, 503 for /readyz when not)."""
    objects = render(variant)
    container = rotator_container(objects)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    probes = {
        name: container[f"{name}Probe"]["httpGet"] for name in ("startup", "liveness", "readiness")
    }
    assert {name: get["path"] for name, get in probes.items()} == {
        "startup": "/livez",
        "liveness": "/livez",
        "readiness": "/readyz",
    }
    assert {ports[get["port"]] for get in probes.values()} == {PROBE_PORT}
    service = one(objects, "Service")["spec"]["ports"]
    assert [ports[p["targetPort"]] for p in service] == [PROBE_PORT]
    monitor = one(objects, "ServiceMonitor")["spec"]["endpoints"]
    assert [e["port"] for e in monitor] == [p["name"] for p in service]
    assert [e["path"] for e in monitor] == ["/metrics"]

    health = Health(ready=True)
    app = build_app(_ProbeControl(health), admin_token=None, registry=Metrics().registry)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://pod") as client:
        for get in probes.values():
            assert (await client.get(get["path"])).status_code == 200, get["path"]
        assert (await client.get(monitor[0]["path"])).status_code == 200
        health.ready = False
        assert (await client.get(probes["readiness"]["path"])).status_code == 503


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_shutdown_and_startup_budgets_cover_the_daemons(variant: str) -> None:
    """terminationGracePeriodSeconds exceeds the longest stop of the daemon, computed from its
    own timings (drain, cancellation, tasks) and the slowest leader release of any election, and
    the startup probe allows a minute at least before liveness takes over."""
    spec = pod_spec(render(variant))
    release = max(release_bound(e, Timing()) for e in ("none", "postgres", "kubernetes"))
    assert spec["terminationGracePeriodSeconds"] >= Timings().stop_bound(release) + STOP_MARGIN
    startup = rotator_container(render(variant))["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 60


def secret_data(objects: list[dict[str, Any]], name: str, key: str) -> str:
    secret = by_name(objects, "Secret")[name]
    return base64.b64decode(secret["data"][key]).decode()


def pod_environment(objects: list[dict[str, Any]]) -> dict[str, str]:
    """The rotator container's environment, Secret references resolved from the render."""
    env: dict[str, str] = {}
    for var in rotator_container(objects).get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
        else:
            ref = var["valueFrom"]["secretKeyRef"]
            env[var["name"]] = secret_data(objects, ref["name"], ref["key"])
    return env


def mounted_source(objects: list[dict[str, Any]], path: str) -> tuple[dict[str, Any], str]:
    """(the volume mounted over ``path``'s directory, the file's name in it)."""
    spec = pod_spec(objects)
    where = PurePosixPath(path)
    mounts = {m["mountPath"]: m for m in rotator_container(objects)["volumeMounts"]}
    mount = mounts.get(str(where.parent))
    assert mount is not None, f"nothing is mounted at {where.parent} (for {path})"
    assert mount.get("readOnly") is True, f"{where.parent} must be mounted read-only"
    volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    return volume, where.name


def pod_config(variant: str, tmp_path: Path) -> tuple[Config, dict[str, Any]]:
    """rotator.yaml of the ConfigMap loaded by rotator's own loader with the pod's environment,
    its admin_key_file read from the Secret the pod mounts there."""
    objects = render(variant)
    env = pod_environment(objects)
    config_path = PurePosixPath(env["ROTATOR_CONFIG"])
    volume, filename = mounted_source(objects, str(config_path))
    config_map = by_name(objects, "ConfigMap")[volume["configMap"]["name"]]
    document = yaml.safe_load(config_map["data"][filename])

    secret_volume, key = mounted_source(objects, document["mistral"]["admin_key_file"])
    admin_key = tmp_path / "mistral-admin-key"
    admin_key.write_text(secret_data(objects, secret_volume["secret"]["secretName"], key))
    document["mistral"]["admin_key_file"] = str(admin_key)
    local = tmp_path / filename
    local.write_text(yaml.safe_dump(document))
    return load_config(local, env=env), document


def projected_token(volume: Mapping[str, Any], filename: str) -> dict[str, Any]:
    """The serviceAccountToken source of a projected volume that writes ``filename``."""
    sources = volume["projected"]["sources"]
    token = next(s["serviceAccountToken"] for s in sources if "serviceAccountToken" in s)
    assert token["path"] == filename
    assert token["expirationSeconds"] <= 3600
    return dict(token)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_the_config_map_loads_with_rotators_loader_and_fits_the_pod(
    variant: str, tmp_path: Path
) -> None:
    """The ConfigMap's rotator.yaml loads with ``load_config`` under the pod's environment,
    listens on all interfaces at the probe port, reads the admin key from the mounted Secret
    and the Vault token from a projected, audience-bound, short-lived token."""
    cfg, _ = pod_config(variant, tmp_path)
    assert (cfg.server.host, cfg.server.port) == ("0.0.0.0", PROBE_PORT)
    vault = cfg.stores["vault"]
    assert isinstance(vault, VaultStore)
    assert isinstance(vault.auth, KubernetesAuth)
    volume, filename = mounted_source(render(variant), str(vault.auth.jwt_path))
    assert projected_token(volume, filename)["audience"] == "vault"


def test_base_is_one_pod_on_sqlite_without_election(tmp_path: Path) -> None:
    """Base: one replica, strategy Recreate (never two pods), election none, SQLite state on
    the volume claim mounted at the database's directory, no PDB, no API token mounted."""
    objects = render("base")
    deployment = one(objects, "Deployment")["spec"]
    assert deployment["replicas"] == 1
    assert deployment["strategy"] == {"type": "Recreate"}
    cfg, _ = pod_config("base", tmp_path)
    assert cfg.leader.election == "none"
    assert cfg.state.url.startswith("sqlite:////")
    database = PurePosixPath(cfg.state.url.removeprefix("sqlite:///"))
    mounts = {m["mountPath"]: m["name"] for m in rotator_container(objects)["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec(objects)["volumes"]}
    claim = volumes[mounts[str(database.parent)]]["persistentVolumeClaim"]["claimName"]
    assert claim in by_name(objects, "PersistentVolumeClaim")
    assert not [o for o in objects if o["kind"] == "PodDisruptionBudget"]
    assert str(SERVICE_ACCOUNT_DIR) not in mounts


def test_ha_runs_two_replicas_on_postgresql_with_a_lease(tmp_path: Path) -> None:
    """HA: two replicas rolled one at a time without losing one, PostgreSQL state from the
    Secret, the Kubernetes Lease elector with the token, CA and namespace it reads, a PDB
    keeping one pod, replicas spread over nodes, and no volume claim."""
    objects = render("ha")
    deployment = one(objects, "Deployment")["spec"]
    assert deployment["replicas"] == 2
    assert deployment["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
    }
    cfg, _ = pod_config("ha", tmp_path)
    assert cfg.state.url.startswith("postgresql+psycopg://")
    assert cfg.leader.election == "kubernetes"

    volume, filename = mounted_source(objects, str(SERVICE_ACCOUNT_DIR / "token"))
    assert "audience" not in projected_token(volume, filename)  # the API server's own
    written = {
        item["path"]
        for source in volume["projected"]["sources"]
        for item in next(iter(source.values())).get("items", [])
    }
    assert written == {"ca.crt", "namespace"}

    pdb = one(objects, "PodDisruptionBudget")["spec"]
    assert pdb["minAvailable"] == 1
    labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert pdb["selector"]["matchLabels"].items() <= labels.items()
    spread = pod_spec(objects)["topologySpreadConstraints"]
    assert "kubernetes.io/hostname" in {c["topologyKey"] for c in spread}
    assert not [o for o in objects if o["kind"] == "PersistentVolumeClaim"]
    mounts = {m["mountPath"] for m in rotator_container(objects)["volumeMounts"]}
    assert "/var/lib/rotator" not in mounts


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_rbac_grants_only_the_leader_lease(variant: str, tmp_path: Path) -> None:
    """The only grants: get/update/patch on the Lease named by leader.lease_name, and create on
    leases (RBAC cannot scope create by name), bound to the pod's service account; no cluster
    role."""
    objects = render(variant)
    cfg, _ = pod_config(variant, tmp_path)
    assert not [o for o in objects if o["kind"] in {"ClusterRole", "ClusterRoleBinding"}]
    role = one(objects, "Role")
    rules = sorted(role["rules"], key=lambda r: r["verbs"])
    assert rules == [
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "verbs": ["create"],
        },
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": [cfg.leader.lease_name],
            "verbs": ["get", "update", "patch"],
        },
    ]
    binding = one(objects, "RoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    account = pod_spec(objects)["serviceAccountName"]
    namespace = role["metadata"]["namespace"]
    subject = {"kind": "ServiceAccount", "name": account, "namespace": namespace}
    assert binding["subjects"] == [subject]
    assert account in by_name(objects, "ServiceAccount")


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_reference_of_the_pod_resolves(variant: str) -> None:
    """Every ConfigMap, Secret and claim the pod names is rendered under that (hashed) name,
    and the Deployment, Service, ServiceMonitor and PDB select the pod's labels."""
    objects = render(variant)
    spec = pod_spec(objects)
    for volume in spec["volumes"]:
        if "configMap" in volume:
            assert volume["configMap"]["name"] in by_name(objects, "ConfigMap")
        if "secret" in volume:
            assert volume["secret"]["secretName"] in by_name(objects, "Secret")
        if "persistentVolumeClaim" in volume:
            name = volume["persistentVolumeClaim"]["claimName"]
            assert name in by_name(objects, "PersistentVolumeClaim")
    for var in rotator_container(objects).get("env", []):
        if "valueFrom" in var:
            ref = var["valueFrom"]["secretKeyRef"]
            assert ref["key"] in by_name(objects, "Secret")[ref["name"]]["data"]
    labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    selectors = [
        one(objects, "Deployment")["spec"]["selector"]["matchLabels"],
        one(objects, "Service")["spec"]["selector"],
        one(objects, "ServiceMonitor")["spec"]["selector"]["matchLabels"],
    ]
    service_labels = one(objects, "Service")["metadata"]["labels"]
    for selector in selectors:
        assert selector.items() <= labels.items()
    assert selectors[2].items() <= service_labels.items()


def test_the_shipped_secrets_are_placeholders() -> None:
    """The generated Secrets hold placeholders saying so, never anything shaped like a key."""
    objects = render("ha")
    values = [
        base64.b64decode(value).decode()
        for secret in by_name(objects, "Secret").values()
        for value in secret["data"].values()
    ]
    assert len(values) == 2
    for value in values:
        assert "REPLACE-ME" in value
        assert not re.search(r"\b[A-Za-z0-9]{32}\b", value)


def render_overlay(overlay: Path, extra: dict[str, Any]) -> list[dict[str, Any]]:
    """``kubectl kustomize`` of an overlay of the base in namespace rotator, plus ``extra``."""
    overlay.mkdir(parents=True, exist_ok=True)
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namespace": "rotator",
        "resources": [os.path.relpath(VARIANTS["base"], overlay)],
        **extra,
    }
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    done = subprocess.run(
        [kubectl(), "kustomize", str(overlay)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def test_a_user_overlay_replaces_the_placeholder_secret(tmp_path: Path) -> None:
    """The documented overlay (docs/deploy/kubernetes.md) swaps the admin key in: the pod
    mounts a Secret holding the operator's file and the placeholder is gone."""
    overlay = tmp_path / "my-rotator"
    overlay.mkdir()
    (overlay / "mistral-admin-key").write_text("operator-supplied-value\n")
    objects = render_overlay(
        overlay,
        {
            "secretGenerator": [
                {"name": "rotator-mistral", "behavior": "replace", "files": ["mistral-admin-key"]}
            ],
        },
    )
    volume = next(v for v in pod_spec(objects)["volumes"] if v["name"] == "mistral")
    name = volume["secret"]["secretName"]
    assert secret_data(objects, name, "mistral-admin-key") == "operator-supplied-value\n"
    assert "REPLACE-ME" not in yaml.safe_dump_all(objects)


def test_the_documented_patch_drops_the_placeholder_secret(tmp_path: Path) -> None:
    """The guide's ``$patch: delete`` (docs/deploy/kubernetes.md, "Secrets"), in an overlay of
    the base, renders no Secret at all and leaves the pod mounting the plain name
    ``rotator-mistral``, the Secret the operator created another way."""
    guide = (ROOT / "docs/deploy/kubernetes.md").read_text()
    block = re.search(r"<!-- delete-mistral-secret -->\s*```yaml\n(.*?)```", guide, re.DOTALL)
    assert block, "the guide's patch was not found"
    patch = yaml.safe_load(textwrap.dedent(block.group(1)))
    objects = render_overlay(tmp_path / "my-rotator", patch)
    assert by_name(objects, "Secret") == {}
    volume = next(v for v in pod_spec(objects)["volumes"] if v["name"] == "mistral")
    assert volume["secret"]["secretName"] == "rotator-mistral"


def test_postgres_tls_verifies_against_a_mounted_ca(tmp_path: Path) -> None:
    """HA: the state URL's verify-full names its CA with sslrootcert (libpq would otherwise look
    in $HOME/.postgresql, which the image's user has not), and that file is mounted read-only."""
    cfg, _ = pod_config("ha", tmp_path)
    query = dict(parse_qsl(urlsplit(cfg.state.url).query))
    assert query["sslmode"] in {"verify-full", "verify-ca"}
    root = query.get("sslrootcert")
    assert root, "sslmode=verify-full without sslrootcert"
    if root != "system":
        volume, filename = mounted_source(render("ha"), root)
        items = volume["configMap"]
        assert items["name"] in by_name(render("ha"), "ConfigMap")
        config_map = by_name(render("ha"), "ConfigMap")[items["name"]]
        assert filename in config_map["data"]


def test_the_in_cluster_vault_example_shows_where_its_ca_goes(tmp_path: Path) -> None:
    """The base's https Vault store carries a commented ``ca_cert:``, which, uncommented and
    pointed at a real CA bundle, loads with rotator's loader."""
    _, document = pod_config("base", tmp_path)
    config_map = one(render("base"), "ConfigMap")
    text = next(iter(config_map["data"].values()))
    match = re.search(r"^( +)# (ca_cert: (\S+))$", text, re.MULTILINE)
    assert match, "no commented ca_cert: in the base's rotator.yaml"
    assert document["stores"]["vault"]["url"].startswith("https://")
    ca = tmp_path / "vault-ca.crt"
    shutil.copy(certifi.where(), ca)
    uncommented = text.replace(match.group(0), f"{match.group(1)}ca_cert: {ca}")
    data = yaml.safe_load(uncommented)
    assert data["stores"]["vault"]["ca_cert"] == str(ca)
    data["mistral"]["admin_key_file"] = document["mistral"]["admin_key_file"]
    local = tmp_path / "uncommented.yaml"
    local.write_text(yaml.safe_dump(data))
    vault = load_config(local, env={}).stores["vault"]
    assert isinstance(vault, VaultStore)
    assert vault.ca_cert == ca


# --------------------------------------------------------------------------------------------
# Alerts
# --------------------------------------------------------------------------------------------


def anchors(markdown: str) -> set[str]:
    """GitHub-style anchors of a Markdown file's headings."""
    found = set()
    for line in markdown.splitlines():
        heading = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading:
            text = re.sub(r"[^\w\- ]", "", heading.group(1).lower())
            found.add(text.replace(" ", "-"))
    return found


def test_every_alert_is_documented_and_links_an_existing_runbook() -> None:
    """Each alert has a severity, a summary, a description and a runbook_url naming a file of
    this repository (and an existing heading when it has an anchor); the alerts
    docs/deploy/kubernetes.md#metrics-dashboard-and-alerts lists are there."""
    rule = one(render("base"), "PrometheusRule")
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    assert {
        "RotatorRotationOverdue",
        "RotatorKeyExpiringSoon",
        "RotatorKeyNotReady",
        "RotatorNoLeader",
        "RotatorRotationFailed",
        "RotatorRotationStuck",
        "RotatorOldKeysNotRevoked",
        "RotatorScrapeFailing",
    } <= set(alerts)
    for name, alert in alerts.items():
        assert alert["labels"]["severity"] in {"warning", "critical"}, name
        notes = alert["annotations"]
        assert notes["summary"].strip(), name
        assert notes["description"].strip(), name
        path, _, anchor = notes["runbook_url"].partition("#")
        assert path.startswith("docs/"), name
        assert path.endswith(".md"), name
        target = ROOT / path
        assert target.is_file(), f"{name}: runbook {path} does not exist"
        if anchor:
            assert anchor in anchors(target.read_text()), f"{name}: no heading #{anchor}"


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_alerts_select_the_job_the_service_monitor_produces(variant: str) -> None:
    """Every rule selects job="<value>", the value of the Service label the ServiceMonitor takes
    the job from (so the rules see the scraped series, whatever the Service's name)."""
    objects = render(variant)
    monitor = one(objects, "ServiceMonitor")["spec"]
    job = one(objects, "Service")["metadata"]["labels"][monitor["jobLabel"]]
    groups = one(objects, "PrometheusRule")["spec"]["groups"]
    for rule in (r for g in groups for r in g["rules"]):
        selected = set(re.findall(r'\bjob\s*=~?\s*"([^"]*)"', rule["expr"]))
        assert selected == {job}, f"{rule['alert']}: selects job {selected}, scraped as {job!r}"


# --------------------------------------------------------------------------------------------
# Commands named in the alerts and the deployment guides
# --------------------------------------------------------------------------------------------

DOCUMENTED = [
    ROOT / "deploy/kubernetes/base/prometheusrule.yaml",
    *sorted((ROOT / "docs/deploy").glob("*.md")),
    ROOT / "systemd/rotator.service",
]
_FLAGS = frozenset({"--version", "--strict-permissions"})  # rotator options without a value
_INVOCATION = re.compile(r"(?:^|(?<=[\s`/(]))rotator(?=((?:[ \t]+[^\s`|&;#)]+)+))", re.MULTILINE)


def rotator_commands(text: str) -> list[list[str]]:
    """The argument lists of every ``rotator <command> …`` written in ``text``: an alert
    template (``{{ $labels.target }}``) counts as one argument, a line continuation joins."""
    text = re.sub(r"\{\{[^}]*\}\}", "TARGET", text.replace("\\\n", " "))
    subcommands = set(typer_group().commands)
    found = []
    for match in _INVOCATION.finditer(text):
        words = match.group(1).split()
        index = 0
        while index < len(words) and words[index].startswith("-") and words[index] != "--":
            index += 1 if "=" in words[index] or words[index] in _FLAGS else 2
        if index < len(words) and words[index] in subcommands:
            found.append(words)
    return found


@cache
def typer_group() -> Any:
    from typer.main import get_command

    from rotator.cli import app

    return get_command(app)


def cli_problem(argv: list[str]) -> str | None:
    """Why rotator's command line would refuse ``argv`` (None: it parses)."""
    group = typer_group()
    try:
        ctx = group.make_context("rotator", list(argv))
        name = argv[len(argv) - len(ctx.args) - 1]
        group.get_command(ctx, name).make_context(name, list(ctx.args), parent=ctx)
    except Exception as exc:  # click's UsageError and friends
        return f"{type(exc).__name__}: {exc}"
    return None


def test_the_command_checker_refuses_what_the_cli_refuses() -> None:
    """The checker accepts real invocations and refuses an extra argument or an unknown option."""
    assert cli_problem(["--config", "/etc/rotator/rotator.yaml", "status"]) is None
    assert cli_problem(["rotate", "prod-backend"]) is None
    assert cli_problem(["revoke-due", "prod-backend"]) is not None
    assert cli_problem(["history", "--target", "x"]) is not None
    text = "run `rotator status {{ $labels.target }}` or `docker exec rotator rotator history`"
    assert rotator_commands(text) == [["status", "TARGET"], ["history"]]


@pytest.mark.parametrize("path", DOCUMENTED, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_documented_rotator_command_parses(path: Path) -> None:
    """Every ``rotator …`` command in the alert annotations, the deployment guides and the unit
    is one rotator's command line accepts (subcommand, options and arguments)."""
    commands = rotator_commands(path.read_text())
    assert commands, f"{path.name}: no rotator command found (the extraction is broken)"
    problems = [f"rotator {' '.join(c)}: {cli_problem(c)}" for c in commands if cli_problem(c)]
    assert not problems, "\n".join(problems)
