#!/bin/bash
# Builds and runs every binding's tests against the library in BUILD_DIR (default: build):
# Python (pytest, skips listed), Go (go test -race, then TestTransferAllocs without -race), Rust
# (mc-sys bindings check + cargo test), Java (SWIG, javac/java). Prints each runner's closing
# summary line and fails if any runner fails. MC_TEST_SLACK scales the tests' time limits.
# Set MC_BINDINGS="python go rust java" to choose; a toolchain that is missing fails the run.
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:-$root/build}" 2>/dev/null && pwd) || { echo "test-bindings: no build dir ${1:-build}" >&2; exit 2; }
libdir="$build/lib"
[ -e "$libdir/libmc.so.0" ] || { echo "test-bindings: $libdir/libmc.so.0 missing (make lib)" >&2; exit 2; }
limit="${MC_TEST_TIMEOUT:-600}"
which_bindings="${MC_BINDINGS:-python go rust$( [ -x "$root/bindings/swig/test.sh" ] && echo " java")}"

# A pkg-config file whose libdir is this build tree (the Go and Rust builds find libmc through it).
pcdir="$build/bindings/pkgconfig"
mkdir -p "$pcdir"
version=$(sed -n 's/^#define MC_VERSION_\(MAJOR\|MINOR\|PATCH\) \([0-9]*\)/\2/p' "$root/include/mc.h" | paste -sd.)
sed -e "s|@PREFIX@|$build|" -e "s|@LIBDIR@|$libdir|" -e "s|@INCLUDEDIR@|$root/include|" \
    -e "s|@VERSION@|$version|" -e "s|@LIBS_PRIVATE@|-lpthread -ldl -lstdc++ -lm|" \
    "$root/pkgconfig/mc.pc.in" > "$pcdir/mc.pc"
export PKG_CONFIG_PATH="$pcdir${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
export LD_LIBRARY_PATH="$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export MC_LIBRARY="$libdir/libmc.so.0" MC_BUILD_DIR="$build"
hsum=$(sha256sum "$root/include/mc.h" | cut -c1-16)

pass=0; fail=0; failed=(); summaries=()
log="$build/bindings/logs"; mkdir -p "$log"

# run NAME SUMMARY_REGEX CMD...: runs CMD with a time limit, shows its output, keeps the
# summary line(s).
run() {
  local name=$1 re=$2; shift 2
  echo "=== bindings: $name"
  timeout --signal=KILL "$limit" "$@" 2>&1 | tee "$log/$name.log"
  local rc=${PIPESTATUS[0]}
  local s
  s=$(grep -E "$re" "$log/$name.log" | tail -n 20 | paste -sd'|' | sed 's/|/ | /g')
  [ -n "$s" ] || s="(no summary line)"
  if [ "$rc" -eq 0 ]; then
    pass=$((pass + 1)); summaries+=("$name: $s")
  else
    fail=$((fail + 1)); failed+=("$name"); summaries+=("$name: FAILED (exit $rc): $s")
  fi
}

for b in $which_bindings; do
  case "$b" in
  python)
    # -rs: every skipped test is listed with its reason (SKIPPED [n] file:line: reason) and the
    # closing line counts them ("N passed, M skipped"): both go into the summary.
    run python '^[0-9]+ (passed|failed)|passed|failed|error|^SKIPPED' \
      env -C "$root/bindings/python" python3 -m pytest -q -rs -p no:cacheprovider tests
    ;;
  go)
    # CGO_* flags are part of Go's build cache key (pkg-config output is not): tie the cache to
    # this library directory and header.
    run go '^(ok|FAIL|---)' env -C "$root/bindings/go" GOTOOLCHAIN=local GOFLAGS=-mod=mod \
      CGO_CFLAGS="-O2 -g -DMC_H_SUM_$hsum" CGO_LDFLAGS="-O2 -g -L$libdir -Wl,-rpath,$libdir" \
      go test -race -count=1 ./...
    # TestTransferAllocs skips under -race (allocation counts differ there): a second pass
    # without the race detector runs it, and fails unless it ran and passed.
    run go-allocs '^(ok|FAIL|--- )' env -C "$root/bindings/go" GOTOOLCHAIN=local GOFLAGS=-mod=mod \
      CGO_CFLAGS="-O2 -g -DMC_H_SUM_$hsum" CGO_LDFLAGS="-O2 -g -L$libdir -Wl,-rpath,$libdir" \
      go test -count=1 -v -run '^TestTransferAllocs$' .
    if ! grep -q -- '--- PASS: TestTransferAllocs' "$log/go-allocs.log"; then
      echo "test-bindings: go-allocs: TestTransferAllocs did not run and pass"
      last=$((${#summaries[@]} - 1))
      if [[ ${summaries[$last]} != "go-allocs: FAILED"* ]]; then  # run counted it as passed
        fail=$((fail + 1)); failed+=("go-allocs"); pass=$((pass - 1))
        summaries[$last]="go-allocs: FAILED (TestTransferAllocs did not run and pass): ${summaries[$last]#go-allocs: }"
      fi
    fi
    ;;
  rust)
    run rust-bindgen-check '^mc-sys:' "$root/bindings/rust/mc-sys/generate.sh" --check
    run rust '^test result:|^error' env -C "$root/bindings/rust" cargo test -q --all-targets
    ;;
  java)
    run java '^(java:|Exception|FAIL)' "$root/bindings/swig/test.sh" "$build"
    ;;
  *) echo "test-bindings: unknown binding $b" >&2; fail=$((fail + 1)); failed+=("$b") ;;
  esac
done

echo "=== bindings summary ($build)"
for s in "${summaries[@]}"; do echo "  $s"; done
echo "=== bindings: $pass runners passed, $fail failed${failed:+: ${failed[*]}}"
[ "$fail" -eq 0 ]
