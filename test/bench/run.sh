#!/usr/bin/env bash
# Loopback load harness: builds test/bench/loadgen and runs `loadgen bench` with the flags
# given here, e.g.
#   test/bench/run.sh -targets direct,nginx,mosnlite -mosnlite bin/mosnlite -doc docs/benchmarks.md
# loadgen starts nginx and mosnlite itself (own configs, free loopback ports), pins the proxy
# to CPU 0 and itself to CPU 1, and prints a markdown report. `loadgen bench -h` lists flags.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p bin
go build -o bin/loadgen ./test/bench/loadgen
exec bin/loadgen bench "$@"
