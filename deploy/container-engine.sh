#!/usr/bin/env bash
# container-engine.sh: a real Docker engine on this kind of machine (Debian 12 Firecracker VM, root, no systemd,
# cgroup v1 hybrid, internet limited to the package registries: no Docker Hub / ghcr / GitHub).
# Copied from the team's measured recipe (../shared/tools/container-engine.sh, round 3, FIELD-NOTES "Containers on
# these machines") so that CI and `make image-test` install and start what they need themselves. Changed here: no
# CA certificates baked into any image (builds get the host's bundle as the BuildKit secret `ca-certificates`), the
# Python stand-ins for Debian bookworm and trixie, and `ready`.
#
#   bash container-engine.sh all        install + start + base + smoke (idempotent: re-running skips what is done)
#   bash container-engine.sh install    apt: docker.io (dockerd 20.10 + containerd + runc), docker-compose v1, debootstrap;
#                                    + compose v2 and buildx CLI plugins taken from Debian trixie's .debs
#   bash container-engine.sh start      start dockerd by hand (no systemd here), wait until it answers
#   bash container-engine.sh base       debootstrap a minbase bookworm rootfs and `docker import` it as local/debian:bookworm
#   bash container-engine.sh smoke      build FROM the base (apt python3 + pip from PyPI), run an HTTP server on
#                                    127.0.0.1, and a two-service compose project whose services talk to each other
#   bash container-engine.sh standins   local stand-ins for the public Python bases that cannot be pulled here, from
#                                    Debian packages: local/python:3.11-bookworm (Debian's 3.11; the Dockerfile's
#                                    PYTHON_IMAGE) and local/python:3.13-trixie (Debian trixie's 3.13)
#   bash container-engine.sh ready      what `make image-test` and CI need: install + start only when no engine
#                                    answers, then the base and the stand-ins when missing
#   bash container-engine.sh status     versions and daemon state
#   bash container-engine.sh stop       stop the dockerd this recipe started (TERM to the PID in its pidfile)
#
# Knobs (environment): BLOCK_PULLS=1 (default) points dockerd's own registry traffic at a dead loopback proxy so a
# pull of a missing image fails at once instead of trying Docker Hub; WITH_PLUGINS=1 (default) installs the compose
# v2 + buildx plugins; FORCE_BASE=1 rebuilds the base image; ENGINE_LOG_DIR (default /var/log/container-engine);
# SMOKE_PORT (default 18080).
set -euo pipefail

LOG_DIR=${ENGINE_LOG_DIR:-/var/log/container-engine}
DOCKERD_LOG=$LOG_DIR/dockerd.log
PIDFILE=/var/run/docker.pid
BASE_IMAGE=${BASE_IMAGE:-local/debian:bookworm}
BLOCK_PULLS=${BLOCK_PULLS:-1}
WITH_PLUGINS=${WITH_PLUGINS:-1}
SMOKE_PORT=${SMOKE_PORT:-18080}
PLUGIN_DIR=/usr/local/lib/docker/cli-plugins      # searched by both the 28.x CLI in /usr/local/bin and Debian's 20.10 CLI
TRIXIE_APT=/var/cache/container-engine/trixie-apt    # private apt state: the host's own sources stay bookworm-only
export DEBIAN_FRONTEND=noninteractive

mkdir -p "$LOG_DIR"
log() { printf '[container-engine %s] %s\n' "$(date +%T)" "$*" >&2; }
timed() { local t0=$SECONDS; "$@"; log "${1#step_} took $((SECONDS - t0)) s"; }

# The Debian mirror apt uses here (never printed): first non-security URI of the host's apt sources.
debian_mirror() {
  local m=""
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    m=$(awk '/^URIs:/{ if ($2 !~ /-security/) { print $2; exit } }' /etc/apt/sources.list.d/debian.sources)
  fi
  if [ -z "$m" ] && [ -f /etc/apt/sources.list ]; then
    m=$(awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^(https?|file):/ && $i !~ /-security/) { print $i; exit } }' /etc/apt/sources.list)
  fi
  [ -n "$m" ] || { log "no Debian mirror found in the apt sources"; exit 1; }
  printf '%s\n' "$m"
}

docker_up() { /usr/bin/docker info >/dev/null 2>&1; }

# `docker build` with BuildKit: the 28.x CLI needs the buildx plugin for that; without it, Debian's 20.10 CLI uses
# the daemon's embedded BuildKit when DOCKER_BUILDKIT=1. (The legacy builder builds every stage before --target.)
dbuild() {
  if docker buildx version >/dev/null 2>&1; then docker build "$@"
  else DOCKER_BUILDKIT=1 /usr/bin/docker build "$@"; fi
}

# docker compose v2 if the plugin is there, else Debian bookworm's docker-compose 1.29 (Python).
dcompose() {
  if docker compose version >/dev/null 2>&1; then docker compose "$@"; else /usr/bin/docker-compose "$@"; fi
}

step_install() {
  apt-get update -qq
  # --no-upgrade: what is already installed (curl, ca-certificates, ...) is left at its version.
  apt-get install -y -qq --no-install-recommends --no-upgrade \
    docker.io docker-compose debootstrap iptables ca-certificates curl >"$LOG_DIR/apt-install.log"
  if [ "$WITH_PLUGINS" = 1 ] && ! { [ -x "$PLUGIN_DIR/docker-compose" ] && [ -x "$PLUGIN_DIR/docker-buildx" ]; }; then
    # Debian trixie ships compose v2 (2.26) and buildx (0.13) as static-ish Go binaries (Depends: libc6 >= 2.34;
    # bookworm has 2.36). Fetch the .debs with a private apt state and unpack only the plugin binaries: nothing of
    # trixie is installed through dpkg, and bookworm's docker-compose v1 package stays as it is.
    local mirror; mirror=$(debian_mirror)
    mkdir -p "$TRIXIE_APT"/{lists/partial,cache/archives/partial,sources,debs,x}
    printf 'Types: deb\nURIs: %s\nSuites: trixie\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
      "$mirror" >"$TRIXIE_APT/sources/trixie.sources"
    local A=(-o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$TRIXIE_APT/sources"
             -o "Dir::State::Lists=$TRIXIE_APT/lists" -o "Dir::Cache=$TRIXIE_APT/cache" -o APT::Sandbox::User=root)
    apt-get "${A[@]}" update -qq
    (cd "$TRIXIE_APT/debs" && rm -f ./*.deb && apt-get "${A[@]}" download -qq docker-compose docker-buildx)
    rm -rf "$TRIXIE_APT/x" && mkdir -p "$TRIXIE_APT/x" "$PLUGIN_DIR"
    for d in "$TRIXIE_APT"/debs/*.deb; do dpkg-deb -x "$d" "$TRIXIE_APT/x"; done
    install -m 0755 "$TRIXIE_APT/x/usr/libexec/docker/cli-plugins/docker-compose" \
                    "$TRIXIE_APT/x/usr/libexec/docker/cli-plugins/docker-buildx" "$PLUGIN_DIR/"
    rm -rf "$TRIXIE_APT"          # the .debs and trixie lists (~46 MB) are not needed once the plugins are in place
  fi
  log "dockerd $(/usr/sbin/dockerd --version | awk '{print $3}' | tr -d ,)," \
      "compose v2: $( (docker compose version --short 2>/dev/null) || echo none)," \
      "buildx: $( (docker buildx version 2>/dev/null | awk '{print $2}') || echo none)"
}

step_start() {
  if docker_up; then log "dockerd already answers (pid $(cat "$PIDFILE" 2>/dev/null || echo ?))"; return 0; fi
  # A daemon killed with SIGKILL leaves its pidfile behind: dockerd refuses to start while that PID is alive.
  if [ -f "$PIDFILE" ] && ! kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then rm -f "$PIDFILE"; fi
  local envs=()
  if [ "$BLOCK_PULLS" = 1 ]; then
    # Only dockerd's own registry/pull traffic uses these; containers and RUN steps do not inherit them.
    envs=(HTTP_PROXY=http://127.0.0.1:9 HTTPS_PROXY=http://127.0.0.1:9 "NO_PROXY=localhost,127.0.0.1")
  fi
  local opts
  for opts in "--storage-driver overlay2" \
              "--storage-driver vfs" \
              "--storage-driver vfs --iptables=false --bridge=none"; do
    log "starting dockerd $opts (log: $DOCKERD_LOG)"
    # shellcheck disable=SC2086
    setsid env "${envs[@]}" /usr/sbin/dockerd $opts --pidfile "$PIDFILE" >>"$DOCKERD_LOG" 2>&1 </dev/null &
    local launcher=$! i
    for i in $(seq 1 120); do
      docker_up && { log "dockerd up (pid $(cat "$PIDFILE")) after ~$((i / 2)) s with: $opts"; return 0; }
      # gone for good: neither the launched process nor a pidfile'd dockerd is alive (dockerd drops its pidfile on exit)
      if ! kill -0 "$launcher" 2>/dev/null && ! { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }; then
        break
      fi
      sleep 0.5
    done
    log "dockerd did not come up with: $opts; last log lines:"; tail -5 "$DOCKERD_LOG" >&2
    kill "$launcher" 2>/dev/null || true; wait "$launcher" 2>/dev/null || true
    if [ -f "$PIDFILE" ] && [ "$(cat /proc/"$(cat "$PIDFILE")"/comm 2>/dev/null)" = dockerd ]; then
      kill "$(cat "$PIDFILE")" 2>/dev/null || true; sleep 2
    fi
  done
  log "no dockerd configuration worked"; return 1
}

step_stop() {
  if [ ! -f "$PIDFILE" ]; then log "no $PIDFILE: nothing to stop"; return 0; fi
  local pid; pid=$(cat "$PIDFILE")
  if ! kill -0 "$pid" 2>/dev/null; then log "stale pidfile (pid $pid not running)"; rm -f "$PIDFILE"; return 0; fi
  if [ "$(cat /proc/"$pid"/comm 2>/dev/null)" != dockerd ]; then log "pid $pid is not dockerd: not touching it"; return 1; fi
  log "stopping dockerd pid $pid (it stops its containers and its own containerd)"
  kill -TERM "$pid"
  local i; for i in $(seq 1 120); do kill -0 "$pid" 2>/dev/null || { log "dockerd stopped"; return 0; }; sleep 0.5; done
  log "dockerd pid $pid still running after 60 s"; return 1
}

step_base() {
  if [ "${FORCE_BASE:-0}" != 1 ] && docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    log "$BASE_IMAGE already present (FORCE_BASE=1 rebuilds it)"; return 0
  fi
  local mirror rootfs; mirror=$(debian_mirror)
  rootfs=$(mktemp -d /var/tmp/bookworm-rootfs.XXXXXX)
  log "debootstrap --variant=minbase bookworm (log: $LOG_DIR/debootstrap.log)"
  debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$LOG_DIR/debootstrap.log" 2>&1 ||
    { tail -20 "$LOG_DIR/debootstrap.log" >&2; rm -rf "$rootfs"; return 1; }
  # apt inside images: the host's own Debian sources (bookworm, -updates, -security) and its Valid-Until leniency.
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    rm -f "$rootfs/etc/apt/sources.list"
    grep -v '^#' /etc/apt/sources.list.d/debian.sources >"$rootfs/etc/apt/sources.list.d/debian.sources"
  fi
  printf 'Acquire::Check-Valid-Until "false";\n' >"$rootfs/etc/apt/apt.conf.d/99no-check-valid-until"
  printf '#!/bin/sh\nexit 101\n' >"$rootfs/usr/sbin/policy-rc.d"; chmod 0755 "$rootfs/usr/sbin/policy-rc.d"
  chroot "$rootfs" apt-get clean
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/log/*.log "$rootfs"/tmp/*
  tar --numeric-owner -C "$rootfs" -c . |
    docker import --change 'CMD ["/bin/bash"]' --change 'ENV LANG=C.UTF-8' - "$BASE_IMAGE" >/dev/null
  rm -rf "$rootfs"
  log "imported $BASE_IMAGE ($(docker image inspect -f '{{.Size}}' "$BASE_IMAGE" | awk '{printf "%d MB", $1/1e6}'))"
}

# The host's CA bundle: the system one, which holds the extra CAs of Debian's local CA folder (this machine reaches
# PyPI through a TLS-intercepting proxy). A build gets it as the secret `ca-certificates`, never as a layer.
host_ca_bundle() { printf '%s' "${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"; }

# The index the host's pip uses, if one is configured (none: pip's default, as on the host).
host_pip_index() {
  local i="${PIP_INDEX_URL:-}"
  [ -n "$i" ] || i=$( (pip config get global.index-url || pip3 config get global.index-url) 2>/dev/null || true)
  printf '%s' "$i"
}

step_smoke() {
  local d; d=$(mktemp -d /tmp/engine-smoke.XXXXXX)
  cat >"$d/Dockerfile" <<EOF
FROM $BASE_IMAGE
ARG PIP_INDEX_URL=
ARG PIP_DEFAULT_TIMEOUT=180
ENV DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN apt-get update \\
 && apt-get install -y --no-install-recommends ca-certificates python3 python3-venv \\
 && rm -rf /var/lib/apt/lists/* \\
 && python3 -m venv /opt/venv
RUN --mount=type=secret,id=ca-certificates if [ -n "\$PIP_INDEX_URL" ]; then export PIP_INDEX_URL; else unset PIP_INDEX_URL; fi \\
 && if [ -s /run/secrets/ca-certificates ]; then export PIP_CERT=/run/secrets/ca-certificates; fi \\
 && /opt/venv/bin/pip install six==1.17.0 \\
 && /opt/venv/bin/python -c "import six; print('six', six.__version__, 'installed from the index')"
WORKDIR /srv
RUN echo 'hello from container' > index.html
EXPOSE 8080
CMD ["/opt/venv/bin/python", "-m", "http.server", "8080", "--bind", "0.0.0.0"]
EOF
  local idx; idx=$(host_pip_index)
  local bargs=(--build-arg "PIP_DEFAULT_TIMEOUT=${PIP_DEFAULT_TIMEOUT:-180}" --secret "id=ca-certificates,src=$(host_ca_bundle)")
  [ -z "$idx" ] || bargs+=(--build-arg "PIP_INDEX_URL=$idx")
  log "smoke 1/3: build FROM $BASE_IMAGE (apt-get python3 + pip install from the index)"
  local t0=$SECONDS
  dbuild --no-cache "${bargs[@]}" -t local/engine-smoke:latest "$d" >"$LOG_DIR/smoke-build.log" 2>&1 ||
    { tail -20 "$LOG_DIR/smoke-build.log" >&2; return 1; }
  log "  built in $((SECONDS - t0)) s"

  log "smoke 2/3: container HTTP server published on 127.0.0.1:$SMOKE_PORT, and on host networking"
  docker rm -f engine-smoke-http engine-smoke-host >/dev/null 2>&1 || true
  docker run -d --name engine-smoke-http -p "127.0.0.1:$SMOKE_PORT:8080" local/engine-smoke:latest >/dev/null
  local ok=0 i
  for i in $(seq 1 50); do curl -fsS "http://127.0.0.1:$SMOKE_PORT/" 2>/dev/null && { ok=1; break; }; sleep 0.2; done
  docker rm -f engine-smoke-http >/dev/null
  [ $ok = 1 ] || { log "published port not reachable"; return 1; }
  docker run -d --name engine-smoke-host --network host local/engine-smoke:latest \
    /opt/venv/bin/python -m http.server "$((SMOKE_PORT + 1))" --bind 127.0.0.1 >/dev/null
  ok=0
  for i in $(seq 1 50); do curl -fsS "http://127.0.0.1:$((SMOKE_PORT + 1))/" 2>/dev/null && { ok=1; break; }; sleep 0.2; done
  docker rm -f engine-smoke-host >/dev/null
  [ $ok = 1 ] || { log "host-network server not reachable"; return 1; }

  log "smoke 3/3: compose, two services on a project network (client reaches web by service name)"
  # docker-compose v1 needs a `version:`; compose v2 only warns that it is obsolete.
  { docker compose version >/dev/null 2>&1 || echo 'version: "3.8"'; } >"$d/docker-compose.yml"
  cat >>"$d/docker-compose.yml" <<EOF
services:
  web:
    image: local/engine-smoke:latest
    ports: ["127.0.0.1:$((SMOKE_PORT + 2)):8080"]
    healthcheck:
      test: ["CMD", "/opt/venv/bin/python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/', timeout=2)"]
      interval: 2s
      timeout: 3s
      retries: 15
  client:
    image: local/engine-smoke:latest
    depends_on:
      web: {condition: service_healthy}
    command: ["/opt/venv/bin/python", "-c", "import urllib.request; print('client got:', urllib.request.urlopen('http://web:8080/', timeout=5).read().decode().strip())"]
EOF
  (cd "$d" && dcompose -p engine-smoke up -d >"$LOG_DIR/smoke-compose.log" 2>&1) ||
    { tail -20 "$LOG_DIR/smoke-compose.log" >&2; return 1; }
  local cid code=""
  for i in $(seq 1 60); do
    cid=$(docker ps -aq --filter label=com.docker.compose.project=engine-smoke \
                        --filter label=com.docker.compose.service=client | head -1)
    if [ -n "$cid" ] && [ "$(docker inspect -f '{{.State.Status}}' "$cid")" = exited ]; then
      code=$(docker inspect -f '{{.State.ExitCode}}' "$cid"); break
    fi
    sleep 1
  done
  (cd "$d" && dcompose -p engine-smoke logs --no-color client 2>&1 | grep 'client got' >&2) || true
  curl -fsS "http://127.0.0.1:$((SMOKE_PORT + 2))/" >/dev/null || code=host-unreachable
  (cd "$d" && dcompose -p engine-smoke down -t 2 >>"$LOG_DIR/smoke-compose.log" 2>&1) || true
  [ "$code" = 0 ] || { log "compose smoke failed (client exit: ${code:-none})"; return 1; }
  docker image rm local/engine-smoke:latest >/dev/null 2>&1 || true
  rm -rf "$d"
  log "smoke: all passed"
}

# A minbase rootfs of another Debian suite, imported as local/debian:<suite> (bookworm's is step_base's).
import_debian() {
  local suite=$1 image=local/debian:$1 mirror rootfs
  if [ "${FORCE_BASE:-0}" != 1 ] && docker image inspect "$image" >/dev/null 2>&1; then return 0; fi
  mirror=$(debian_mirror); rootfs=$(mktemp -d "/var/tmp/$suite-rootfs.XXXXXX")
  log "debootstrap --variant=minbase $suite (log: $LOG_DIR/debootstrap-$suite.log)"
  debootstrap --variant=minbase "$suite" "$rootfs" "$mirror" >"$LOG_DIR/debootstrap-$suite.log" 2>&1 ||
    { tail -20 "$LOG_DIR/debootstrap-$suite.log" >&2; rm -rf "$rootfs"; return 1; }
  rm -f "$rootfs/etc/apt/sources.list"
  printf 'Types: deb\nURIs: %s\nSuites: %s %s-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
    "$mirror" "$suite" "$suite" >"$rootfs/etc/apt/sources.list.d/debian.sources"
  printf 'Acquire::Check-Valid-Until "false";\n' >"$rootfs/etc/apt/apt.conf.d/99no-check-valid-until"
  chroot "$rootfs" apt-get clean
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/log/*.log "$rootfs"/tmp/*
  tar --numeric-owner -C "$rootfs" -c . |
    docker import --change 'CMD ["/bin/bash"]' --change 'ENV LANG=C.UTF-8' - "$image" >/dev/null
  rm -rf "$rootfs"
}

# A local stand-in for an official Python slim image from a Debian suite's python3 (+ venv, ca-certificates, make):
# Python in /usr/bin with Debian's patches, not the official build; no CA certificates of this machine inside.
python_standin() {
  local suite=$1 tag=$2 d
  if [ "${FORCE_BASE:-0}" != 1 ] && docker image inspect "$tag" >/dev/null 2>&1; then return 0; fi
  [ "$suite" = bookworm ] || import_debian "$suite"
  d=$(mktemp -d /tmp/engine-standin.XXXXXX)
  printf '%s\n' \
    "FROM local/debian:$suite" \
    "LABEL org.opencontainers.image.description=\"LOCAL stand-in for an official Python slim image: Debian $suite's python3\"" \
    'ENV DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8' \
    'RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates python3 python3-venv python-is-python3 make && rm -rf /var/lib/apt/lists/*' \
    'CMD ["python3"]' >"$d/Dockerfile"
  dbuild -t "$tag" "$d" >"$LOG_DIR/standin-$suite.log" 2>&1 || { tail -20 "$LOG_DIR/standin-$suite.log" >&2; return 1; }
  rm -rf "$d"
  log "stand-in $tag built ($(docker run --rm "$tag" python3 --version))"
}

step_standins() {
  python_standin bookworm local/python:3.11-bookworm
  python_standin trixie local/python:3.13-trixie
}

step_ready() {
  if docker_up; then log "an engine answers: nothing to install or start"
  else step_install; step_start; fi
  step_base
  step_standins
}

step_status() {
  echo "docker CLI on PATH: $(command -v docker) ($(docker version -f '{{.Client.Version}}' 2>/dev/null || echo ?))"
  /usr/sbin/dockerd --version 2>/dev/null || echo "dockerd: not installed"
  docker compose version 2>/dev/null || echo "compose v2 plugin: none"
  docker buildx version 2>/dev/null || echo "buildx plugin: none"
  /usr/bin/docker-compose version --short 2>/dev/null | sed 's/^/docker-compose (v1): /' || true
  if docker_up; then
    echo "dockerd: running, pid $(cat "$PIDFILE")"
    docker info -f 'storage={{.Driver}} cgroup={{.CgroupDriver}} v{{.CgroupVersion}} server={{.ServerVersion}}'
    docker images
  else
    echo "dockerd: not running"
  fi
}

# (step_ prefix: a function named `install` would shadow install(1), which step_install itself uses)
case "${1:-all}" in
  all)      timed step_install; timed step_start; timed step_base; timed step_smoke ;;
  install|start|stop|base|smoke|standins|ready|status) timed "step_$1" ;;
  *) echo "usage: $0 [all|install|start|base|smoke|standins|ready|status|stop]" >&2; exit 2 ;;
esac
