#!/usr/bin/env bash
# Builds the grpc-go benchmark peer (main.go) offline from Debian packages, in GOPATH mode (no Go
# module proxy), into .build/grpc-go-peer. Idempotent: installs only missing packages and relinks
# only when main.go, this script or ../go-offline.sh changed.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
BUILD="$HERE/.build"
BIN="$BUILD/grpc-go-peer"
# shellcheck source=bench/go-offline.sh
source "$HERE/../go-offline.sh"
go_offline_packages golang-go golang-google-grpc-dev
command -v go >/dev/null || { echo "build.sh: go not found after install" >&2; exit 1; }

STAMP="$BUILD/inputs.sha256"
want="$( (cd "$HERE" && sha256sum main.go build.sh ../go-offline.sh); go version) | sha256sum | cut -d' ' -f1)"
if [[ -x "$BIN" && -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
  echo "build.sh: up to date: $BIN"
  exit 0
fi
mkdir -p "$BUILD/gopath/src/grpcgopeer"
cp "$HERE/main.go" "$BUILD/gopath/src/grpcgopeer/main.go"
echo "build.sh: building $(go version | cut -d' ' -f3), grpc-go $(dpkg-query -W -f='${Version}' golang-google-grpc-dev) (GOPATH mode, offline)"
go_offline_build "$BUILD/gopath" grpcgopeer "$BIN"
echo "$want" >"$STAMP"
echo "build.sh: built $BIN"
