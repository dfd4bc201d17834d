#!/bin/sh
# Installs the system packages mc's build, tests and benchmarks need, and nothing else.
# Idempotent: a package already present is not touched, and a machine that cannot reach
# a package registry (the GPU machine) skips quietly and builds with what it has.
set -u
PKGS="build-essential pkg-config libcmocka-dev nlohmann-json3-dev libssl-dev \
libibverbs-dev libcurl4-openssl-dev libhiredis-dev \
clang clang-format libclang-rt-14-dev valgrind gcovr swig \
iperf3 ucx-utils etcd-server etcd-client redis-server iproute2 nftables procps \
liburing-dev fio libmicrohttpd-dev"
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-deps: no apt-get; missing:$missing (continuing with what is here)" >&2
    exit 0
  fi
  SUDO=""
  [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && SUDO="sudo"
  echo "install-deps: installing:$missing" >&2
  export DEBIAN_FRONTEND=noninteractive
  if ! { $SUDO apt-get update -qq >/dev/null 2>&1 || true; } || \
     ! $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null 2>&1; then
    echo "install-deps: could not install:$missing (offline?); continuing with what is here" >&2
  fi
fi
# Prometheus for tests/test_metrics.c: Debian's package unpacked into the checkout's .deps/, not
# installed, so that no prometheus service of the package's is enabled or started here (the test
# runs its own on a free loopback port). Kept when a run finds it there already.
HERE="$(cd "$(dirname "$0")/.." && pwd)"
PROM="$HERE/.deps/prometheus"
if [ ! -x "$PROM/usr/bin/prometheus" ] && command -v apt-get >/dev/null 2>&1; then
  tmp="$(mktemp -d)"
  if (cd "$tmp" && { apt-get download prometheus >/dev/null 2>&1 ||
       { ${SUDO:-} apt-get update -qq >/dev/null 2>&1 && apt-get download prometheus >/dev/null 2>&1; }; }); then
    mkdir -p "$PROM" && dpkg-deb -x "$tmp"/prometheus_*.deb "$PROM" && echo "install-deps: prometheus unpacked into $PROM" >&2
  else
    echo "install-deps: could not download Debian's prometheus package (offline?)" >&2
  fi
  rm -rf "$tmp"
fi
# Python test dependencies of the Python binding (PyPI).
PY="$(command -v python3 || true)"
if [ -n "$PY" ] && ! "$PY" -c 'import pytest, numpy' >/dev/null 2>&1; then
  echo "install-deps: pip install pytest numpy" >&2
  "$PY" -m pip install -q pytest numpy >/dev/null 2>&1 || \
    echo "install-deps: could not pip install pytest numpy (offline?)" >&2
fi
# The etcd and redis packages may start daemons of their own; they are left alone: the tests
# start their own servers on free loopback ports and never touch the machine's services.
exit 0
