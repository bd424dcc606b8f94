# mosnlite: `make help` lists the targets.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := build

GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS := -X main.version=$(VERSION) -X main.commit=$(COMMIT)

BIN       := bin
TOOLS_BIN := $(CURDIR)/$(BIN)/tools

# make run
CONFIG ?= configs/mosnlite.json

# make lint: staticcheck is pinned and installed into bin/tools, not into GOPATH.
STATICCHECK_VERSION := v0.7.0
STATICCHECK := $(TOOLS_BIN)/staticcheck-$(STATICCHECK_VERSION)

# make test: h2spec (HTTP/2 conformance, run by test/e2e's TestH2Spec) is pinned and
# installed into bin/tools; the test finds it through $H2SPEC.
H2SPEC_VERSION := v2.2.1+incompatible
H2SPEC := $(TOOLS_BIN)/h2spec-$(subst +,-,$(H2SPEC_VERSION))

# make fuzz: how long each fuzz target runs.
FUZZTIME ?= 10s

# make bench
BENCH_TARGETS ?= direct,nginx,nginx-halfclose,mosnlite
BENCH_ROUNDS  ?= 5
BENCH_FLAGS   ?=
BENCH_OUT     := $(BIN)/bench
# The command line recorded in docs/benchmarks.md, with the variables given on it.
BENCH_CMD = $(strip make $(or $(filter bench%,$(MAKECMDGOALS)),bench) \
	$(foreach v,BENCH_TARGETS BENCH_ROUNDS BENCH_FLAGS,$(if $(filter command line,$(origin $(v))),$(v)="$($(v))")))
# make bench-http (test/bench/httpload): rounds, extra flags, a note for the report (e.g. that the
# machine was shared), and the command it records.
HTTP_BENCH_ROUNDS ?= 1
HTTP_BENCH_FLAGS  ?=
HTTP_BENCH_NOTE   ?=
HTTP_BENCH_CMD = $(strip make $(or $(filter bench%,$(MAKECMDGOALS)),bench) \
	$(foreach v,HTTP_BENCH_ROUNDS HTTP_BENCH_FLAGS,$(if $(filter command line,$(origin $(v))),$(v)="$($(v))")))

# make bench-rpc (test/bench/rpcload): bolt, dubbo and HTTP/1.1 through mosnlite vs direct.
RPC_BENCH_ROUNDS ?= 3
RPC_BENCH_FLAGS  ?=
RPC_BENCH_NOTE   ?=
RPC_BENCH_CMD = $(strip make $(or $(filter bench%,$(MAKECMDGOALS)),bench) \
	$(foreach v,RPC_BENCH_ROUNDS RPC_BENCH_FLAGS RPC_BENCH_NOTE,$(if $(filter command line,$(origin $(v))),$(v)="$($(v))")))

.PHONY: help build demoupstream run test deps lint fuzz bench bench-go bench-load bench-http bench-rpc bench-deps docker clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z-]+):.*## /  \1\t/' | expand -t 16

build: ## build bin/mosnlite (version and commit from git)
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/mosnlite ./cmd/mosnlite

demoupstream: ## build bin/demoupstream (examples/demoupstream)
	$(GO) build -o $(BIN)/demoupstream ./examples/demoupstream

# The demo upstream runs in the background and is stopped when this recipe's shell exits,
# however it exits (mosnlite ended, Ctrl-C, failure).
run: build demoupstream ## start the demo upstream on 127.0.0.1:8080 and mosnlite on CONFIG (configs/mosnlite.json)
	@if (exec 3<>/dev/tcp/127.0.0.1/8080) 2>/dev/null; then \
		echo "make run: 127.0.0.1:8080 is already in use; stop what listens there first" >&2; exit 1; fi; \
	$(BIN)/demoupstream -listen 127.0.0.1:8080 & up=$$!; \
	trap 'kill $$up 2>/dev/null || true; wait $$up 2>/dev/null || true' EXIT; \
	for i in $$(seq 1 100); do \
		kill -0 $$up 2>/dev/null || { echo "make run: the demo upstream did not start (is 127.0.0.1:8080 in use?)" >&2; exit 1; }; \
		(exec 3<>/dev/tcp/127.0.0.1/8080) 2>/dev/null && break; \
		sleep 0.05; \
	done; \
	echo "make run: mosnlite on $(CONFIG); try: curl http://127.0.0.1:2045/ or curl http://127.0.0.1:2045/demo/  (Ctrl-C stops both)"; \
	$(BIN)/mosnlite start -c $(CONFIG)

test: deps $(H2SPEC) ## run all tests with the race detector (unit, fuzz seeds, e2e, h2spec)
	H2SPEC=$(H2SPEC) $(GO) test -race -timeout 20m ./...

# Tools the tests need beyond Go, installed here (never by hand) so a fresh clone's
# `make test` has them: iptables and iproute2 for pkg/network's SO_ORIGINAL_DST test, which
# runs a real iptables REDIRECT inside a network namespace it creates (loopback only).
# Without root or apt-get that one test skips and says why.
TEST_DEPS_APT := iptables iproute2
deps: ## install what the tests need beyond Go (apt-get: iptables, iproute2, zookeeper)
	@if command -v iptables >/dev/null 2>&1 && command -v ip >/dev/null 2>&1; then \
		echo "deps: iptables and ip present"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "deps: apt-get install $(TEST_DEPS_APT)"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y --no-install-recommends $(TEST_DEPS_APT) >/dev/null 2>&1 || \
		{ apt-get update >/dev/null 2>&1 && apt-get install -y --no-install-recommends $(TEST_DEPS_APT) >/dev/null 2>&1; } || \
		echo "deps: could not install $(TEST_DEPS_APT); the original_dst namespace test will skip"; \
	else \
		echo "deps: not root or no apt-get; the original_dst namespace test will skip"; \
	fi
	@# ZooKeeper for pkg/registry/dubbo and test/e2e (the tests start it themselves on loopback;
	@# Debian's zookeeper package ships no service). Its tests fail, saying to run this, without it.
	@if [ -e /usr/share/java/zookeeper.jar ]; then \
		echo "deps: zookeeper present"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "deps: apt-get install zookeeper"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y --no-install-recommends zookeeper >/dev/null 2>&1 || \
		{ apt-get update >/dev/null 2>&1 && apt-get install -y --no-install-recommends zookeeper >/dev/null; }; \
	else \
		echo "deps: not root or no apt-get: install Debian's zookeeper package by hand (the registry tests need it)" >&2; \
	fi

$(STATICCHECK):
	@mkdir -p $(TOOLS_BIN)
	GOBIN=$(TOOLS_BIN) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
	mv $(TOOLS_BIN)/staticcheck $@

$(H2SPEC):
	@mkdir -p $(TOOLS_BIN)
	GOBIN=$(TOOLS_BIN) $(GO) install github.com/summerwind/h2spec/cmd/h2spec@$(H2SPEC_VERSION)
	mv $(TOOLS_BIN)/h2spec $@

lint: $(STATICCHECK) ## gofmt (must list nothing), go vet, staticcheck; runs all three, fails if any fails
	@rc=0; \
	unformatted=$$(find . -name '*.go' -not -path './.git/*' -not -path './$(BIN)/*' -print0 | xargs -0 -r gofmt -l) || rc=1; \
	if [ -n "$$unformatted" ]; then echo "gofmt -l: not formatted (run gofmt -w):"; echo "$$unformatted"; rc=1; fi; \
	echo "go vet ./..."; $(GO) vet ./... || rc=1; \
	echo "staticcheck ./..."; $(STATICCHECK) ./... || rc=1; \
	exit $$rc

# Each fuzz target runs alone (go test -fuzz takes one target in one package).
fuzz: ## run every fuzz target for FUZZTIME (default 10s)
	@dirs=$$(grep -rlE --include='*_test.go' --exclude-dir=testdata '^func Fuzz' $(wildcard cmd pkg test examples) | xargs -r -n1 dirname | sort -u || true); \
	if [ -z "$$dirs" ]; then echo "fuzz: no fuzz targets"; exit 0; fi; \
	for d in $$dirs; do \
		list=$$($(GO) test -list '^Fuzz' ./$$d); \
		for t in $$(grep '^Fuzz' <<<"$$list" || true); do \
			echo "== fuzz ./$$d $$t for $(FUZZTIME)"; \
			$(GO) test -run='^$$' -fuzz="^$$t\$$" -fuzztime=$(FUZZTIME) ./$$d; \
		done; \
	done

bench: bench-go bench-load bench-http bench-rpc ## Go benchmarks of pkg/..., then the loopback L4, HTTP and RPC load runs (update docs/benchmarks.md)

bench-go:
	@mkdir -p $(BENCH_OUT)
	$(GO) test -run='^$$' -bench=. -benchmem ./pkg/... | tee $(BENCH_OUT)/go-bench.txt

# direct, nginx and mosnlite measured in one run; BENCH_TARGETS=direct,nginx leaves mosnlite out.
bench-load: bench-deps $(if $(findstring mosnlite,$(BENCH_TARGETS)),build)
	@mkdir -p $(BENCH_OUT)
	test/bench/run.sh -targets $(BENCH_TARGETS) -rounds $(BENCH_ROUNDS) -mosnlite $(BIN)/mosnlite \
		-doc docs/benchmarks.md -command '$(BENCH_CMD)' $(BENCH_FLAGS) | tee $(BENCH_OUT)/load.md

# HTTP/1.1 (wrk) and HTTP/2 (h2load) through mosnlite, nginx and direct; mosnlite's CPU
# profile under HTTP/1.1 load goes to bin/bench/http-cpu.txt.
bench-http: build ## HTTP/1.1 + HTTP/2 load run, mosnlite vs nginx vs direct (updates docs/benchmarks.md)
	test/bench/install-http-tools.sh
	@mkdir -p $(BENCH_OUT)
	$(GO) build -o $(BIN)/httpload ./test/bench/httpload
	$(BIN)/httpload -mosnlite $(BIN)/mosnlite -rounds $(HTTP_BENCH_ROUNDS) -go $(GO) -doc docs/benchmarks.md \
		-profile $(BENCH_OUT)/http-cpu.txt -command '$(HTTP_BENCH_CMD)' -note '$(HTTP_BENCH_NOTE)' $(HTTP_BENCH_FLAGS) \
		| tee $(BENCH_OUT)/http.md

# bolt and dubbo (and HTTP/1.1 for the CPU comparison) through mosnlite and direct, in one run.
bench-rpc: build ## RPC load run: bolt + dubbo via mosnlite vs direct, proxy CPU per request (updates docs/benchmarks.md)
	@mkdir -p $(BENCH_OUT)
	test/bench/run.sh rpc -rounds $(RPC_BENCH_ROUNDS) -mosnlite $(BIN)/mosnlite -doc docs/benchmarks.md \
		-command '$(RPC_BENCH_CMD)' -note '$(RPC_BENCH_NOTE)' $(RPC_BENCH_FLAGS) | tee $(BENCH_OUT)/rpc.md

bench-deps: ## install nginx + its stream module for the bench (apt-get; no service is started)
	@case ",$(BENCH_TARGETS)," in *,nginx,*|*,nginx-halfclose,*) test/bench/install-nginx.sh ;; esac

docker: ## build the container image mosnlite:VERSION
	docker build --build-arg VERSION=$(VERSION) --build-arg COMMIT=$(COMMIT) -t mosnlite:$(VERSION) .

clean: ## remove bin/ (binaries, tools, bench output) and coverage files
	rm -rf $(BIN) coverage.out coverage.html cover.out
