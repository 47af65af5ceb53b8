#!/usr/bin/env bash
# The saga benchmark of a baseline revision and of the working tree, back to back on this
# machine, SQLite then PostgreSQL: `scripts/bench-saga-ab.sh 4015503`. The baseline is built in
# a worktree under var/ with a target folder of its own (seeded from target/release).
set -euo pipefail
cd "$(dirname "$0")/.."
base=${1:?usage: scripts/bench-saga-ab.sh <baseline revision>}
wt=var/bench-base-$base
if [[ ! -d $wt ]]; then
  git worktree add --detach "$wt" "$base" >/dev/null
  [[ -d .deps ]] && cp -a .deps "$wt/"
fi
if [[ ! -d var/bench-base-target/release && -d target/release ]]; then
  mkdir -p var/bench-base-target && cp -a target/release var/bench-base-target/
fi
(cd "$wt" && CARGO_TARGET_DIR=$PWD/../bench-base-target cargo build --release --quiet -p ordermesh-order --example saga-bench)
cargo build --release --quiet -p ordermesh-order --example saga-bench
for args in "" "--postgres"; do
  echo "== baseline $base $args"
  (cd "$wt" && ../bench-base-target/release/examples/saga-bench $args)
  echo "== working tree $args"
  target/release/examples/saga-bench $args
done
