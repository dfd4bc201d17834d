#!/bin/bash
# run.sh [NAME [MiB]]: builds the Java binding with the example (build.sh against $BUILD, default
# build/) and runs examples/Transfer.java; without NAME it starts `mc_bench target` itself.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
build="${BUILD:-$root/build}"
out=$("$here/../build.sh" "$build" "$here/Transfer.java" | tail -n 1)
exec java -Dmc.jni.library="$out/libmcjni.so" -Dmc.bench="$build/bin/mc_bench" -cp "$out/classes" Transfer "$@"
