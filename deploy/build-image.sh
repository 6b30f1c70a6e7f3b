#!/usr/bin/env bash
# build-image.sh TARGET TAG: build one target of the Dockerfile (cpu, gpu) with what this machine can reach.
#
#   deploy/build-image.sh cpu taggram:0.1.0
#
# Online, on a laptop, this is `docker build --target TARGET -t TAG .`. Where the public pieces cannot be had,
# it adapts, and says so on stderr:
#   - the Python base: PYTHON_IMAGE if set; else python:3.11-slim-bookworm if present or pullable; else the local
#     stand-in from Debian's python3 (deploy/container-engine.sh standins), built when missing.
#   - the CA bundle: CA_BUNDLE (default: the system bundle, which holds Debian's local extra CAs) as the BuildKit
#     secret `ca-certificates`; PIP_INDEX_URL, when set, as the secret `pip-index-url`. Never a layer.
# Extra arguments after TAG go to `docker build` (e.g. --progress=plain, --no-cache).
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:?usage: $0 TARGET TAG [docker build arguments]}; tag=${2:?usage: $0 TARGET TAG}; shift 2
PUBLIC_PYTHON_IMAGE=python:3.11-slim-bookworm
STANDIN_PYTHON_IMAGE=local/python:3.11-bookworm
say() { printf '[build-image] %s\n' "$*" >&2; }

python_image() {
  if [ -n "${PYTHON_IMAGE:-}" ]; then printf '%s' "$PYTHON_IMAGE"; return; fi
  if docker image inspect "$PUBLIC_PYTHON_IMAGE" >/dev/null 2>&1 ||
     timeout 120 docker pull -q "$PUBLIC_PYTHON_IMAGE" >/dev/null 2>&1; then
    printf '%s' "$PUBLIC_PYTHON_IMAGE"; return
  fi
  say "$PUBLIC_PYTHON_IMAGE cannot be pulled: using the stand-in $STANDIN_PYTHON_IMAGE (Debian's python3)"
  docker image inspect "$STANDIN_PYTHON_IMAGE" >/dev/null 2>&1 || bash deploy/container-engine.sh standins >&2
  printf '%s' "$STANDIN_PYTHON_IMAGE"
}

args=(--target "$target" -t "$tag" --build-arg "PYTHON_IMAGE=$(python_image)")
ca=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
[ ! -s "$ca" ] || args+=(--secret "id=ca-certificates,src=$ca")
secrets_dir=$(mktemp -d); trap 'rm -rf "$secrets_dir"' EXIT
if [ -n "${PIP_INDEX_URL:-}" ]; then
  printf '%s' "$PIP_INDEX_URL" >"$secrets_dir/pip-index-url"
  args+=(--secret "id=pip-index-url,src=$secrets_dir/pip-index-url")
fi
say "docker build ${args[*]} $* ."
if docker buildx version >/dev/null 2>&1; then exec docker build "${args[@]}" "$@" .; fi
DOCKER_BUILDKIT=1 exec docker build "${args[@]}" "$@" .
