#!/usr/bin/env bash
# Loopback load harness: builds test/bench/loadgen and runs `loadgen bench` with the flags
# given here, e.g.
#   test/bench/run.sh -targets direct,nginx,mosnlite -mosnlite bin/mosnlite -doc docs/benchmarks.md
# loadgen starts nginx and mosnlite itself (own configs, free loopback ports), pins the proxy
# to CPU 0 and itself to CPU 1, and prints a markdown report. `loadgen bench -h` lists flags.
# `run.sh rpc FLAGS` runs the RPC load generator instead (test/bench/rpcload: bolt, dubbo and
# HTTP/1.1 through mosnlite vs direct); `run.sh rpc -h` lists its flags.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p bin
if [ "${1:-}" = rpc ]; then
	shift
	go build -o bin/rpcload ./test/bench/rpcload
	exec bin/rpcload bench "$@"
fi
go build -o bin/loadgen ./test/bench/loadgen
exec bin/loadgen bench "$@"
