#!/usr/bin/env bash
# Installs the HTTP load tools for `make bench-http` when missing: Debian's wrk (HTTP/1.1)
# and nghttp2-client (h2load, HTTP/2), and nginx through install-nginx.sh (same rules: no
# service is started). Nothing is downloaded outside apt-get.
set -euo pipefail
cd "$(dirname "$0")"

./install-nginx.sh

missing=()
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v h2load >/dev/null 2>&1 || missing+=(nghttp2-client)
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

sudo=
if [ "$(id -u)" -ne 0 ]; then
  sudo=sudo
fi
echo "install-http-tools: apt-get install ${missing[*]}"
$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null
