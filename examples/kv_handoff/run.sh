#!/bin/sh
# run.sh [BUILD_DIR] [kv_handoff.py options]: runs the example against BUILD_DIR's libmc and this
# tree's Python package (what `make test` does, at a small scale: a few seconds).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=$(cd "${1:-$root/build}" && pwd)
[ $# -gt 0 ] && shift
export PYTHONPATH="$root/bindings/python${PYTHONPATH:+:$PYTHONPATH}"
export MC_LIBRARY="$build/lib/libmc.so.0"
exec timeout 120 python3 "$here/kv_handoff.py" "$@"
