#!/usr/bin/env bash
# Run a command with headless Chromium and its driver available (the report's browser test):
# install Debian's chromium + chromium-driver when missing, like with-docker.sh installs docker.io.
set -euo pipefail
need=""
command -v chromium >/dev/null 2>&1 || need="chromium"
command -v chromedriver >/dev/null 2>&1 || need="$need chromium-driver"
if [ -n "$need" ]; then
  echo "[with-chromium] installing:$need"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends $need >/dev/null
fi
export HARMONYCELL_REQUIRE_BROWSER=1  # the browser test fails here instead of skipping
"$@"
