#!/bin/sh
# build-env: run one build step (pip install, pip download) with what the builder was given for the network, and
# nothing of it left in a layer. The Dockerfile bind-mounts this script and the secrets into a RUN step only:
#
#   /run/secrets/ca-certificates   BuildKit secret `ca-certificates`: a CA bundle (PEM) that replaces the default
#                                  one, for networks that intercept TLS (docker build --secret id=ca-certificates,src=...)
#   /run/secrets/pip-index-url     BuildKit secret `pip-index-url`: a file holding the package index URL (a mirror,
#                                  credentials allowed: a secret never reaches the image or its history)
#   /wheels                        deploy/wheels/ of the build context: local wheels pip may take (air-gapped builds)
#
# Without them: pip's defaults (PyPI, the image's CA bundle). docs/operations.md, "Building the images".
set -eu
if [ -s /run/secrets/ca-certificates ]; then
  export PIP_CERT=/run/secrets/ca-certificates SSL_CERT_FILE=/run/secrets/ca-certificates
fi
if [ -s /run/secrets/pip-index-url ]; then
  PIP_INDEX_URL=$(cat /run/secrets/pip-index-url)
  export PIP_INDEX_URL
fi
if [ -d /wheels ]; then
  export PIP_FIND_LINKS=/wheels
fi
exec "$@"
