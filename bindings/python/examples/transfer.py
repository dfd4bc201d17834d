#!/usr/bin/env python3
"""Moves data to a target in another process and reads it back.

    build/bin/mc_bench target --listen 127.0.0.1:0 --size 64M     # prints "segment: NAME"
    PYTHONPATH=bindings/python python3 bindings/python/examples/transfer.py NAME [MiB]

Without NAME it starts that target itself (build/bin/mc_bench, or MC_BENCH).
"""

import os
import pathlib
import subprocess
import sys
import time

import mc


def start_target():
    root = pathlib.Path(__file__).resolve().parents[3]
    bench = os.environ.get("MC_BENCH", str(root / "build" / "bin" / "mc_bench"))
    proc = subprocess.Popen([bench, "target", "--listen", "127.0.0.1:0", "--size", "64M"],
                            stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line.startswith("segment: "):
        proc.kill()
        sys.exit(f"target printed {line!r}")
    return proc, line.split(":", 1)[1].strip()


def main():
    proc = None
    if len(sys.argv) > 1:
        name = sys.argv[1]
    else:
        proc, name = start_target()
    mib = int(sys.argv[2]) if len(sys.argv) > 2 else 16
    try:
        with mc.Engine(listen="127.0.0.1:0") as eng:
            seg = eng.open(name)
            remote = seg.buffers[0]
            n = min(mib << 20, remote.length)
            src, dst = eng.alloc(n), eng.alloc(n)
            src[:] = os.urandom(n)
            t = time.perf_counter()
            eng.write(src, seg, remote.addr)
            t_write = time.perf_counter() - t
            t = time.perf_counter()
            eng.read(dst, seg, remote.addr)
            t_read = time.perf_counter() - t
            ok = dst[:] == src[:]
            print(f"{seg.info().transport}: wrote {n} bytes in {t_write * 1e3:.1f} ms "
                  f"({n / t_write / 1e9:.2f} GB/s), read back in {t_read * 1e3:.1f} ms "
                  f"({n / t_read / 1e9:.2f} GB/s): {'match' if ok else 'MISMATCH'}")
            return 0 if ok else 1
    finally:
        if proc:
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    sys.exit(main())
