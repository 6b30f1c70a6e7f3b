#
# taggram images. Targets (the last stage is the default):
#   docker build -t taggram:0.1.0 .                        CPU image (stage `cpu`)
#   docker build -t taggram:0.1.0-gpu --target gpu .       GPU image: onnxruntime-gpu + CUDA 13/cuDNN 9 from wheels
#
# No `# syntax=` line: the engine's built-in Dockerfile frontend builds this file (RUN --mount included), so a
# build pulls no frontend image. Needs BuildKit (DOCKER_BUILDKIT=1 or the buildx plugin): the legacy builder would
# build every stage, the GPU ones included, before --target.
#
# Stages:
#   export    Python + the `export` extra (onnx, librosa): builds /models/*.onnx + manifests from the musicnn wheel
#             (PyPI) and the committed reference fixtures. Never shipped: librosa stays here.
#   venv      /opt/venv with the runtime requirements pinned by constraints.txt, and the app (non-editable).
#   gpu-venv  the same with onnxruntime-gpu and the CUDA/cuDNN runtimes as Python wheels instead of onnxruntime.
#   gpu       runtime image on the same slim Python base as `cpu`: /opt/venv + /models, non-root. No vendor CUDA
#             base: the NVIDIA driver (libcuda) comes from the node through the NVIDIA container toolkit.
#   cpu       runtime image: /opt/venv + /models, non-root. No compiler, no librosa, no pip.
#
# What the build is given for the network, none of it in a layer of the images (docs/operations.md, "Building the
# images", has the online and air-gapped commands):
#   --build-arg PYTHON_IMAGE=...        the base of every stage (default: the official Python 3.11 slim image)
#   --secret id=ca-certificates,src=... a CA bundle for pip behind a TLS-intercepting proxy
#   --secret id=pip-index-url,src=...   a file holding the package index URL (a mirror; credentials allowed)
#   deploy/wheels/                      local wheels every pip step may take (bind-mounted, never copied)
#
# Both runtime images run with a read-only root filesystem: the only writable path they need is TMPDIR (/tmp),
# where uploads larger than 8 MiB spill (service/api/upload.py). Mount a tmpfs or a volume there (compose: tmpfs;
# Kubernetes: emptyDir). Bytecode is compiled at build time and PYTHONDONTWRITEBYTECODE stops any attempt to write
# more; PyAV and prometheus_client (single-process mode) write nothing. ORT_DISABLE_TELEMETRY=1: ONNX Runtime's
# opt-out of its POSIX telemetry (1.29+), which would otherwise try to persist an id and upload events.
# `tests/system/test_image.py` (make image-test) builds, runs and checks the `cpu` image.
#
# Pin the base by digest too for reproducible builds (--build-arg PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:...):
# `docker buildx imagetools inspect python:3.11-slim-bookworm` prints it.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS export

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/export/bin:$PATH
WORKDIR /src
RUN python3 -m venv /opt/export

COPY pyproject.toml constraints.txt ./
COPY deploy/requirements.py deploy/requirements.py
RUN --mount=type=secret,id=ca-certificates --mount=type=secret,id=pip-index-url \
    --mount=type=bind,source=deploy/wheels,target=/wheels \
    --mount=type=bind,source=deploy/build-env.sh,target=/usr/local/bin/build-env \
    python deploy/requirements.py --extra export > /tmp/export-requirements.txt \
    && build-env pip install --no-cache-dir -c constraints.txt -r /tmp/export-requirements.txt

# The build key and the parity figures in each manifest depend on the export code and the reference fixtures.
# The musicnn wheel comes with `pip download` (deploy/wheels/ first): the same network settings apply.
COPY model_export/ model_export/
COPY tests/fixtures/reference/ tests/fixtures/reference/
# The export also writes models/<name>.parity.npz (the bf16 parity guard's patches) in the service's own format:
# only that module of service/ (numpy alone), so a change elsewhere in the service does not rerun the export.
COPY service/__init__.py service/__init__.py
COPY service/artefacts/__init__.py service/artefacts/parity_patches.py service/artefacts/
RUN --mount=type=secret,id=ca-certificates --mount=type=secret,id=pip-index-url \
    --mount=type=bind,source=deploy/wheels,target=/wheels \
    --mount=type=bind,source=deploy/build-env.sh,target=/usr/local/bin/build-env \
    build-env python -m model_export --out /models --cache /tmp/musicnn \
    && rm -rf /tmp/musicnn

# ---------------------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS venv

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
WORKDIR /src
RUN python3 -m venv /opt/venv

COPY pyproject.toml constraints.txt README.md ./
COPY deploy/requirements.py deploy/requirements.py
RUN --mount=type=secret,id=ca-certificates --mount=type=secret,id=pip-index-url \
    --mount=type=bind,source=deploy/wheels,target=/wheels \
    --mount=type=bind,source=deploy/build-env.sh,target=/usr/local/bin/build-env \
    python deploy/requirements.py > /tmp/requirements.txt \
    && build-env pip install --no-cache-dir -c constraints.txt -r /tmp/requirements.txt

# The app itself, non-editable (service/ + taxonomies into site-packages, the `taggram` console script); then pip
# and setuptools leave the venv: the runtime image installs nothing.
COPY service/ service/
RUN --mount=type=secret,id=ca-certificates --mount=type=secret,id=pip-index-url \
    --mount=type=bind,source=deploy/wheels,target=/wheels \
    --mount=type=bind,source=deploy/build-env.sh,target=/usr/local/bin/build-env \
    build-env pip install --no-cache-dir --no-deps . \
    && pip uninstall --yes setuptools pip

# ---------------------------------------------------------------------------------------------------------------
# onnxruntime-gpu 1.31 is built for CUDA 13 + cuDNN 9; its `cuda` and `cudnn` extras pull those runtimes as NVIDIA's
# Python wheels (nvidia-cuda-runtime, -nvrtc, -cufft, -curand, nvidia-cudnn-cu13 with cuBLAS), which the service
# loads with onnxruntime.preload_dlls() (service/engine/run.py). Needs an NVIDIA driver >= 580 on the node.
FROM ${PYTHON_IMAGE} AS gpu-venv

ARG ONNXRUNTIME_GPU_VERSION=1.31.1
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
WORKDIR /src
RUN python3 -m venv /opt/venv

COPY pyproject.toml constraints.txt README.md ./
COPY deploy/requirements.py deploy/requirements.py
RUN --mount=type=secret,id=ca-certificates --mount=type=secret,id=pip-index-url \
    --mount=type=bind,source=deploy/wheels,target=/wheels \
    --mount=type=bind,source=deploy/build-env.sh,target=/usr/local/bin/build-env \
    python deploy/requirements.py --exclude onnxruntime > /tmp/requirements.txt \
    && build-env pip install --no-cache-dir -c constraints.txt -r /tmp/requirements.txt \
        "onnxruntime-gpu[cuda,cudnn]==${ONNXRUNTIME_GPU_VERSION}"

COPY service/ service/
RUN --mount=type=secret,id=ca-certificates --mount=type=secret,id=pip-index-url \
    --mount=type=bind,source=deploy/wheels,target=/wheels \
    --mount=type=bind,source=deploy/build-env.sh,target=/usr/local/bin/build-env \
    build-env pip install --no-cache-dir --no-deps . \
    && pip uninstall --yes setuptools pip

# ---------------------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS gpu

RUN groupadd --system --gid 10001 taggram \
    && useradd --system --uid 10001 --gid taggram --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin taggram

COPY --from=gpu-venv /opt/venv /opt/venv
COPY --from=export /models /models

# CUDA_CACHE_PATH: the CUDA driver's JIT cache would go to $HOME/.nv; /tmp is the writable path.
# NVIDIA_*: what the NVIDIA container toolkit mounts into the container (the driver's compute libraries).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TMPDIR=/tmp \
    HOME=/tmp \
    CUDA_CACHE_PATH=/tmp/.nv/ComputeCache \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    ORT_DISABLE_TELEMETRY=1 \
    FORWARDED_ALLOW_IPS=127.0.0.1,::1 \
    TAGGRAM_HOST=0.0.0.0 \
    TAGGRAM_PORT=8000 \
    TAGGRAM_MODELS_DIR=/models \
    TAGGRAM_DEVICE=cuda \
    TAGGRAM_CUDA_BATCH_SIZES=1,4,16 \
    TAGGRAM_SHUTDOWN_GRACE_SECONDS=30

USER 10001:10001
EXPOSE 8000
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --start-period=180s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('TAGGRAM_PORT', '8000'), timeout=4)"]
CMD ["taggram", "serve"]

# ---------------------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS cpu

LABEL org.opencontainers.image.title="taggram" \
      org.opencontainers.image.description="Music tagging service: musicnn taggers as ONNX graphs behind FastAPI" \
      org.opencontainers.image.licenses="ISC"

RUN groupadd --system --gid 10001 taggram \
    && useradd --system --uid 10001 --gid taggram --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin taggram

COPY --from=venv /opt/venv /opt/venv
COPY --from=export /models /models

# FORWARDED_ALLOW_IPS is read by uvicorn itself (uvicorn.Config: forwarded_allow_ips=None -> this variable) and
# decides whose X-Forwarded-For/-Proto headers are trusted (`taggram serve` turns proxy_headers on): set it to the
# address or CIDR of your reverse proxy / ingress. The default trusts only the loopback.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TMPDIR=/tmp \
    HOME=/tmp \
    ORT_DISABLE_TELEMETRY=1 \
    FORWARDED_ALLOW_IPS=127.0.0.1,::1 \
    TAGGRAM_HOST=0.0.0.0 \
    TAGGRAM_PORT=8000 \
    TAGGRAM_MODELS_DIR=/models \
    TAGGRAM_DEVICE=cpu \
    TAGGRAM_SHUTDOWN_GRACE_SECONDS=30

USER 10001:10001
EXPOSE 8000
# SIGTERM: /readyz turns 503, the server keeps serving for TAGGRAM_SHUTDOWN_DRAIN_SECONDS (default 0), then stops
# accepting and gives in-flight requests up to TAGGRAM_SHUTDOWN_GRACE_SECONDS; then the app shuts down. Give the
# container more than drain + grace to stop (compose stop_grace_period, Kubernetes terminationGracePeriodSeconds).
STOPSIGNAL SIGTERM
# Liveness only (the process serves HTTP). No curl in slim images: the venv's Python does the request.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('TAGGRAM_PORT', '8000'), timeout=4)"]
CMD ["taggram", "serve"]
