#!/usr/bin/env bash
# buf breaking of proto/ against main as pushed (origin/main in a clone, main without a remote).
# googleapis is not committed, so '.git#branch=...' alone cannot build the old module: the old
# tree is exported, given the same .deps/googleapis, built to an image, and compared with that.
set -euo pipefail
cd "$(dirname "$0")/.."
buf=$PWD/.deps/npm/node_modules/.bin/buf
ref=""
for candidate in origin/main main; do
  if git rev-parse --verify --quiet "$candidate^{commit}" >/dev/null; then ref=$candidate; break; fi
done
if [[ -z $ref ]]; then echo "no main branch to compare against: skipped"; exit 0; fi
if ! git cat-file -e "$ref:buf.yaml" 2>/dev/null; then
  echo "$ref has no buf module yet: nothing to compare against"; exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
git archive "$ref" buf.yaml proto | tar -x -C "$tmp"
mkdir -p "$tmp/.deps" && cp -r .deps/googleapis "$tmp/.deps/"
(cd "$tmp" && "$buf" build proto -o "$tmp/against.binpb")
echo "buf breaking against $ref ($(git rev-parse --short "$ref"))"
"$buf" breaking proto --against "$tmp/against.binpb"
