#!/usr/bin/env bash
# Renders deploy/k8s/overlays/* with kubectl kustomize, validates them with kubernetes-validate
# --strict and runs the semantic checks of scripts/deploy_check.py (each service binary's
# --check-config on its container's settings, probes, identities, NetworkPolicies); every fixture
# under deploy/k8s/tests/ must be refused. Arguments: kustomization folders to check instead.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet --bin mesh-certs -p ordermesh
cargo build --quiet -p ordermesh-order -p ordermesh-payment -p ordermesh-inventory -p ordermesh-shipping --bins
if [[ -f gateway/Cargo.toml ]]; then cargo build --quiet --manifest-path gateway/Cargo.toml --bins; fi
export PATH="$PATH:$PWD/.deps/venv/bin"
exec .deps/venv/bin/python scripts/deploy_check.py --bin-dir "${CARGO_TARGET_DIR:-target}/debug" "$@"
