"""The similarity index in Kubernetes: the rebuild Job (k8s/index-job.yaml) writes the volume that the API replicas
mount read-only (k8s/components/similar), from the volume the backfill Job writes. Rendered with kubectl's
kustomize and validated offline against the Kubernetes schemas (strict), like tests/system/test_deploy.py does."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from service.config import Settings
from service.offline.index_build import build_parser
from tests.system.test_deploy import K8S_VERSION, api_container, one, tool

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"


def documents(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def validate(doc: dict) -> None:
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        pytest.fail(f"{doc['kind']}/{doc['metadata']['name']}: {'.'.join(map(str, error.path))}: {error.message}")


def claims(pod: dict, container: dict) -> dict[str, tuple[str, bool]]:
    """mountPath → (claim name, read-only) for the container's PVC mounts."""
    volumes = {v["name"]: v for v in pod["volumes"]}
    out = {}
    for mount in container["volumeMounts"]:
        pvc = volumes[mount["name"]].get("persistentVolumeClaim")
        if pvc:
            out[mount["mountPath"]] = (pvc["claimName"], bool(mount.get("readOnly")))
    return out


def under(path: str, mounts: dict) -> tuple[str, bool]:
    (match,) = [m for m in mounts if path == m or path.startswith(m.rstrip("/") + "/")]
    return mounts[match]


def test_index_job_builds_from_the_backfill_volume_into_the_index_volume():
    docs = documents(K8S / "index-job.yaml")
    for doc in docs:
        validate(doc)
    job = one(docs, "Job", "taggram-index-build")
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"][:3] == ["taggram", "index", "build"]
    args = build_parser().parse_args(container["args"][2:])  # what the CLI will make of them
    mounts = claims(pod, container)
    backfill = one(documents(K8S / "backfill-job.yaml"), "Job")
    backfill_args = backfill["spec"]["template"]["spec"]["containers"][0]["args"]
    assert str(args.backfill_out) == backfill_args[backfill_args.index("--out") + 1]
    assert under(str(args.backfill_out), mounts) == ("taggram-backfill-out", True)
    assert under(str(args.output), mounts) == ("taggram-index", False)
    pvc = one(docs, "PersistentVolumeClaim", "taggram-index")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]  # one writer, replicas on every node
    assert container["securityContext"]["readOnlyRootFilesystem"] is True and pod["securityContext"]["runAsNonRoot"]


@pytest.fixture(scope="module")
def rendered_with_component() -> list[dict]:
    """k8s/overlays/cpu-similar: the CPU overlay plus the similar component."""
    done = subprocess.run(
        [tool("kubectl"), "kustomize", str(K8S / "overlays" / "cpu-similar")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def test_every_replica_mounts_the_index_volume_read_only_and_serves_it(rendered_with_component, monkeypatch):
    for doc in rendered_with_component:
        validate(doc)
        assert doc["metadata"].get("namespace") == "taggram"
    deployment = one(rendered_with_component, "Deployment", "taggram")
    container = api_container(deployment)
    env = {e["name"]: e["value"] for e in container["env"]}
    mounts = claims(deployment["spec"]["template"]["spec"], container)
    assert under(env["TAGGRAM_INDEX_DIR"], mounts) == ("taggram-index", True)
    job_args = one(documents(K8S / "index-job.yaml"), "Job")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert job_args[job_args.index("--output") + 1] == env["TAGGRAM_INDEX_DIR"]
    for key in [k for k in os.environ if k.startswith("TAGGRAM_")]:
        monkeypatch.delenv(key)
    for key in ("TAGGRAM_INDEX_DIR", "TAGGRAM_INDEX_POLL_SECONDS"):
        monkeypatch.setenv(key, env[key])
    settings = Settings()
    assert str(settings.index_dir) == env["TAGGRAM_INDEX_DIR"] and settings.index_poll_seconds > 0
