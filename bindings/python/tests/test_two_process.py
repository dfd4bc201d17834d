"""A write and read against a target in another process: `mc_bench target` when it is built,
else a small Python target started the same way."""

import os
import subprocess
import sys

import pytest

import mc

from conftest import build_dir, child_env, slack

SIZE = 64 << 20

PY_TARGET = r"""
import sys, time
import mc
size = int(sys.argv[1])
with mc.Engine(listen="127.0.0.1:0") as eng:
    buf = eng.alloc(size)
    print("segment:", eng.name, flush=True)
    while True:
        time.sleep(3600)
"""


def stop(proc):
    """SIGSTOP, returning once the process is stopped: kill() only queues the signal, and on a
    busy machine the target still served an 8 MiB READ submitted right after it."""
    import signal
    os.kill(proc.pid, signal.SIGSTOP)
    os.waitpid(proc.pid, os.WUNTRACED)


def target_commands():
    cmds = []
    bench = build_dir() / "bin" / "mc_bench"
    if bench.exists() and os.environ.get("MC_PY_TARGET") != "python":
        cmds.append(("mc_bench", [str(bench), "target", "--listen", "127.0.0.1:0", "--size", "64M"]))
    cmds.append(("python", [sys.executable, "-c", PY_TARGET, str(SIZE)]))
    return cmds


@pytest.fixture(params=[name for name, _ in target_commands()])
def target(request):
    cmd = dict(target_commands())[request.param]
    env = child_env()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert line.startswith("segment: "), f"target printed {line!r}"
        yield line.split(":", 1)[1].strip()
    finally:
        proc.kill()
        proc.wait()


def test_write_read_other_process(target, engine):
    seg = engine.open(target)
    bufs = seg.buffers
    assert bufs and sum(b.length for b in bufs) >= SIZE
    remote = bufs[0].addr
    n = min(bufs[0].length, 16 << 20)
    src = engine.alloc(n)
    dst = engine.alloc(n)
    src[:] = os.urandom(n)
    engine.write(src, seg, remote)
    engine.read(dst, seg, remote)
    assert dst[:] == src[:]
    # The batched READs go into a cleared dst: they must bring the bytes back themselves, and
    # only the 64 pages they cover.
    dst[:] = bytes(n)
    with engine.batch(64) as b:
        b.submit([mc.Request(mc.READ, dst.addr + i * 4096, seg, remote + i * 4096, 4096)
                  for i in range(64)])
        b.wait(timeout=10 * slack())
    assert dst[:64 * 4096] == src[:64 * 4096]
    assert dst[64 * 4096:] == bytes(n - 64 * 4096)


def test_peer_killed_fails_cleanly(engine):
    cmd = dict(target_commands())["python"]
    env = child_env()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    try:
        name = proc.stdout.readline().split(":", 1)[1].strip()
        seg = engine.open(name)
        remote = seg.buffers[0].addr
        buf = engine.alloc(4096)
        engine.write(buf, seg, remote)
    finally:
        proc.kill()
        proc.wait()
    with pytest.raises((mc.PeerDown, mc.Transport)):
        engine.write(buf, seg, remote, timeout=10 * slack())


def test_hung_peer_times_out_then_fails():
    """A stopped target: a poll says mc.Timeout, then the request fails within timeout_ms. Over
    TCP: a same-host shm path would not need the stopped peer at all."""
    engine = mc.Engine(listen="127.0.0.1:0", transports="tcp", timeout_ms=3000)
    cmd = dict(target_commands())["python"]
    env = child_env()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    try:
        name = proc.stdout.readline().split(":", 1)[1].strip()
        seg = engine.open(name)
        remote = seg.buffers[0].addr
        buf = engine.alloc(8 << 20)
        stop(proc)
        with engine.batch(4) as b:
            b.submit([mc.Request(mc.READ, buf, seg, remote, 8 << 20)])
            with pytest.raises(mc.Timeout):
                b.wait(timeout=0)
            assert b.status(0).state == mc.RequestState.PENDING
            with pytest.raises(mc.Error) as ei:
                b.wait(timeout=30 * slack())  # the engine's timeout_ms (3 s) fails it
            assert not isinstance(ei.value, mc.Timeout)
            st = b.status(0)
            assert st.state == mc.RequestState.FAILED and st.error == ei.value.status
    finally:
        proc.kill()
        proc.wait()
        engine.close()


def test_cancel_on_hung_peer():
    engine = mc.Engine(listen="127.0.0.1:0", transports="tcp", timeout_ms=3000)
    cmd = dict(target_commands())["python"]
    env = child_env()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    try:
        name = proc.stdout.readline().split(":", 1)[1].strip()
        seg = engine.open(name)
        remote = seg.buffers[0].addr
        buf = engine.alloc(8 << 20)
        stop(proc)
        with engine.batch(4) as b:
            b.submit([mc.Request(mc.READ, buf, seg, remote, 8 << 20)])
            b.cancel()
            st = b.status(0)
            assert st.state == mc.RequestState.FAILED and st.error == mc.Canceled.status
            with pytest.raises(mc.Canceled):
                b.wait(timeout=0)
    finally:
        proc.kill()
        proc.wait()
        engine.close()
