#!/usr/bin/env bash
# clean-machine.sh CHECKOUT [IMAGE ...]: the README's two commands on fresh machines, in containers (#21 item 0b).
#
#   bash deploy/clean-machine.sh .                       # this checkout, on Python 3.11 and a newer Python
#   bash deploy/clean-machine.sh /tmp/other-checkout local/python:3.13-trixie
#
# Each IMAGE is a clean machine with only Python, venv and make: none of this project's machines' set-up (no local
# wheel folder /opt/wheels, no /etc/pip.conf or /etc/xdg/pip, no pip cache), reaching only the public package
# indexes. The checkout's files (git's tracked and unignored files when it is a git checkout: no .venv, models,
# .cache) are copied in, then, as a user would: `make run` until /readyz answers (set-up, model export, serve),
# and the unit tier of `make test` (`pytest tests/unit` in the venv make built). One line per image:
# PASS/FAIL, seconds to ready, the unit tier's summary. Exit 1 if any failed; logs in $CLEAN_MACHINE_LOGS.
#
# Default images: the official python:3.11-slim-bookworm and python:3.13-slim-trixie when they can be pulled,
# else the stand-ins made from Debian's python3 (deploy/container-engine.sh standins): 3.11 (bookworm) and 3.13
# (trixie). CA_BUNDLE (default: the host's system bundle) is mounted read-only and trusted by pip, as a machine
# behind the same TLS-intercepting proxy would; nothing else of the host goes in.
set -euo pipefail
checkout=$(cd "${1:?usage: $0 CHECKOUT [IMAGE ...]}" && pwd); shift
cd "$(dirname "$0")/.."
LOGS=${CLEAN_MACHINE_LOGS:-/tmp/clean-machine}
CA=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
READY_TIMEOUT_SECONDS=${READY_TIMEOUT_SECONDS:-1800}   # pip over a proxy + the model export, on shared CPUs
mkdir -p "$LOGS"
say() { printf '[clean-machine] %s\n' "$*" >&2; }

pick() {  # the official image if present or pullable, else the Debian stand-in
  if docker image inspect "$1" >/dev/null 2>&1 || timeout 120 docker pull -q "$1" >/dev/null 2>&1; then echo "$1"
  else
    docker image inspect "$2" >/dev/null 2>&1 || bash deploy/container-engine.sh standins >&2
    echo "$2"
  fi
}
if [ $# -eq 0 ]; then
  set -- "$(pick python:3.11-slim-bookworm local/python:3.11-bookworm)" "$(pick python:3.13-slim-trixie local/python:3.13-trixie)"
fi

copy_checkout() {  # stdout: a tar of what a user's clone holds
  if git -C "$checkout" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    (cd "$checkout" && git ls-files -z --cached --others --exclude-standard | tar --null -T - -c --ignore-failed-read 2>/dev/null)
  else
    tar -C "$checkout" --exclude=./.venv --exclude=./models --exclude=./.cache -c .
  fi
}

# What runs inside: make run in the background until ready, then the unit tier with the venv make built.
INSIDE='
set -u
cd /src
for f in /etc/pip.conf /etc/xdg/pip /opt/wheels "$HOME/.config/pip" "$HOME/.cache/pip"; do
  [ ! -e "$f" ] || { echo "not a clean machine: $f exists"; exit 3; }
done
python3 --version
start=$(date +%s)
make run > /tmp/make-run.log 2>&1 &
while ! python3 -c "import urllib.request; urllib.request.urlopen(\"http://127.0.0.1:8000/readyz\", timeout=2)" 2>/dev/null; do
  if ! kill -0 $! 2>/dev/null || [ $(( $(date +%s) - start )) -gt '"$READY_TIMEOUT_SECONDS"' ]; then
    echo "make run: not ready"; tail -40 /tmp/make-run.log; exit 1
  fi
  sleep 2
done
echo "ready_seconds=$(( $(date +%s) - start ))"
kill -TERM $! 2>/dev/null; wait $! 2>/dev/null
.venv/bin/python -m pytest -q -p no:cacheprovider tests/unit 2>&1 | tail -3
'

failed=0
for image in "$@"; do
  name="taggram-clean-$(printf '%s' "$image" | tr -c 'a-z0-9' '-')"
  log="$LOGS/$name.log"
  docker rm -f "$name" >/dev/null 2>&1 || true
  docker run -d --name "$name" -v "$CA:/etc/ssl/certs/network-ca.pem:ro" \
    -e PIP_CERT=/etc/ssl/certs/network-ca.pem -e SSL_CERT_FILE=/etc/ssl/certs/network-ca.pem \
    "$image" sleep infinity >/dev/null
  docker exec "$name" mkdir -p /src
  copy_checkout | docker exec -i "$name" tar -x -C /src
  say "$image: make run, then the unit tier (log: $log)"
  if docker exec "$name" bash -c "$INSIDE" >"$log" 2>&1 && grep -q "ready_seconds=" "$log" && grep -qE "[0-9]+ passed" "$log" &&
     ! grep -qE "[0-9]+ (failed|error)" "$log"; then
    echo "PASS $image: $(grep -m1 '^Python' "$log"), make run ready after $(grep -o 'ready_seconds=[0-9]*' "$log" | cut -d= -f2) s; unit tier: $(grep -E '[0-9]+ passed' "$log" | tail -1)"
  else
    echo "FAIL $image: $(tail -5 "$log" | tr '\n' ' ')"; failed=1
  fi
  docker rm -f "$name" >/dev/null 2>&1 || true
done
exit $failed
