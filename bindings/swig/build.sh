#!/bin/bash
# build.sh [BUILD_DIR]: generates the Java binding from bindings/swig/mc.i with SWIG and builds it
# into BUILD_DIR/bindings/java: src/ (generated + hand-written sources), mc_wrap.c, libmcjni.so
# (linked to BUILD_DIR/lib/libmc.so with an rpath) and classes/. Extra .java files given after
# BUILD_DIR are compiled along (the test, the bench). Needs swig 4, gcc and a JDK; JAVA_HOME is
# taken from javac when unset. Prints the directory on its last line.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=$(cd "${1:-$root/build}" 2>/dev/null && pwd) || { echo "swig/build.sh: no build dir ${1:-build}" >&2; exit 2; }
shift || true
libdir="$build/lib"
[ -e "$libdir/libmc.so" ] || { echo "swig/build.sh: $libdir/libmc.so missing (make lib)" >&2; exit 2; }
for tool in swig gcc javac; do
  command -v "$tool" >/dev/null || { echo "swig/build.sh: $tool not found" >&2; exit 2; }
done
if [ -z "${JAVA_HOME:-}" ]; then
  JAVA_HOME=$(dirname "$(dirname "$(readlink -f "$(command -v javac)")")")
fi
[ -f "$JAVA_HOME/include/jni.h" ] || { echo "swig/build.sh: no jni.h under $JAVA_HOME/include" >&2; exit 2; }

out="$build/bindings/java"
rm -rf "$out/src" "$out/classes"
mkdir -p "$out/src/mc" "$out/classes"

# 1. Java sources and the C wrapper from mc.i, plus the hand-written classes.
swig -java -package mc -I"$root/include" -outdir "$out/src/mc" -o "$out/mc_wrap.c" "$here/mc.i"
cp "$here"/java/mc/*.java "$out/src/mc/"

# 2. The JNI library. SWIG's wrappers pun jlong and pointers: -fno-strict-aliasing, as SWIG's
#    Java documentation asks.
gcc -std=c11 -O2 -g -fPIC -shared -fno-strict-aliasing -Wall -Wno-unused-function \
  -I"$JAVA_HOME/include" -I"$JAVA_HOME/include/linux" -I"$root/include" \
  "$out/mc_wrap.c" -o "$out/libmcjni.so" -L"$libdir" -lmc -Wl,-rpath,"$libdir"

# 3. Classes.
javac -nowarn -Xlint:-removal -d "$out/classes" "$out"/src/mc/*.java "$@"
echo "$out"
