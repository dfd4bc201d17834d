#!/bin/bash
# Lists every exported mc_* function of BUILD_DIR/lib/libmc.so that a binding does not cover and
# fails on any gap not listed in bindings/uncovered.txt (lines "BINDING FUNCTION REASON").
#   python: the name appears in bindings/python/mc/*.py
#   go:     the name appears in bindings/go/*.go (not tests)
#   rust:   the name appears in bindings/rust/mc/src/*.rs (the safe crate)
#   java:   the SWIG wrapper generated from bindings/swig/mc.i exports a JNI entry point for it
#           (Java_mc_McJNI_<name>: wrapped, not %ignore'd; a name only called from helper code
#           does not count)
# Then compares METHOD SETS: every name of bindings/methods.txt (operation -> its name in python,
# go, rust, java) must be defined in that binding's sources, or be allowed by a line
# "BINDING-method OPERATION REASON" in bindings/uncovered.txt.
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
    cp "$root"/bindings/swig/java/mc/*.java "$tmp/java/" 2>/dev/null
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
n=$(echo "$funcs" | wc -w)
echo "=== bindings coverage: $n exported functions, 4 bindings, $gaps unlisted gaps, $listed listed in bindings/uncovered.txt"

# ---- method sets
# in_block FILES OPEN_RE MEMBER_RE END_RE: a line matching MEMBER_RE between a line matching
# OPEN_RE and the next line matching END_RE.
in_block() {
  local files=$1 open=$2 member=$3 end=$4
  # shellcheck disable=SC2086
  awk -v o="$open" -v m="$member" -v e="$end" '
    $0 ~ o { inb = 1; next }
    inb && $0 ~ e { inb = 0 }
    inb && $0 ~ m { found = 1; exit }
    END { exit !found }' $files
}

# has_def BINDING CELL: whether the binding's sources define CELL (see bindings/methods.txt).
has_def() {
  local b=$1 cell=$2 type="" m
  case "$cell" in *.*) type=${cell%%.*}; m=${cell#*.} ;; *) m=$cell ;; esac
  local py="$root/bindings/python/mc/*.py" rs="$root/bindings/rust/mc/src/*.rs"
  local go; go=$(sources go | tr '\n' ' ')
  local W='([^A-Za-z0-9_]|$)' S='[[:space:]]'  # end of a word (no \b in awk), a blank
  # shellcheck disable=SC2086
  case "$b/$type" in
  python/) grep -qE "^(class|def) $m$W|^$m$S*=" $py ;;
  python/*) in_block "$py" "^class $type$W" "^$S+(def $m$W|$m$S*=)" "^[^[:space:]#@)]" ;;
  go/) [ -n "$go" ] && grep -qE "^func $m\(|^type $m$W|^$S*$m$S+(=|[A-Za-z*].*=)|^(var|const) $m$W" $go ;;
  go/*) [ -n "$go" ] && grep -qE "^func \([a-z]+ \*?$type\) $m\(" $go ;;
  rust/) grep -qE "pub (fn|struct|enum) $m$W" $rs ;;
  rust/*) in_block "$rs" "^impl(<[^>]*>)? ([A-Za-z:]+ for )?$type$W" "^    (pub )?(unsafe )?fn $m$W" "^}" ||
          in_block "$rs" "^pub enum $type$W" "^    $m$W" "^}" ;;
  java/) [ -n "$java_src" ] && { [ -f "$tmp/java/$m.java" ] || grep -qE "public static .* $m\(" "$tmp/java/Mc.java"; } ;;
  java/*) [ -n "$java_src" ] && [ -f "$tmp/java/$type.java" ] &&
          grep -qE "^  public .*[ .]$m\(|^  $m\(" "$tmp/java/$type.java" ;;
  *) return 1 ;;
  esac
}

methods="$root/bindings/methods.txt"
mgaps=0; mlisted=0; mrows=0
if [ -f "$methods" ]; then
  cols=(python go rust java)
  while read -r op c1 c2 c3 c4 rest; do
    case "$op" in ''|'#'*) continue ;; esac
    [ -z "$c4" ] || [ -n "$rest" ] && { echo "bindings/methods.txt: bad line for $op"; mgaps=$((mgaps + 1)); continue; }
    mrows=$((mrows + 1))
    cells=("$c1" "$c2" "$c3" "$c4")
    for i in 0 1 2 3; do
      b=${cols[$i]}
      if has_def "$b" "${cells[$i]}"; then
        grep -qE "^$b-method[[:space:]]+$op([[:space:]]|$)" "$allow" 2>/dev/null && stale+=("$b-method $op")
      elif grep -qE "^$b-method[[:space:]]+$op([[:space:]]|$)" "$allow" 2>/dev/null; then
        mlisted=$((mlisted + 1))
      else
        echo "$b: missing method for $op: ${cells[$i]}"
        mgaps=$((mgaps + 1))
      fi
    done
  done < "$methods"
else
  echo "check-bindings-coverage: $methods missing"; mgaps=1
fi
for s in "${stale[@]}"; do echo "note: bindings/uncovered.txt lists $s, which is covered now"; done
echo "=== bindings method sets: $mrows operations, 4 bindings, $mgaps missing, $mlisted listed in bindings/uncovered.txt"
[ "$gaps" -eq 0 ] && [ "$mgaps" -eq 0 ]
