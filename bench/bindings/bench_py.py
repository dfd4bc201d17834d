"""bench_py.py - the Python row of bench/bindings: one 8-byte WRITE through Engine.write (the
package's sync helper; ctypes underneath) between two engines in this process; also the bare
ctypes call (lib.mc_transfer as declared, argtypes and errcheck, with a prebuilt mc_request_t) and
the unchecked one (mc._lib.unchecked.mc_transfer: no argtypes, no errcheck, prebuilt ctypes
arguments; the floor of any ctypes helper, which Engine.write's fast path uses) to show where the
time goes.
usage: python3 bench_py.py ITERS WARMUP CHUNKS [raw|unchecked] -> "transport NAME", "ns_per_op X"."""
import ctypes
import os
import statistics
import sys
import time

import mc
from mc import _lib


def main():
    iters, warmup, chunks = (int(a) for a in sys.argv[1:4])
    mode = sys.argv[4] if len(sys.argv) > 4 else ""
    transports = os.environ.get("BENCH_TRANSPORTS", "shm")
    a = mc.Engine(listen="127.0.0.1:0", transports=transports)
    b = mc.Engine(listen="127.0.0.1:0", transports=transports)
    local = a.alloc(4096)
    target = b.alloc(4096)
    memoryview(local)[:8] = b"\x07" * 8
    seg = a.open(b.name)
    remote = seg.buffers[0].addr
    print("transport", seg.info().transport, flush=True)

    if mode == "raw":
        req = _lib.RequestC(1, 0, local.addr, seg.handle, remote, 8)
        ref = ctypes.byref(req)
        h = a._h()
        f = _lib.lib.mc_transfer

        def op():
            f(h, ref, 1, -1)
    elif mode == "unchecked":
        req = _lib.RequestC(1, 0, local.addr, seg.handle, remote, 8)
        ref = ctypes.byref(req)
        h = a._h()
        f = _lib.unchecked.mc_transfer
        one = ctypes.c_size_t(1)

        def op():
            if f(h, ref, one, -1):
                raise _lib.error(-1)
    elif mode:
        sys.exit(f"bench_py.py: unknown mode {mode!r}")
    else:
        def op():
            a.write(local, seg, remote, length=8)

    for _ in range(warmup):
        op()
    per = []
    n = iters // chunks
    for _ in range(chunks):
        t0 = time.perf_counter_ns()
        for _ in range(n):
            op()
        per.append((time.perf_counter_ns() - t0) / n)
    assert bytes(memoryview(target)[:8]) == b"\x07" * 8, "data did not arrive"
    print(f"ns_per_op {statistics.median(per):.1f}")
    seg.close()
    a.close()
    b.close()


main()
