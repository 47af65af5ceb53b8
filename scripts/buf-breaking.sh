#!/usr/bin/env bash
# buf breaking against main as pushed: origin/main in a clone, main in a checkout without a remote.
set -euo pipefail
cd "$(dirname "$0")/.."
buf=.deps/npm/node_modules/.bin/buf
for ref in origin/main main; do
  if git rev-parse --verify --quiet "$ref^{commit}" >/dev/null; then
    if git cat-file -e "$ref:buf.yaml" 2>/dev/null; then
      echo "buf breaking against $ref"
      exec "$buf" breaking --against ".git#branch=$ref"
    fi
    echo "$ref has no buf module yet: nothing to compare against"
    exit 0
  fi
done
echo "no main branch to compare against: skipped"
