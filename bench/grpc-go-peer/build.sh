#!/usr/bin/env bash
# Builds the grpc-go benchmark peer (main.go) offline from Debian packages, in GOPATH mode (no Go
# module proxy), into .build/grpc-go-peer. Idempotent: installs only missing packages and relinks
# only when main.go or this script changed.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
BUILD="$HERE/.build"
BIN="$BUILD/grpc-go-peer"
SYS_GOPATH=/usr/share/gocode
PKGS=(golang-go golang-google-grpc-dev)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "build.sh: installing Debian packages: ${missing[*]}"
  SUDO=""; [[ $(id -u) -eq 0 ]] || SUDO=sudo
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-cache show golang-google-grpc-dev >/dev/null 2>&1; then $SUDO apt-get update -qq; fi
  $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
command -v go >/dev/null || { echo "build.sh: go not found after install" >&2; exit 1; }

STAMP="$BUILD/inputs.sha256"
want="$( (cd "$HERE" && sha256sum main.go build.sh); go version) | sha256sum | cut -d' ' -f1)"
if [[ -x "$BIN" && -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
  echo "build.sh: up to date: $BIN"
  exit 0
fi
mkdir -p "$BUILD/gopath/src/grpcgopeer"
cp "$HERE/main.go" "$BUILD/gopath/src/grpcgopeer/main.go"
echo "build.sh: building $(go version | cut -d' ' -f3), grpc-go $(dpkg-query -W -f='${Version}' golang-google-grpc-dev) (GOPATH mode, offline)"
(cd "$BUILD/gopath/src/grpcgopeer" && \
  GO111MODULE=off GOPROXY=off GOFLAGS= GOPATH="$BUILD/gopath:$SYS_GOPATH" GOCACHE="$BUILD/gocache" \
  go build -o "$BIN.tmp" .)
mv "$BIN.tmp" "$BIN"
echo "$want" >"$STAMP"
echo "build.sh: built $BIN"
