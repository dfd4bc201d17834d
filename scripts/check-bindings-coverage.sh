#!/bin/bash
# Lists every exported mc_* function of BUILD_DIR/lib/libmc.so that a binding does not cover and
# fails on any gap not listed in bindings/uncovered.txt (lines "BINDING FUNCTION REASON").
#   python: the name appears in bindings/python/mc/*.py
#   go:     the name appears in bindings/go/*.go (not tests)
#   rust:   the name appears in bindings/rust/mc/src/*.rs (the safe crate)
#   java:   the SWIG wrapper generated from bindings/swig/mc.i exports a JNI entry point for it
#           (Java_mc_McJNI_<name>: wrapped, not %ignore'd; a name only called from helper code
#           does not count)
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
build="${1:-$root/build}"
lib="$build/lib/libmc.so"
[ -e "$lib" ] || { echo "check-bindings-coverage: $lib missing" >&2; exit 2; }
allow="$root/bindings/uncovered.txt"

funcs=$(nm -D --defined-only "$lib" | awk '$2 == "T" {sub(/@.*/, "", $3); print $3}' | grep '^mc_' | sort -u)

# The Java wrapper: generated into a temporary directory when swig is here.
java_src=""
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
if [ -f "$root/bindings/swig/mc.i" ] && command -v swig >/dev/null 2>&1; then
  mkdir -p "$tmp/java"
  if swig -java -package mc -I"$root/include" -outdir "$tmp/java" -o "$tmp/mc_wrap.c" \
       "$root/bindings/swig/mc.i" >"$tmp/swig.log" 2>&1; then
    # One line per JNI entry point, named back from JNI's mangling (_1 is '_').
    sed -n 's/^SWIGEXPORT [^(]* JNICALL Java_mc_McJNI_\([A-Za-z0-9_]*\)(.*/\1/p' "$tmp/mc_wrap.c" |
      sed 's/_1/_/g' > "$tmp/java_entries"
    java_src="$tmp/java_entries"
  else
    echo "check-bindings-coverage: swig failed on bindings/swig/mc.i:" >&2
    cat "$tmp/swig.log" >&2
  fi
fi

sources() {
  case "$1" in
  python) ls "$root"/bindings/python/mc/*.py 2>/dev/null ;;
  go) ls "$root"/bindings/go/*.go 2>/dev/null | grep -v '_test\.go$' ;;
  rust) ls "$root"/bindings/rust/mc/src/*.rs 2>/dev/null ;;
  java) [ -n "$java_src" ] && echo "$java_src" ;;
  esac
}

gaps=0; listed=0; stale=()
for b in python go rust java; do
  files=$(sources "$b")
  missing=()
  for f in $funcs; do
    if [ -n "$files" ] && grep -qw -- "$f" $files; then
      grep -qE "^$b[[:space:]]+$f([[:space:]]|$)" "$allow" 2>/dev/null && stale+=("$b $f")
      continue
    fi
    if grep -qE "^$b[[:space:]]+$f([[:space:]]|$)" "$allow" 2>/dev/null; then
      listed=$((listed + 1))
    else
      missing+=("$f")
    fi
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "$b: not covered: ${missing[*]}"
    gaps=$((gaps + ${#missing[@]}))
  fi
done
for s in "${stale[@]}"; do echo "note: bindings/uncovered.txt lists $s, which is covered now"; done
n=$(echo "$funcs" | wc -w)
echo "=== bindings coverage: $n exported functions, 4 bindings, $gaps unlisted gaps, $listed listed in bindings/uncovered.txt"
[ "$gaps" -eq 0 ]
