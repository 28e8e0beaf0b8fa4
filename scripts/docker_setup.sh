#!/usr/bin/env bash
# Make a Docker engine with Compose v2 and the compose file's base images usable on a Debian 12
# machine without systemd or an image registry (see README "Deploying with Docker Compose").
#
#   scripts/docker_setup.sh            # idempotent; a second run takes seconds
#
# Stages (each prints its minutes):
#   1. engine    start Debian's dockerd in the background unless `docker info` already answers
#   2. compose   the Compose v2 plugin from Debian 13's docker-compose .deb (static binary),
#                fetched with apt from a private trixie source list; the system is not upgraded
#   3. base      local/debian:bookworm from `debootstrap --variant=minbase`
#   4. stand-ins python:3.11-slim, redis:7, postgres:16, prom/prometheus:v3.5.0 built from
#                docker/standins/ (the machine's CA bundle goes into the Python image for pip)
#
# Everything downloaded or built is cached outside the repository in $ZENITH_DOCKER_CACHE
# (default /var/cache/zenith-docker): the trixie .deb, the debootstrap tarball, and a
# `docker save` of each stand-in keyed by a hash of its recipe. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE=${ZENITH_DOCKER_CACHE:-/var/cache/zenith-docker}
MIRROR=${ZENITH_DEBIAN_MIRROR:-http://deb.debian.org/debian}
PLUGIN_DIR=/usr/local/lib/docker/cli-plugins
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
mkdir -p "$CACHE"

stage_start=0
stage() { stage_start=$(date +%s); printf '== docker setup: %s\n' "$*"; }
stage_done() {
  local s=$(($(date +%s) - stage_start))
  printf '== docker setup: %s done in %d.%02d min (%ds)\n' "$1" $((s / 60)) $((s % 60 * 100 / 60)) "$s"
}

# --- 1. engine ---------------------------------------------------------------------------
stage engine
if ! docker info >/dev/null 2>&1; then
  [ -x /usr/sbin/dockerd ] || { echo "dockerd missing: apt-get install docker.io" >&2; exit 1; }
  nohup setsid /usr/sbin/dockerd >>/var/log/zenith-dockerd.log 2>&1 </dev/null &
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { tail -20 /var/log/zenith-dockerd.log >&2; exit 1; }
fi
docker version --format 'engine {{.Server.Version}}, client {{.Client.Version}}'
stage_done engine

# --- 2. compose plugin -------------------------------------------------------------------
stage compose
if ! docker compose version >/dev/null 2>&1; then
  deb=$(ls "$CACHE"/docker-compose_*.deb 2>/dev/null | tail -1 || true)
  if [ -z "$deb" ]; then
    apt_dir="$CACHE/apt-trixie"
    mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial"
    echo "deb [trusted=yes] $MIRROR trixie main" >"$apt_dir/sources.list"
    apt_opts=(-o "Dir::Etc::SourceList=$apt_dir/sources.list" -o Dir::Etc::SourceParts=/dev/null
      -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache"
      -o APT::Sandbox::User=root -o Debug::NoLocking=1)
    apt-get "${apt_opts[@]}" update -qq
    (cd "$CACHE" && apt-get "${apt_opts[@]}" download docker-compose)
    rm -rf "$apt_dir"
    deb=$(ls "$CACHE"/docker-compose_*.deb | tail -1)
  fi
  unpack=$(mktemp -d)
  dpkg -x "$deb" "$unpack"
  install -D -m 0755 "$unpack/usr/libexec/docker/cli-plugins/docker-compose" \
    "$PLUGIN_DIR/docker-compose"
  rm -rf "$unpack"
fi
docker compose version
stage_done compose

# --- 3. base image -----------------------------------------------------------------------
stage "base image"
base_tar="$CACHE/debian-bookworm-minbase.tar.gz"
if ! docker image inspect local/debian:bookworm >/dev/null 2>&1; then
  if [ ! -s "$base_tar" ]; then
    root=$(mktemp -d /var/tmp/zenith-debootstrap.XXXXXX)
    debootstrap --variant=minbase bookworm "$root" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 \
      || { tail -20 "$CACHE/debootstrap.log" >&2; exit 1; }
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    tar -C "$root" -czf "$base_tar.tmp" . && mv "$base_tar.tmp" "$base_tar"
    rm -rf "$root"
  fi
  docker import "$base_tar" local/debian:bookworm >/dev/null
fi
stage_done "base image"

# --- 4. stand-ins ------------------------------------------------------------------------
stage stand-ins
base_id=$(docker image inspect --format '{{.Id}}' local/debian:bookworm)
standin() { # standin DIR TAG
  local dir=docker/standins/$1 tag=$2 key have cached ctx extra
  extra=/dev/null
  if [ "$1" = python ]; then extra=$CA_BUNDLE; fi
  key=$(cat <(echo "$base_id") "$dir"/* "$extra" | sha256sum | cut -c1-16)
  have=$(docker image inspect --format '{{index .Config.Labels "zenith.standin"}}' "$tag" 2>/dev/null || true)
  if [ "$have" = "$key" ]; then echo "$tag: present ($key)"; return; fi
  cached="$CACHE/images/$1-$key.tar"
  if [ -s "$cached" ]; then
    if docker load -q -i "$cached" >/dev/null; then echo "$tag: loaded from cache"; return; fi
  fi
  ctx=$(mktemp -d)
  cp -a "$dir"/. "$ctx"/
  if [ "$1" = python ]; then cp "$CA_BUNDLE" "$ctx/ca-certificates.crt"; fi
  DOCKER_BUILDKIT=0 docker build -q --network host --label "zenith.standin=$key" -t "$tag" "$ctx" >/dev/null
  rm -rf "$ctx"
  mkdir -p "$CACHE/images"
  rm -f "$CACHE/images/$1-"*.tar
  docker save -o "$cached.tmp" "$tag" && mv "$cached.tmp" "$cached"
  echo "$tag: built ($key)"
}
standin python python:3.11-slim
standin redis redis:7
standin postgres postgres:16
standin prometheus prom/prometheus:v3.5.0
stage_done stand-ins
