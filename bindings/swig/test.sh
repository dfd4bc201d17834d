#!/bin/bash
# test.sh [BUILD_DIR]: builds the Java binding (build.sh: SWIG, gcc against the JDK, javac) against
# BUILD_DIR/lib/libmc.so and runs bindings/swig/test/McTest with JNI checks on. Its last line is
# "java: N passed, M failed"; the exit status is non-zero when any failed. scripts/test-bindings.sh
# runs it when it is executable.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
command -v java >/dev/null || { echo "swig/test.sh: java not found" >&2; exit 2; }
out=$("$here/build.sh" "${1:-}" "$here/test/McTest.java" | tail -n 1)
exec java -ea -Xcheck:jni -Dmc.jni.library="$out/libmcjni.so" -cp "$out/classes" McTest
