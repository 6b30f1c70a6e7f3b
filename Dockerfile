# syntax=docker/dockerfile:1
#
# taggram images. Targets (the last stage is the default):
#   docker build -t taggram:0.1.0 .                        CPU image (stage `cpu`)
#   docker build -t taggram:0.1.0-gpu --target gpu .       GPU image: CUDA 13 + cuDNN 9, onnxruntime-gpu
#
# Stages:
#   export    python:3.11-slim + the `export` extra (onnx, librosa): builds /models/*.onnx + manifests from the
#             musicnn wheel (PyPI) and the committed reference fixtures. Never shipped: librosa stays here.
#   venv      /opt/venv with the runtime requirements pinned by constraints.txt, and the app (non-editable).
#   gpu-venv  the same on the CUDA base (Ubuntu 24.04's Python 3.12), onnxruntime-gpu instead of onnxruntime.
#   gpu       runtime image on nvidia/cuda cudnn-runtime: /opt/venv + /models, non-root.
#   cpu       runtime image on python:3.11-slim: /opt/venv + /models, non-root. No compiler, no librosa, no pip.
#
# Both runtime images run with a read-only root filesystem: the only writable path they need is TMPDIR (/tmp),
# where uploads larger than 8 MiB spill (service/api/upload.py). Mount a tmpfs or a volume there (compose: tmpfs;
# Kubernetes: emptyDir). Bytecode is compiled at build time and PYTHONDONTWRITEBYTECODE stops any attempt to write
# more; ONNX Runtime, PyAV and prometheus_client (single-process mode) write nothing. See docs/operations.md.
#
# Base images are pinned by tag; pin by digest too (FROM python:3.11-slim-bookworm@sha256:...) for reproducible
# builds: `docker buildx imagetools inspect python:3.11-slim-bookworm` prints it.

# ---------------------------------------------------------------------------------------------------------------
FROM python:3.11-slim-bookworm AS export

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src

COPY pyproject.toml constraints.txt ./
COPY deploy/requirements.py deploy/requirements.py
RUN python deploy/requirements.py --extra export > /tmp/export-requirements.txt \
    && pip install --no-cache-dir -c constraints.txt -r /tmp/export-requirements.txt

# The build key and the parity figures in each manifest depend on the export code and the reference fixtures.
COPY model_export/ model_export/
COPY tests/fixtures/reference/ tests/fixtures/reference/
RUN python -m model_export --out /models --cache /tmp/musicnn \
    && rm -rf /tmp/musicnn

# ---------------------------------------------------------------------------------------------------------------
FROM python:3.11-slim-bookworm AS venv

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
WORKDIR /src
RUN python -m venv /opt/venv

COPY pyproject.toml constraints.txt README.md ./
COPY deploy/requirements.py deploy/requirements.py
RUN python deploy/requirements.py > /tmp/requirements.txt \
    && pip install --no-cache-dir -c constraints.txt -r /tmp/requirements.txt

# The app itself, non-editable (service/ + taxonomies into site-packages, the `taggram` console script); then pip
# and setuptools leave the venv: the runtime image installs nothing.
COPY service/ service/
RUN pip install --no-cache-dir --no-deps . \
    && pip uninstall --yes setuptools pip

# ---------------------------------------------------------------------------------------------------------------
# CUDA 13 + cuDNN 9: what onnxruntime-gpu 1.31 on PyPI is built for (its `cuda`/`cudnn` extras name
# nvidia-cuda-runtime~=13.0 and nvidia-cudnn-cu13~=9.0). Needs an NVIDIA driver >= 580 on the node.
FROM nvidia/cuda:13.1.1-cudnn-runtime-ubuntu24.04 AS gpu-venv

ARG ONNXRUNTIME_GPU_VERSION=1.31.1
ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
# Ubuntu 24.04's Python is 3.12 (the project needs >= 3.11); every pinned runtime wheel exists for cp312.
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3=3.12.* python3-venv=3.12.* \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv
WORKDIR /src

COPY pyproject.toml constraints.txt README.md ./
COPY deploy/requirements.py deploy/requirements.py
RUN python deploy/requirements.py --exclude onnxruntime > /tmp/requirements.txt \
    && pip install --no-cache-dir -c constraints.txt -r /tmp/requirements.txt "onnxruntime-gpu==${ONNXRUNTIME_GPU_VERSION}"

COPY service/ service/
RUN pip install --no-cache-dir --no-deps . \
    && pip uninstall --yes pip

# ---------------------------------------------------------------------------------------------------------------
FROM nvidia/cuda:13.1.1-cudnn-runtime-ubuntu24.04 AS gpu

ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3=3.12.* \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 taggram \
    && useradd --system --uid 10001 --gid taggram --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin taggram

COPY --from=gpu-venv /opt/venv /opt/venv
COPY --from=export /models /models

# CUDA_CACHE_PATH: the CUDA driver's JIT cache would go to $HOME/.nv, which does not exist; /tmp is writable.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TMPDIR=/tmp \
    HOME=/tmp \
    CUDA_CACHE_PATH=/tmp/.nv/ComputeCache \
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
FROM python:3.11-slim-bookworm AS cpu

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
