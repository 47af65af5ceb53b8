#!/usr/bin/env bash
# Builds the grpc-gateway (Go, APIv1) benchmark peer offline from Debian packages, in GOPATH mode
# (no Go module proxy): generates Go code from proto/ordermesh/**.proto and links
# .build/grpc-gateway-peer. Idempotent: installs only missing packages, regenerates and relinks
# only when the protos or main.go changed.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
BUILD="$HERE/.build"
BIN="$BUILD/grpc-gateway-peer"
GOPKG=ordermeshpeer                       # import path root inside the private GOPATH
GOPATH_DIR="$BUILD/gopath"
GEN="$GOPATH_DIR/src/$GOPKG/gen"
GOOGLEAPIS="/usr/share/gocode/src/github.com/grpc-ecosystem/grpc-gateway/third_party/googleapis"

# shellcheck source=bench/go-offline.sh
source "$HERE/../go-offline.sh"
go_offline_packages golang-go golang-grpc-gateway golang-github-grpc-ecosystem-grpc-gateway-dev \
  golang-google-grpc-dev protoc-gen-go-grpc golang-goprotobuf-dev protobuf-compiler
for t in go protoc protoc-gen-go protoc-gen-grpc-gateway; do
  command -v "$t" >/dev/null || { echo "build.sh: $t not found after install" >&2; exit 1; }
done
[[ -d "$GOOGLEAPIS/google/api" ]] || { echo "build.sh: googleapis protos not found in $GOOGLEAPIS" >&2; exit 1; }

# Rebuild only when inputs changed: hash of the protos, main.go and this script.
PROTOS=()
while IFS= read -r f; do PROTOS+=("$f"); done < <(cd "$REPO/proto" && find ordermesh -name '*.proto' | sort)
STAMP="$BUILD/inputs.sha256"
want="$( (cd "$REPO/proto" && sha256sum "${PROTOS[@]}"); sha256sum "$HERE/main.go" "$HERE/build.sh" "$HERE/../go-offline.sh" | sed "s#$HERE/##"; go version) | sha256sum | cut -d' ' -f1)"
if [[ -x "$BIN" && -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
  echo "build.sh: up to date: $BIN"
  exit 0
fi

# Copy the protos into a scratch dir and inject `option go_package` (the repo's protos have none;
# they are not edited). Package name: <service><version>, e.g. inventoryv1.
rm -rf "$BUILD/proto" "$GEN"
mkdir -p "$BUILD/proto" "$GEN"
for f in "${PROTOS[@]}"; do
  dir="$(dirname "$f")"                                   # ordermesh/inventory/v1
  name="$(basename "$(dirname "$dir")")$(basename "$dir")" # inventoryv1
  mkdir -p "$BUILD/proto/$dir"
  if grep -q '^option go_package' "$REPO/proto/$f"; then
    sed "s#^option go_package.*#option go_package = \"$GOPKG/gen/$dir;$name\";#" "$REPO/proto/$f" >"$BUILD/proto/$f"
  else
    awk -v opt="option go_package = \"$GOPKG/gen/$dir;$name\";" \
      '{print} /^package [A-Za-z0-9_.]+;/ && !done {print opt; done=1}' "$REPO/proto/$f" >"$BUILD/proto/$f"
  fi
done

echo "build.sh: generating Go code ($(protoc --version), protoc-gen-go from golang-goprotobuf-dev, grpc-gateway $(dpkg-query -W -f='${Version}' golang-grpc-gateway))"
# Well-known types: the APIv1 packages that golang-goprotobuf-dev ships (protoc 3.21's own
# go_package points at the APIv2 module, which this GOPATH doesn't have).
WKT="Mgoogle/protobuf/timestamp.proto=github.com/golang/protobuf/ptypes/timestamp"
WKT+=",Mgoogle/protobuf/duration.proto=github.com/golang/protobuf/ptypes/duration"
WKT+=",Mgoogle/protobuf/empty.proto=github.com/golang/protobuf/ptypes/empty"
WKT+=",Mgoogle/protobuf/any.proto=github.com/golang/protobuf/ptypes/any"
WKT+=",Mgoogle/protobuf/struct.proto=github.com/golang/protobuf/ptypes/struct"
WKT+=",Mgoogle/protobuf/wrappers.proto=github.com/golang/protobuf/ptypes/wrappers"
# One protoc run per Go package: APIv1 protoc-gen-go refuses several packages in one run.
for dir in $(printf '%s\n' "${PROTOS[@]}" | xargs -n1 dirname | sort -u); do
  (cd "$BUILD/proto" && protoc -I . -I "$GOOGLEAPIS" \
    --go_out=plugins=grpc,paths=source_relative,$WKT:"$GEN" \
    --grpc-gateway_out=logtostderr=true,paths=source_relative,$WKT:"$GEN" \
    "$dir"/*.proto)
done

mkdir -p "$GOPATH_DIR/src/$GOPKG/cmd/grpc-gateway-peer"
cp "$HERE/main.go" "$GOPATH_DIR/src/$GOPKG/cmd/grpc-gateway-peer/main.go"
echo "build.sh: building $(go version | cut -d' ' -f3) (GOPATH mode, offline)"
go_offline_build "$GOPATH_DIR" "$GOPKG/cmd/grpc-gateway-peer" "$BIN"
echo "$want" >"$STAMP"
echo "build.sh: built $BIN"
