#!/bin/bash
# test.sh [BUILD_DIR]: builds the Java binding (build.sh: SWIG, gcc against the JDK, javac) against
# BUILD_DIR/lib/libmc.so, runs examples/Transfer.java against an mc_bench target in another
# process, then bindings/swig/test/McTest with JNI checks on. Its last line is
# "java: N passed, M failed"; the exit status is non-zero when any failed. scripts/test-bindings.sh
# runs it when it is executable.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
command -v java >/dev/null || { echo "swig/test.sh: java not found" >&2; exit 2; }
root=$(cd "$here/../.." && pwd)
build=$(cd "${1:-$root/build}" && pwd)
out=$("$here/build.sh" "$build" "$here/test/McTest.java" "$here/examples/Transfer.java" | tail -n 1)
# The example against an mc_bench target in another process (it starts and stops the target).
if [ -x "$build/bin/mc_bench" ]; then
  java -Dmc.jni.library="$out/libmcjni.so" -Dmc.bench="$build/bin/mc_bench" -cp "$out/classes" Transfer ||
    { echo "swig/test.sh: examples/Transfer.java failed" >&2; echo "java: 0 passed, 1 failed"; exit 1; }
else
  echo "swig/test.sh: $build/bin/mc_bench not built; examples/Transfer.java not run" >&2
fi
exec java -ea -Xcheck:jni -Dmc.jni.library="$out/libmcjni.so" -cp "$out/classes" McTest
