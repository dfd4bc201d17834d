"""Engine.write/read: the fast path (registered-object lookup, pooled request struct, unchecked
mc_transfer) must behave exactly like the slow one: same data, same exceptions and messages,
no stale lookups after unregister, thread-safe."""
import ctypes
import threading

import pytest

import mc
from mc import _core


@pytest.fixture
def wired(pair):
    a, b = pair
    dst = b.alloc(1 << 16)
    seg = a.open(b.name)
    yield a, b, dst, seg
    seg.close()


def test_registered_objects_round_trip(wired):
    a, b, dst, seg = wired
    src = bytearray(b"0123456789abcdef" * 16)  # 256 bytes
    a.register(src)
    a.write(src, seg, dst.addr)  # length defaults to len(src)
    assert dst[:256] == bytes(src)
    back = bytearray(256)
    a.register(back)
    a.read(back, seg, dst.addr)
    assert back == src
    back2 = (ctypes.c_char * 64)()
    a.register(back2)
    a.read(back2, seg, dst.addr + 16, length=8)
    assert back2.raw[:8] == b"0123456789abcdef"[:8] and back2.raw[8:] == b"\0" * 56
    buf = a.alloc(4096)
    buf[:4] = b"WXYZ"
    a.write(buf, seg, dst.addr + 1000, length=4)
    assert dst[1000:1004] == b"WXYZ"
    a.write(buf.addr + 1, seg, dst.addr + 2000, 2)  # an int address with a length
    assert dst[2000:2002] == b"XY"
    a.write(buf, seg.handle, dst.addr + 3000, 4)  # the segment as its int handle
    assert dst[3000:3004] == b"WXYZ"


def test_unregistered_object_is_out_of_range(wired):
    a, b, dst, seg = wired
    with pytest.raises(mc.OutOfRange) as ei:
        a.write(bytearray(64), seg, dst.addr)
    assert "local" in ei.value.message
    other = b.alloc(4096)  # registered, but with the other engine
    with pytest.raises(mc.OutOfRange):
        a.write(other, seg, dst.addr)


def test_unregister_invalidates_the_lookup(wired):
    a, b, dst, seg = wired
    src = bytearray(b"x" * 128)
    a.register(src)
    a.write(src, seg, dst.addr)
    a.unregister(src)
    with pytest.raises(mc.OutOfRange):
        a.write(src, seg, dst.addr)
    addr = a.register(src)  # again: works again
    src[:] = b"y" * 128
    a.write(src, seg, dst.addr)
    assert dst[:128] == b"y" * 128
    a.unregister(addr)  # by address: the object's entry goes too
    with pytest.raises(mc.OutOfRange):
        a.read(src, seg, dst.addr)
    a.register_batch([src])
    a.write(src, seg, dst.addr, 1)
    a.unregister_batch([src])
    with pytest.raises(mc.OutOfRange):
        a.write(src, seg, dst.addr, 1)


def test_unregistered_buffer_and_freed_buffer(wired):
    a, b, dst, seg = wired
    buf = a.alloc(4096)
    a.write(buf, seg, dst.addr, 8)
    a.unregister(buf)
    with pytest.raises(mc.OutOfRange):
        a.write(buf, seg, dst.addr, 8)
    a.register(buf)
    a.write(buf, seg, dst.addr, 8)
    buf.free()  # unregisters it from a (register() of an mc.Buffer ties it to a)
    assert buf.closed and buf.addr not in a._pins
    newer = a.alloc(4096)  # may get the freed buffer's address
    with pytest.raises(mc.OutOfRange) as ei:
        a.write(buf, seg, dst.addr, 8)
    assert "freed" in ei.value.message
    newer.free()


def test_buffer_registered_with_two_engines(pair):
    a, b = pair
    buf = a.alloc(4096)
    b.register(buf)
    b.unregister(buf)  # does not forget that a holds it
    assert buf._engine is a
    buf.free()
    assert buf.addr not in a._pins


def test_a_view_of_registered_memory_works(wired):
    a, b, dst, seg = wired
    src = bytearray(b"abcdefgh" * 8)
    a.register(src)
    a.write(memoryview(src)[8:16], seg, dst.addr + 40)  # not the registered object: its address
    assert dst[40:48] == b"abcdefgh"


def test_bad_arguments_raise_as_before(wired):
    a, b, dst, seg = wired
    buf = a.alloc(4096)
    with pytest.raises(mc.InvalidArgument):
        a.write(buf.addr, seg, dst.addr)  # an int address needs a length
    with pytest.raises(mc.InvalidArgument):
        a.write(buf, seg, dst.addr, timeout=-1)
    with pytest.raises(mc.InvalidArgument):
        a.write(buf, seg, dst.addr, length=0)
    with pytest.raises(mc.OutOfRange):
        a.write(buf, seg, dst.addr, length=8192)  # longer than the local buffer
    with pytest.raises(mc.OutOfRange):
        a.write(buf, seg, dst.addr + (1 << 16) - 4, length=8)  # past the remote buffer
    with pytest.raises(TypeError):
        a.write(buf, seg, "0x1000", 8)
    with pytest.raises(TypeError):
        a.write(buf, seg, dst.addr, length=8.0)
    for bad in (-1, 1 << 64):  # out of the struct's range: ctypes' conversion, then the library
        with pytest.raises((mc.Error, OverflowError, TypeError)):
            a.write(buf, seg, bad, 8)
    closed = a.open(b.name)
    closed.close()
    with pytest.raises(mc.NotFound):
        a.write(buf, closed, dst.addr, 8)
    a.write(buf, seg, dst.addr, 8, timeout=5)  # still fine afterwards
    assert len(a._reqs) == 1  # one request struct, reused


def test_error_message_is_this_calls(wired):
    a, b, dst, seg = wired
    buf = a.alloc(4096)
    with pytest.raises(mc.OutOfRange) as e1:
        a.write(buf, seg, dst.addr + (1 << 16) - 4, length=8)  # fast path, remote side
    with pytest.raises(mc.OutOfRange) as e2:
        a.write(bytearray(16), seg, dst.addr)  # slow path (unregistered), local side
    with pytest.raises(mc.OutOfRange) as e3:
        a.write(buf, seg, dst.addr + (1 << 16) - 4, length=8)
    assert e1.value.message.startswith("mc_transfer") and "local" not in e1.value.message
    assert "local" in e2.value.message
    assert e3.value.message == e1.value.message


def test_closed_engine():
    e = mc.Engine(listen="127.0.0.1:0")
    buf = e.alloc(4096)
    e.close()
    with pytest.raises(mc.InvalidArgument) as ei:
        e.write(buf, 1, 0, 8)
    assert "closed" in ei.value.message


def test_threads_at_once(wired):
    """Several threads write and read through the helpers at once, some failing: each sees its
    own data and its own error; the request pool holds at most one struct per thread."""
    a, b, dst, seg = wired
    nthreads, size, rounds = 4, 256, 300
    srcs = [bytearray(bytes([i + 1]) * size) for i in range(nthreads)]
    backs = [bytearray(size) for _ in range(nthreads)]
    for o in srcs + backs:
        a.register(o)
    failures, wrong = [], []
    start = threading.Barrier(nthreads + 1)

    def worker(i):
        try:
            start.wait()
            for k in range(rounds):
                a.write(srcs[i], seg, dst.addr + i * size)
                a.read(backs[i], seg, dst.addr + i * size)
                if backs[i] != srcs[i]:
                    wrong.append(i)
                if k % 10 == i:
                    try:
                        a.write(srcs[i], seg, dst.addr + (1 << 16) - 1)  # past the end
                    except mc.OutOfRange as e:
                        if not e.message:
                            wrong.append(("message", i))
                    else:
                        wrong.append(("no error", i))
        except Exception as e:  # pragma: no cover
            failures.append(e)

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(nthreads)]
    for t in ts:
        t.start()
    start.wait()
    for t in ts:
        t.join()
    assert not failures and not wrong
    for i in range(nthreads):
        assert dst[i * size:(i + 1) * size] == bytes(srcs[i])
    assert 1 <= len(a._reqs) <= nthreads


def test_fast_binding_matches_the_table():
    """The unchecked mc_transfer is called with ctypes objects of the table's declared types."""
    from mc import _lib
    entry = next(e for e in _lib._FUNCTIONS if e[0] == "mc_transfer")
    argtypes = entry[1]
    assert argtypes[2] is ctypes.c_size_t and isinstance(_core._ONE, ctypes.c_size_t)
    assert argtypes[3] is ctypes.c_int  # passed as a Python int
    assert _lib.unchecked.mc_transfer.argtypes is None
    assert _lib.unchecked.mc_transfer.errcheck is None
    assert _core._REQUEST.size == ctypes.sizeof(_lib.RequestC)
