#!/usr/bin/env bash
# run.sh [BUILD_DIR] - the cost of one small mc_transfer through each binding, in one run.
#
# Every language does the same thing: two engines in one process (listen 127.0.0.1:0,
# transports=shm: the same-host path, chosen because it is the same for every language and
# involves no socket per request), a 4 KiB buffer registered on each, the initiator opens the
# target's segment by name and times synchronous 8-byte WRITEs (mc_transfer, one request,
# no timeout), each through the binding's ordinary call:
#   C       mc_transfer(a, &req, 1, -1)                      bench_c.c
#   Python  Engine.write(buf, seg, remote, length=8)         bench_py.py (the mc package, ctypes)
#   Python  lib.mc_transfer(h, byref(req), 1, -1) (raw)      bench_py.py raw: the bare ctypes call
#   Python  unchecked.mc_transfer(h, ref, one, -1)           bench_py.py unchecked: no argtypes or
#           errcheck, prebuilt arguments (the floor under Engine.write's fast path)
#   Go      Engine.Write(buf[:8], seg, remote, -1)           go/main.go (bindings/go, cgo)
#   Go      C.mc_transfer(a, &req, 1, -1) (raw)              go/raw.go go-raw: mc_transfer straight
#           through cgo, engines and request set up in C as in bench_c.c (the floor under Write)
#   Go      C.noop() (go-noop)                               go/raw.go: a cgo call of a C function
#           that returns 0; ns per call, not per transfer (the cgo transition alone)
#   Rust    Engine::write(&buf[..8], &seg, remote)           rust/src/main.rs (bindings/rust/mc)
#   Java    Mc.mc_transfer(a, Request[]{...}, -1)            BenchJava.java (bindings/swig, JNI)
# Memory: every row registers ordinary memory on both ends (Rust through Engine::register), so
# every row does the same work per request; none uses mc_buffer_alloc (memfd) memory, which shm
# would reach by a plain memcpy instead of process_vm_writev.
# Each run warms up, times CHUNKS chunks of ITERS/CHUNKS transfers and reports the median chunk;
# ROUNDS rounds run every language once each, in a rotating order, so that load from elsewhere
# on the machine hits all of them alike. The table gives the median over rounds (ns/op) and the
# deltas against C (difference of medians, of bests, and "paired": the median of the per-round
# differences); every raw figure goes to bench/results/bindings.txt.
#
# Knobs: BENCH_ROUNDS (5), BENCH_ITERS (20000), BENCH_WARMUP (2000), BENCH_CHUNKS (5),
# BENCH_TRANSPORTS (shm), BENCH_LANGS ("c python python-raw python-unchecked go go-raw go-noop rust java"), BENCH_NO_BUILD=1 (use
# the programs already built under BUILD_DIR/bench-bindings and BUILD_DIR/bindings/java, e.g. on
# a machine without the toolchains), BENCH_CPUS (a taskset CPU list every run is pinned to, e.g.
# "2-5"; unset: not pinned), BENCH_JAVA (java), BENCH_OUTFILE (bench/results/bindings.txt).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BUILD=$(cd "${1:-$ROOT/build}" && pwd)
LIBDIR=$BUILD/lib
OUTFILE=${BENCH_OUTFILE:-$ROOT/bench/results/bindings.txt}
ROUNDS=${BENCH_ROUNDS:-5}
ITERS=${BENCH_ITERS:-20000}
WARMUP=${BENCH_WARMUP:-2000}
CHUNKS=${BENCH_CHUNKS:-5}
export BENCH_TRANSPORTS=${BENCH_TRANSPORTS:-shm}
LANGS=(${BENCH_LANGS:-c python python-raw python-unchecked go go-raw go-noop rust java})

[[ -e $LIBDIR/libmc.so.0 ]] || { echo "run.sh: $LIBDIR/libmc.so.0 missing (make lib)" >&2; exit 1; }
WORK=$BUILD/bench-bindings
mkdir -p "$WORK" "$(dirname "$OUTFILE")"
export LD_LIBRARY_PATH="$LIBDIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export MC_LIBRARY=$LIBDIR/libmc.so.0 PYTHONPATH="$ROOT/bindings/python${PYTHONPATH:+:$PYTHONPATH}"

# ------------------------------------------------------------------ build

# A pkg-config file whose libdir is this build tree, for cgo and the mc-sys build script.
pcdir=$WORK/pkgconfig
mkdir -p "$pcdir"
version=$(sed -n 's/^#define MC_VERSION_\(MAJOR\|MINOR\|PATCH\) \([0-9]*\)/\2/p' "$ROOT/include/mc.h" | paste -sd.)
sed -e "s|@PREFIX@|$BUILD|" -e "s|@LIBDIR@|$LIBDIR|" -e "s|@INCLUDEDIR@|$ROOT/include|" \
    -e "s|@VERSION@|$version|" -e "s|@LIBS_PRIVATE@|-lpthread -ldl -lstdc++ -lm|" \
    "$ROOT/pkgconfig/mc.pc.in" > "$pcdir/mc.pc"
export PKG_CONFIG_PATH="$pcdir${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"

want() { local l; for l in "${LANGS[@]}"; do [[ $l == "$1" ]] && return 0; done; return 1; }

JAVA_OUT=$BUILD/bindings/java
if [[ -n ${BENCH_NO_BUILD:-} ]]; then
  echo "=== using the programs under $WORK and $JAVA_OUT"
else
echo "=== building"
if want c; then
  gcc -std=c11 -O2 -g -Wall -Wextra -I"$ROOT/include" "$HERE/bench_c.c" -o "$WORK/bench_c" \
    -L"$LIBDIR" -lmc -Wl,-rpath,"$LIBDIR"
fi
if want go || want go-raw || want go-noop; then
  (cd "$HERE/go" && GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_CFLAGS="-O2 -g" \
     CGO_LDFLAGS="-O2 -g -L$LIBDIR -Wl,-rpath,$LIBDIR" go build -o "$WORK/bench_go" .)
fi
if want rust; then
  (cd "$HERE/rust" && CARGO_TARGET_DIR="$WORK/rust-target" cargo build -q --release --offline)
  cp "$WORK/rust-target/release/bench_rust" "$WORK/bench_rust"
fi
if want java; then
  JAVA_OUT=$("$ROOT/bindings/swig/build.sh" "$BUILD" "$HERE/BenchJava.java" | tail -n 1)
fi
fi

cmd_for() {
  case $1 in
  c) echo "$WORK/bench_c" ;;
  python) echo "python3 $HERE/bench_py.py" ;;
  python-raw) echo "python3 $HERE/bench_py.py" ;;
  python-unchecked) echo "python3 $HERE/bench_py.py" ;;
  go | go-raw | go-noop) echo "$WORK/bench_go" ;;
  rust) echo "$WORK/bench_rust" ;;
  java) echo "${BENCH_JAVA:-java} -Dmc.jni.library=$JAVA_OUT/libmcjni.so -cp $JAVA_OUT/classes BenchJava" ;;
  esac
}

# ------------------------------------------------------------------ runs

RAW=$WORK/raw.txt
: > "$RAW"
declare -A TRANSPORT
echo "=== $ROUNDS rounds x ${LANGS[*]}: $ITERS x 8-byte WRITE each (median of $CHUNKS chunks), transports=$BENCH_TRANSPORTS"
n=${#LANGS[@]}
for ((r = 1; r <= ROUNDS; r++)); do
  for ((k = 0; k < n; k++)); do
    lang=${LANGS[$(((k + r - 1) % n))]}
    extra=""
    [[ $lang == python-raw ]] && extra=raw
    [[ $lang == python-unchecked ]] && extra=unchecked
    [[ $lang == go-raw ]] && extra=raw
    [[ $lang == go-noop ]] && extra=noop
    pin=()
    [[ -n ${BENCH_CPUS:-} ]] && pin=(taskset -c "$BENCH_CPUS")
    out=$(timeout 300 "${pin[@]}" $(cmd_for "$lang") "$ITERS" "$WARMUP" "$CHUNKS" $extra)
    ns=$(awk '$1 == "ns_per_op" {print $2}' <<<"$out")
    TRANSPORT[$lang]=$(awk '$1 == "transport" {print $2}' <<<"$out")
    [[ -n $ns ]] || { echo "run.sh: $lang printed no figure: $out" >&2; exit 1; }
    echo "round $r $lang $ns" | tee -a "$RAW"
  done
done

# Before the results file is rewritten (the rewrite itself would count as a local change).
REV="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet 2>/dev/null || echo '+local changes')"
median() { sort -g | awk '{v[NR] = $1} END {if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
declare -A MED MIN PAIRED
for lang in "${LANGS[@]}"; do
  MED[$lang]=$(awk -v l="$lang" '$3 == l {print $4}' "$RAW" | median)
  MIN[$lang]=$(awk -v l="$lang" '$3 == l {print $4}' "$RAW" | sort -g | head -1)
  # The median over rounds of (this language - C in the same round): less sensitive to load
  # that comes and goes between rounds than the difference of the two medians.
  PAIRED[$lang]=$(awk -v l="$lang" '$3 == "c" {c[$2] = $4} $3 == l {x[$2] = $4}
    END {for (r in x) if (r in c) print x[r] - c[r]}' "$RAW" | median)
done

{
  echo "# bench/bindings: one 8-byte mc_transfer (WRITE, one request, synchronous) through each binding"
  echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ) $(uname -sr), $(nproc) CPUs ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1))"
  echo "# mc $REV, library $LIBDIR/libmc.so.0"
  echo "# two engines in one process per language, transports=$BENCH_TRANSPORTS (segment transport: $(for l in "${LANGS[@]}"; do printf '%s=%s ' "$l" "${TRANSPORT[$l]}"; done))"
  echo "# $ROUNDS rounds, rotating order; per run $WARMUP warm-up + $ITERS timed transfers in $CHUNKS chunks (median chunk); table: median over rounds"
  echo "# load average: $(cut -d' ' -f1-3 /proc/loadavg); python $(python3 -c 'import platform; print(platform.python_version())'), $(${BENCH_JAVA:-java} -version 2>&1 | head -1)"
  echo
  echo "# pinned to CPUs: ${BENCH_CPUS:-no}"
  printf '%-16s %12s %12s %10s %12s %12s %14s\n' language "median ns/op" "vs C (ns)" "vs C (%)" "best ns/op" "best vs C" "paired vs C"
  c=${MED[c]:-}
  for lang in "${LANGS[@]}"; do
    m=${MED[$lang]}
    if [[ -n $c ]]; then
      awk -v l="$lang" -v m="$m" -v c="$c" -v b="${MIN[$lang]}" -v cb="${MIN[c]}" -v p="${PAIRED[$lang]}" \
        'BEGIN {printf "%-16s %12.0f %+12.0f %+9.1f%% %12.0f %+11.1f%% %+14.0f\n", l, m, m - c, (m - c) / c * 100, b, (b - cb) / cb * 100, p}'
    else
      printf '%-16s %12.0f\n' "$lang" "$m"
    fi
  done
  if [[ -n $c ]]; then
    echo
    echo "goals (on the medians): Rust and Go within 10% of C, Python within 3000 ns of C"
    for lang in go rust; do
      [[ -n ${MED[$lang]:-} ]] && awk -v l="$lang" -v m="${MED[$lang]}" -v c="$c" \
        'BEGIN {d = (m - c) / c * 100; printf "  %-6s %+6.1f%%  %s\n", l, d, (d <= 10 ? "met" : "NOT met")}'
    done
    [[ -n ${MED[python]:-} ]] && awk -v m="${MED[python]}" -v c="$c" \
      'BEGIN {d = m - c; printf "  python %+6.0f ns %s\n", d, (d <= 3000 ? "met" : "NOT met")}'
  fi
  echo
  echo "## raw figures (ns/op per run)"
  sed 's/^/  /' "$RAW"
} > "$OUTFILE"
echo
cat "$OUTFILE"
