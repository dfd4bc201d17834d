#!/bin/bash
# ABI checks that cannot rot:
#  - include/mc.h compiles alone as C11 and as C++17, warning-free and pedantic;
#  - the exported symbols are exactly the MC_API functions the header declares, all mc_*,
#    all in the version node of src/libmc.map, whose MC_0.1 node text is pinned by a hash;
#  - the library links with -Wl,-z,defs (a probe link with LIB_LDFLAGS must refuse an
#    undefined symbol) and resolves every symbol (ldd -r);
#  - `make install` into a scratch prefix, then examples/ build through pkg-config (shared and
#    static) and run.
set -euo pipefail
# (grep -q exits at its first match; under pipefail the writer's SIGPIPE would then fail the pipe, so matches go to /dev/null instead.)
build="${1:-build}"
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
fail=0
say() { echo "check-abi: $*"; }

printf '#include <mc.h>\nint main(void){return (int)mc_version() < 0;}\n' > "$tmp/h.c"
cp "$tmp/h.c" "$tmp/h.cpp"
gcc -std=c11 -Wall -Wextra -Werror -pedantic -Iinclude -c "$tmp/h.c" -o "$tmp/h.o" || { say "mc.h does not compile as C11"; fail=1; }
g++ -std=c++17 -Wall -Wextra -Werror -pedantic -Iinclude -c "$tmp/h.cpp" -o "$tmp/hpp.o" || { say "mc.h does not compile as C++17"; fail=1; }

nm -D --defined-only "$build/lib/libmc.so" | awk '$2 ~ /^[TDBRVW]$/ {print $3}' | sed 's/@.*//' | grep -v '^MC_0' | sort -u > "$tmp/exported"
grep -oE 'MC_API[^;]*\b(mc_[a-z0-9_]+)\(' include/mc.h | grep -oE 'mc_[a-z0-9_]+\($' | tr -d '(' | sort -u > "$tmp/declared"
if ! diff -u "$tmp/declared" "$tmp/exported" > "$tmp/diff"; then
  say "exported symbols differ from the header's MC_API declarations:"; cat "$tmp/diff"; fail=1
fi
if grep -qv '^mc_' "$tmp/exported"; then say "non-mc_ symbols exported:"; grep -v '^mc_' "$tmp/exported"; fail=1; fi
# The version script names every symbol in the node that introduced it (no wildcard but the
# final "local: *"): the names listed over all nodes must be the declared set, and each export
# must carry the version of the node that lists it.
sed 's|/\*.*\*/||g' src/libmc.map | awk '
  /^[ \t]*MC_[0-9_.]+[ \t]*\{/ { node=$1; sub(/\{.*/, "", node); next }
  /global:/ { g=1; next } /local:/ || /^[ \t]*\}/ { g=0; next }
  g && /;/ { s=$0; gsub(/[ \t;]/, "", s); if (s != "") print s, node }' | sort -u > "$tmp/mapped"
cut -d' ' -f1 "$tmp/mapped" | sort -u > "$tmp/mapped_names"
if grep -E '[*?]' "$tmp/mapped_names" >/dev/null; then
  say "src/libmc.map exports by wildcard; name each symbol in its version node:"; grep -E '[*?]' "$tmp/mapped_names"; fail=1
fi
if ! diff -u "$tmp/declared" "$tmp/mapped_names" > "$tmp/mdiff"; then
  say "src/libmc.map and the header's MC_API declarations differ:"; cat "$tmp/mdiff"; fail=1
fi
nm -D --defined-only "$build/lib/libmc.so" | awk '$3 ~ /^mc_/ {print $3}' | sed 's/@@*/ /' | sort -u > "$tmp/versioned"
if ! diff -u "$tmp/mapped" "$tmp/versioned" > "$tmp/vdiff"; then
  say "exported symbols do not carry the version node src/libmc.map lists them in:"; cat "$tmp/vdiff"; fail=1
fi
say "$(wc -l < "$tmp/exported") exported functions, all declared in mc.h and named in src/libmc.map ($(cut -d' ' -f2 "$tmp/mapped" | sort -u | paste -sd' '))"

# The MC_0.1 node is frozen once released: its text (comments and blanks aside) must hash to the
# value pinned here. New symbols go in a new node (`MC_0.2 { global: ...; } MC_0.1;`); changing
# this hash is an ABI break and needs a new SONAME.
MAP_NODE_SHA256=3daa338c93673e1314d7e4a582980a7e1dc397fcbca7f34d064291dc283529a2
node_sha="$(awk '/^MC_0\.1[ \t]*\{/{on=1} on{print} on&&/^\}/{exit}' src/libmc.map |
  sed 's|/\*.*\*/||g; s/[ \t]//g' | grep -v '^$' | sha256sum | cut -d' ' -f1)"
if [ "$node_sha" != "$MAP_NODE_SHA256" ]; then
  say "the MC_0.1 node of src/libmc.map changed (sha256 $node_sha); it is frozen: add a new node instead"
  fail=1
fi
if ! readelf -V "$build/lib/libmc.so" | grep 'Name: MC_0.1' >/dev/null; then
  say "libmc.so has no MC_0.1 version definition"; fail=1
fi

# -Wl,-z,defs: the library's own link line must refuse an undefined symbol, and the built
# library must resolve every symbol against its DT_NEEDED libraries.
lib_ldflags="$(make -s --no-print-directory harden-print-LIB_LDFLAGS BUILD="$build")"
case " $lib_ldflags " in
  *" -Wl,-z,defs "*) ;;
  *) say "LIB_LDFLAGS lacks -Wl,-z,defs: $lib_ldflags"; fail=1 ;;
esac
printf 'extern int mc_no_such_symbol(void);\nint mc_probe(void){return mc_no_such_symbol();}\n' > "$tmp/undef.c"
gcc -fPIC -c "$tmp/undef.c" -o "$tmp/undef.o"
g++ -shared -o "$tmp/undef-plain.so" "$tmp/undef.o" || { say "probe: a plain -shared link failed"; fail=1; }
# shellcheck disable=SC2086
if g++ $lib_ldflags -o "$tmp/undef.so" "$tmp/undef.o" 2>/dev/null; then
  say "linking with LIB_LDFLAGS accepted an undefined symbol (-z defs not in effect)"; fail=1
fi
if ldd -r "$build/lib/libmc.so" 2>&1 | grep 'undefined symbol' >/dev/null; then
  say "libmc.so has unresolved symbols:"; ldd -r "$build/lib/libmc.so" 2>&1 | grep 'undefined symbol'; fail=1
fi

make -s install PREFIX="$tmp/prefix" BUILD="$build" >/dev/null
export PKG_CONFIG_PATH="$tmp/prefix/lib/pkgconfig"
for ex in examples/*.c; do
  name="$(basename "$ex" .c)"
  # shellcheck disable=SC2046
  gcc -std=c11 -Wall -Wextra -Werror "$ex" -o "$tmp/$name" $(pkg-config --cflags --libs mc) -Wl,-rpath,"$tmp/prefix/lib" \
    || { say "$ex does not build through pkg-config"; fail=1; continue; }
  # shellcheck disable=SC2046
  gcc -std=c11 -Wall -Wextra -Werror "$ex" -o "$tmp/${name}_static" $(pkg-config --cflags mc) \
    "$tmp/prefix/lib/libmc.a" $(pkg-config --static --libs-only-l mc | sed 's/-lmc//') \
    || { say "$ex does not link statically with pkg-config --static"; fail=1; continue; }
  "$tmp/$name" >/dev/null || { say "$ex failed when run (shared)"; fail=1; }
  "$tmp/${name}_static" >/dev/null || { say "$ex failed when run (static)"; fail=1; }
done
[ -x "$tmp/prefix/bin/mc_bench" ] || { say "mc_bench was not installed"; fail=1; }
[ "$(readlink "$tmp/prefix/lib/libmc.so.0")" = "libmc.so.0.1.0" ] || { say "libmc.so.0 link wrong"; fail=1; }
readelf -d "$tmp/prefix/lib/libmc.so.0.1.0" | grep 'SONAME.*libmc.so.0\]' >/dev/null || { say "SONAME is not libmc.so.0"; fail=1; }
if [ "$fail" -eq 0 ]; then say "all ABI checks passed"; else say "ABI checks FAILED"; fi
exit "$fail"
