#!/usr/bin/env bash
# Installs Debian's nginx and its stream module for `make bench`, when missing. The package
# must not start its service (it would listen on port 80 of every interface): a policy-rc.d
# that answers 101 ("action forbidden") is put in place for the install if none exists, and
# RUNLEVEL=1 covers sysvinit scripts. The harness starts nginx itself with its own config.
set -euo pipefail

module=/usr/lib/nginx/modules/ngx_stream_module.so
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
if [ -x "$nginx_bin" ] && { [ -e "$module" ] || "$nginx_bin" -V 2>&1 | grep -qE -- '--with-stream( |$)'; }; then
  exit 0
fi

sudo=
if [ "$(id -u)" -ne 0 ]; then
  sudo=sudo
fi
policy=/usr/sbin/policy-rc.d
created=
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\n# temporary, from mosnlite test/bench/install-nginx.sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
  $sudo chmod 755 "$policy"
  created=1
fi
cleanup() {
  if [ -n "$created" ]; then
    $sudo rm -f "$policy"
  fi
}
trap cleanup EXIT

echo "install-nginx: apt-get install nginx libnginx-mod-stream (services not started)"
$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
$sudo env DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get install -y -qq --no-install-recommends \
  nginx libnginx-mod-stream </dev/null
