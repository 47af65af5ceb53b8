# Sourced by the Go benchmark peers' build.sh (bench/*/build.sh): Debian's Go packages installed
# when missing, and a GOPATH-mode build of one main package, which needs no Go module proxy.

SYS_GOPATH=/usr/share/gocode

# go_offline_packages PKG...: installs (apt) the packages that are missing; the package lists are
# refreshed only when they do not know them yet.
go_offline_packages() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  echo "build.sh: installing Debian packages: ${missing[*]}"
  local sudo=""; [[ $(id -u) -eq 0 ]] || sudo=sudo
  export DEBIAN_FRONTEND=noninteractive
  apt-cache show "${missing[@]}" >/dev/null 2>&1 || $sudo apt-get update -qq
  $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

# go_offline_build GOPATH_DIR PKG_DIR BIN: builds the main package in GOPATH_DIR/src/PKG_DIR into
# BIN (through BIN.tmp, so a failed build leaves the old binary), with GOPATH_DIR before the
# system's packages and a build cache beside GOPATH_DIR.
go_offline_build() {
  local gopath=$1 pkg=$2 bin=$3
  (cd "$gopath/src/$pkg" && \
    GO111MODULE=off GOPROXY=off GOFLAGS= GOPATH="$gopath:$SYS_GOPATH" GOCACHE="$gopath/../gocache" \
    go build -o "$bin.tmp" .)
  mv "$bin.tmp" "$bin"
}
