#!/usr/bin/env bash
# Run a command with a Docker engine available: install docker.io + debootstrap (and bubblewrap,
# the other wall the tests exercise) when missing,
# start dockerd in the background when none answers, run the command, then stop the daemon we
# started (by PID). An engine that was already running is left alone.
set -euo pipefail
started=""
log=${DOCKERD_LOG:-/tmp/harmonycell-dockerd.log}
pidfile=${DOCKERD_PIDFILE:-/tmp/harmonycell-dockerd.pid}

need=""
command -v dockerd >/dev/null 2>&1 || need="docker.io"
command -v debootstrap >/dev/null 2>&1 || need="$need debootstrap"
command -v bwrap >/dev/null 2>&1 || need="$need bubblewrap"
if [ -n "$need" ]; then
  echo "[with-docker] installing:$need"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends $need >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
  echo "[with-docker] starting dockerd (log: $log)"
  dockerd --pidfile "$pidfile.daemon" >"$log" 2>&1 &
  started=$!
  echo "$started" >"$pidfile"
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    sleep 1
  done
  docker info >/dev/null 2>&1 || { echo "[with-docker] dockerd did not come up:"; tail -20 "$log"; exit 1; }
fi

stop() {
  if [ -n "$started" ]; then
    echo "[with-docker] stopping dockerd (pid $started)"
    kill "$started" 2>/dev/null || true
    for _ in $(seq 1 30); do kill -0 "$started" 2>/dev/null || break; sleep 1; done
    rm -f "$pidfile"
  fi
}
trap stop EXIT
export HARMONYCELL_REQUIRE_DOCKER=1
"$@"
