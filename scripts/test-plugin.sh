#!/bin/bash
# Transport plugins from outside the tree, as a vendor builds and qualifies one:
#   install   `make install PREFIX=<temp>` from BUILD_DIR (default: build); headers, library,
#             mc_conformance and mc.pc land there
#   build     examples/plugin, copied out of the tree, built with its own Makefile against that
#             install through PKG_CONFIG_PATH alone; tests/plugin/bad_version.c and e2e.c the same
#   conformance  `mc_conformance --transport uds --plugin <it>` (installed binary): every case
#   version   `mc_conformance --plugin <bad_version>` is refused, naming both versions
#   liar      a plugin that reports OK and moves nothing (tests/plugin/liar.c) fails
#             mc_conformance (exit 1, every case failed): qualification can fail
#   e2e       two processes, engines with plugins=<it> transports=uds: READ and WRITE checked
#             byte for byte; plugin key validation; a missing and a mismatched plugin fail
#             mc_engine_create with MC_ERR_UNSUPPORTED
# Prints "plugin: N passed, M failed"; exits non-zero when a step failed.
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:-$root/build}" 2>/dev/null && pwd) || { echo "test-plugin: no build dir ${1:-build}" >&2; exit 2; }
limit="${MC_TEST_TIMEOUT:-300}"
tmp=$(mktemp -d /tmp/mc-plugin.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
prefix="$tmp/prefix"
unset LD_LIBRARY_PATH MC_PLUGIN_PATH
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"

pass=0; fail=0; failed=()
step() {  # step NAME FUNCTION
  echo "=== plugin: $1"
  if timeout --signal=KILL "$limit" bash -c "$2"; then pass=$((pass + 1)); else
    echo "plugin: $1 FAILED"; fail=$((fail + 1)); failed+=("$1"); fi
}

install_mc() {
  make -s -C "$root" BUILD="$build" install PREFIX="$prefix" >"$tmp/install.log" 2>&1 ||
    { cat "$tmp/install.log"; return 1; }
  ls "$prefix/include/mc_transport_plugin.h" "$prefix/bin/mc_conformance" "$prefix/lib/pkgconfig/mc.pc" >/dev/null
}

build_all() (
  set -e
  cp -r "$root/examples/plugin" "$tmp/uds" && make -s -C "$tmp/uds" CFLAGS="-O2 -g -Werror"
  cd "$tmp" && cp "$root"/tests/plugin/{bad_version.c,liar.c,e2e.c} .
  for p in bad_version liar; do
    cc -std=c11 -Wall -Wextra -Werror -fPIC -shared $(pkg-config --cflags mc) $p.c -o $p.so
  done
  cc -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror e2e.c $(pkg-config --cflags --libs mc) \
    -Wl,-rpath,"$(pkg-config --variable=libdir mc)" -o e2e
)

conformance() { "$prefix/bin/mc_conformance" --transport uds --plugin "$tmp/uds/mc_transport_uds.so"; }

version() {
  out=$("$prefix/bin/mc_conformance" --transport future --plugin "$tmp/bad_version.so" 2>&1); rc=$?
  echo "$out"
  [ "$rc" -eq 2 ] && echo "$out" | grep -q "bad_version.so: built against transport plugin interface version 2" &&
    echo "$out" | grep -q "loads plugin interface versions 1..1"
}

liar() {
  out=$("$prefix/bin/mc_conformance" --transport liar --plugin "$tmp/liar.so" 2>&1); rc=$?
  echo "$out" | grep -E '^(\[  FAILED  \]|=== summary)' | head -3
  [ "$rc" -eq 1 ] && echo "$out" | grep -qE "=== summary \(mc_conformance liar\): 0 cases passed, [1-9][0-9]* failed"
}

e2e() { "$tmp/e2e" "$tmp/uds/mc_transport_uds.so" "$tmp/bad_version.so" "$tmp/missing.so"; }

export root build tmp prefix
export -f install_mc build_all conformance version liar e2e
step install install_mc
step build build_all
if [ "$fail" -eq 0 ]; then
  step conformance conformance
  step version version
  step liar liar
  step e2e e2e
fi
echo "plugin: $pass passed, $fail failed${failed[*]:+ (${failed[*]})}"
[ "$fail" -eq 0 ]
