#!/usr/bin/env bash
# Renders deploy/k8s/overlays/* with kubectl kustomize, validates them with kubernetes-validate
# --strict and runs the semantic checks of scripts/deploy_check.py (each service binary's
# --check-config on its container's settings, probes, identities, NetworkPolicies); every fixture
# under deploy/k8s/tests/ must be refused. Arguments: kustomization folders to check instead.
set -euo pipefail
cd "$(dirname "$0")/.."
# One workspace build, as `make run` and the tests build: per-package builds would each compile
# the runtime again with another feature set.
cargo build --quiet --workspace --bins
# The gateway must build without the services' runtime (no sea-orm, lapin or DNS server):
# checked alone, with only the features it asks for.
cargo check --quiet -p ordermesh-gateway --bins
export PATH="$PATH:$PWD/.deps/venv/bin"
exec .deps/venv/bin/python scripts/deploy_check.py --bin-dir "${CARGO_TARGET_DIR:-target}/debug" "$@"
