#!/bin/bash
# Builds programs written OUTSIDE the project tree against mc exactly as its READMEs say, runs
# them (loopback transfer, data verified) and fails if any step fails:
#   install  `make install PREFIX=<temp>` from BUILD_DIR (default: build)
#   c        tests/consumers/c/app.c with README.md's recipe (pkg-config + rpath from its libdir)
#   go       tests/consumers/go with bindings/go/README.md (require + replace, go mod tidy
#            offline, go build with CGO_LDFLAGS' rpath); bindings/go/examples/transfer builds
#   rust     tests/consumers/rust with bindings/rust/README.md (path dependency, pkg-config,
#            build.rs rpath from DEP_MC_RS_LIBDIR)
#   rust-vendored  the same crate, `cargo build --features vendored`, with no install in sight
#            (PKG_CONFIG_PATH empty); its binary must not need libmc.so
# None of them gets LD_LIBRARY_PATH: a binary that cannot find libmc.so.0 fails. Prints
# "consumers: N passed, M failed". Set MC_CONSUMERS="c go rust rust-vendored" to choose.
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:-$root/build}" 2>/dev/null && pwd) || { echo "test-consumers: no build dir ${1:-build}" >&2; exit 2; }
which="${MC_CONSUMERS:-c go rust rust-vendored}"
limit="${MC_TEST_TIMEOUT:-900}"
tmp=$(mktemp -d /tmp/mc-consumers.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
prefix="$tmp/prefix"
unset LD_LIBRARY_PATH MC_LIBRARY
export GOTOOLCHAIN=local  # never fetch a toolchain
unset GOFLAGS              # the README's steps alone
# One cargo target dir for both Rust builds of this run (crates.io deps compile once).
export CARGO_TARGET_DIR="$tmp/cargo-target"

pass=0; fail=0; failed=()
step() {  # step NAME FUNCTION: runs the function in a child bash with a time limit
  local name=$1 fn=$2
  echo "=== consumers: $name"
  if timeout --signal=KILL "$limit" bash -c "$fn"; then pass=$((pass + 1)); else
    echo "consumers: $name FAILED"; fail=$((fail + 1)); failed+=("$name"); fi
}

install_mc() {
  # Only the install: BUILD_DIR is already built (make -q would rebuild nothing).
  make -s -C "$root" BUILD="$build" install PREFIX="$prefix" >"$tmp/install.log" 2>&1 ||
    { cat "$tmp/install.log"; return 1; }
  ls "$prefix/lib/pkgconfig/mc.pc" "$prefix/lib/libmc.so.0" >/dev/null
}

# README.md, "Use it from C".
c_consumer() (
  set -e
  mkdir -p "$tmp/c" && cp "$root/tests/consumers/c/app.c" "$tmp/c/" && cd "$tmp/c"
  export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
  cc app.c $(pkg-config --cflags --libs mc) -Wl,-rpath,"$(pkg-config --variable=libdir mc)" -o app
  ./app
)

# bindings/go/README.md, "Install" steps 2 to 4; GOPROXY=off proves tidy needs no network.
go_consumer() (
  set -e
  mkdir -p "$tmp/go" && cp "$root"/tests/consumers/go/{go.mod,main.go} "$tmp/go/" && cd "$tmp/go"
  export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
  export CGO_LDFLAGS="-Wl,-rpath,$(pkg-config --variable=libdir mc)"
  go mod edit -require=github.com/mc-project/mc/bindings/go@v0.0.0 \
              -replace=github.com/mc-project/mc/bindings/go="$root/bindings/go"
  GOPROXY=off go mod tidy
  go build -o app .
  ./app
  # The README's example builds too (output kept out of the tree).
  (cd "$root/bindings/go" && go build -o "$tmp/go/transfer" ./examples/transfer)
  [ -x "$tmp/go/transfer" ]
)

rust_crate() {  # copies the consumer crate to $tmp/$1 with its path dependency filled in
  mkdir -p "$tmp/$1/src"
  sed "s|@MC_ROOT@|$root|" "$root/tests/consumers/rust/Cargo.toml" > "$tmp/$1/Cargo.toml"
  cp "$root/tests/consumers/rust/build.rs" "$tmp/$1/"
  cp "$root/tests/consumers/rust/src/main.rs" "$tmp/$1/src/"
}

# bindings/rust/README.md, "With an installed libmc".
rust_consumer() (
  set -e
  rust_crate rust && cd "$tmp/rust"
  export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
  cargo build -q
  "$CARGO_TARGET_DIR/debug/mc-consumer"
)

# bindings/rust/README.md, "Without installing (vendored)".
rust_vendored() (
  set -e
  rust_crate rust-vendored && cd "$tmp/rust-vendored"
  export PKG_CONFIG_PATH= PKG_CONFIG_LIBDIR=/nonexistent
  local before; before=$(git -C "$root" status --porcelain --ignored -- include src pkgconfig Makefile)
  cargo build -q --features vendored
  bin="$CARGO_TARGET_DIR/debug/mc-consumer"
  if ldd "$bin" | grep -q 'libmc\.so'; then echo "rust-vendored: binary needs libmc.so"; exit 1; fi
  "$bin"
  # The build ran make into OUT_DIR, never into the source tree.
  [ "$(git -C "$root" status --porcelain --ignored -- include src pkgconfig Makefile)" = "$before" ] ||
    { echo "rust-vendored: the source tree changed"; exit 1; }
)

export root build tmp prefix
export -f install_mc c_consumer go_consumer rust_crate rust_consumer rust_vendored
step install install_mc
for c in $which; do
  [ -e "$prefix/lib/libmc.so.0" ] || [ "$c" = rust-vendored ] ||
    { echo "consumers: $c: no install"; fail=$((fail + 1)); failed+=("$c"); continue; }
  case "$c" in
  c) step c c_consumer ;;
  go) step go go_consumer ;;
  rust) step rust rust_consumer ;;
  rust-vendored) step rust-vendored rust_vendored ;;
  *) echo "test-consumers: unknown consumer $c" >&2; exit 2 ;;
  esac
done
echo "consumers: $pass passed, $fail failed${failed[*]:+ (${failed[*]})}"
[ "$fail" -eq 0 ]
