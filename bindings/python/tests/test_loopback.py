import ctypes
import os
import threading

import pytest

import mc
from conftest import slack


def test_version():
    major, minor, patch = mc.version()
    assert major == 0
    assert mc.version_string() == f"{major}.{minor}.{patch}"


def test_write_read_between_two_engines(pair):
    a, b = pair
    src = a.alloc(1 << 20)
    dst = b.alloc(1 << 20)
    assert src.addr % mmap_page() == 0 and len(src) == 1 << 20
    payload = os.urandom(1 << 20)
    src[:] = payload
    seg = a.open(b.name)
    assert seg.name == b.name
    info = seg.info()
    assert info.state == mc.SegmentState.OK
    assert info.buffer_count == 1 and info.total_bytes == 1 << 20
    assert info.transport in ("tcp", "shm")  # shm when the library has it
    bufs = seg.buffers
    assert bufs == [mc.BufferInfo(dst.addr, 1 << 20, bufs[0].location)]
    assert bufs[0].location.startswith("cpu")

    a.write(src, seg, dst.addr)
    assert dst[:] == payload
    back = bytearray(4096)
    a.register(back)
    a.read(back, seg, dst.addr + 4096)
    assert bytes(back) == payload[4096:8192]
    a.read(back, seg, dst.addr, length=100)
    assert bytes(back[:100]) == payload[:100]
    # memoryview(Buffer) works and an int address with a length works.
    assert memoryview(src)[:4] == payload[:4]
    a.write(src.addr + 10, seg, dst.addr, length=5)
    assert dst[:5] == payload[10:15]

    st = a.stats()
    assert st["name"] == a.name
    assert st["requests_completed"] >= 4
    assert st["bytes_written"] >= (1 << 20) + 5
    assert st["bytes_read"] >= 4096 + 100
    seg.close()
    seg.close()


def mmap_page():
    import mmap
    return mmap.PAGESIZE


def test_own_name_uses_local_transport(engine):
    src = engine.alloc(8192)
    dst = engine.alloc(8192)
    src[:] = b"x" * 8192
    with engine.open(engine.name) as seg:
        assert seg.info().transport == "local"
        engine.write(src, seg, dst.addr)
    assert dst[:] == b"x" * 8192


def test_batch(pair):
    a, b = pair
    n, size = 16, 65536
    src = a.alloc(n * size)
    dst = b.alloc(n * size)
    for i in range(n):
        src[i * size:(i + 1) * size] = bytes([i]) * size
    seg = a.open(b.name)
    with a.batch(capacity=n) as batch:
        first = batch.submit([mc.Request(mc.WRITE, src.addr + i * size, seg, dst.addr + i * size,
                                         size) for i in range(n // 2)])
        assert first == 0
        second = batch.submit([mc.Request(mc.WRITE, src.addr + i * size, seg,
                                          dst.addr + i * size, size) for i in range(n // 2, n)])
        assert second == n // 2
        assert len(batch) == n
        batch.wait(timeout=5.0 * slack())
        for i in range(n):
            s = batch.status(i)
            assert s == mc.RequestStatus(mc.RequestState.COMPLETED, 0, size)
            assert isinstance(s.state, mc.RequestState)
        with pytest.raises(mc.InvalidArgument) as ei:  # the capacity is used up
            batch.submit([mc.Request(mc.WRITE, src, seg, dst.addr, size)])
        assert "capacity" in ei.value.message
        # The WRITEs landed; the READ back goes into a cleared src, so it proves the READ moved
        # the bytes (src held them already).
        expected = b"".join(bytes([i]) * size for i in range(n))
        assert dst[:] == expected
        src[:] = bytes(n * size)
        batch.reset()
        assert len(batch) == 0
        batch.submit([mc.Request(mc.READ, src, seg, dst.addr, n * size)])
        batch.wait()
        assert batch.statuses()[0].state == mc.RequestState.COMPLETED
    assert src[:] == expected


def test_batch_submit_is_all_or_nothing(pair):
    a, b = pair
    src = a.alloc(4096)
    dst = b.alloc(4096)
    seg = a.open(b.name)
    with a.batch(4) as batch:
        with pytest.raises(mc.OutOfRange) as ei:
            batch.submit([mc.Request(mc.WRITE, src, seg, dst.addr, 4096),
                          mc.Request(mc.WRITE, src, seg, dst.addr + 4096, 4096)])
        assert "1" in ei.value.message  # the bad request's index
        assert len(batch) == 0
        with pytest.raises(mc.InvalidArgument):
            batch.status(0)


def test_transfer_many(pair):
    a, b = pair
    src = a.alloc(1 << 16)
    dst = b.alloc(1 << 16)
    src[:] = bytes(range(256)) * 256
    seg = a.open(b.name)
    a.transfer([mc.Request(mc.WRITE, src.addr + i * 4096, seg, dst.addr + i * 4096, 4096)
                for i in range(16)], timeout=5.0 * slack())
    assert dst[:] == src[:]


def test_register_bytearray_and_ctypes(pair):
    a, b = pair
    local = bytearray(b"abc" * 1000)
    addr = a.register(local)
    cbuf = (ctypes.c_char * 3000)()
    b.register(cbuf)
    seg = a.open(b.name)
    a.write(local, seg, ctypes.addressof(cbuf))
    assert cbuf.raw == bytes(local)
    with pytest.raises(BufferError):
        local.extend(b"x")  # pinned while registered
    a.unregister(local)
    local.extend(b"x")  # released
    assert addr != 0


def test_unregister_then_reuse(pair):
    a, b = pair
    buf = a.alloc(4096)
    a.unregister(buf)
    with pytest.raises(mc.NotFound):
        a.unregister(buf)
    a.register(buf)  # registered again (Buffer is a buffer-protocol object too)
    buf.free()
    assert buf.closed


def test_buffer_outlives_engine():
    e = mc.Engine(listen="127.0.0.1:0")
    buf = e.alloc(4096)
    buf[:3] = b"abc"
    e.close()
    assert buf[:3] == b"abc"  # still mapped; no longer registered
    buf.free()


def test_concurrent_writes(pair):
    a, b = pair
    nthreads, size = 4, 1 << 16
    src = a.alloc(nthreads * size)
    dst = b.alloc(nthreads * size)
    seg = a.open(b.name)
    errors = []

    def worker(i):
        try:
            src[i * size:(i + 1) * size] = bytes([i + 1]) * size
            for _ in range(20):
                a.write(src.addr + i * size, seg, dst.addr + i * size, length=size)
        except Exception as e:  # pragma: no cover
            errors.append(e)

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(nthreads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors
    assert dst[:] == src[:]


def test_heap():
    heap = mc.Heap(1 << 30)
    off = heap.alloc(4096, align=64)
    assert off % 64 == 0
    st = heap.stats()
    assert st.capacity == 1 << 30 and st.allocations == 1 and st.used >= 4096
    assert st.free == st.capacity - st.used
    heap.free(off)
    st = heap.stats()
    assert st.allocations == 0 and st.largest_free == 1 << 30
    heap.close()
    heap.close()


def test_log_handler():
    lines = []
    mc.set_log_handler(lambda level, msg: lines.append((level, msg)))
    try:
        mc.set_log_level(mc.LogLevel.DEBUG)
        with mc.Engine(listen="127.0.0.1:0", log_level="debug") as e:
            e.alloc(4096)
    finally:
        mc.set_log_level(mc.LogLevel.WARN)
        mc.set_log_handler(None)
    assert lines, "no log line at debug level"
    assert all(isinstance(l, mc.LogLevel) and isinstance(m, str) for l, m in lines)
