import pickle
import threading

import pytest

import mc

CLASSES = {
    -1: mc.InvalidArgument, -2: mc.NoMemory, -3: mc.NotFound, -4: mc.OutOfRange, -5: mc.Exists,
    -6: mc.Busy, -7: mc.Timeout, -8: mc.PeerDown, -9: mc.Transport, -10: mc.Unsupported,
    -11: mc.Metadata, -12: mc.Internal, -13: mc.BufferTooSmall, -14: mc.Canceled, -15: mc.Denied,
}


def test_every_status_has_its_class():
    for status, cls in CLASSES.items():
        assert mc.error_class(status) is cls
        assert issubclass(cls, mc.Error)
        e = cls(status, "text")
        assert e.status == status and e.message == "text"
        assert mc.status_str(status) in str(e) and "text" in str(e)
        assert mc.status_str(status) != mc.status_str(-9999)


def test_unknown_code_is_plain_error():
    assert mc.error_class(-9999) is mc.Error
    assert mc.error_class(-16) is mc.Error
    e = mc.Error(-9999, "?")
    assert e.status == -9999 and "?" in str(e)
    assert mc.status_str(-9999)  # the library names unknown codes too


def test_errors_pickle():
    e = pickle.loads(pickle.dumps(mc.PeerDown(-8, "gone")))
    assert type(e) is mc.PeerDown and e.status == -8 and e.message == "gone"


def test_bad_config_key():
    with pytest.raises(mc.InvalidArgument) as ei:
        mc.Engine(no_such_key="1")
    assert ei.value.status == -1
    assert "no_such_key" in ei.value.message
    assert isinstance(ei.value, ValueError)


def test_bad_config_value():
    with pytest.raises(mc.InvalidArgument) as ei:
        mc.Engine(workers=0)
    assert "workers" in ei.value.message


def test_peer_down_on_refused_connection(engine):
    # A port nobody listens on: bind one, close it, open it.
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with pytest.raises(mc.PeerDown) as ei:
        engine.open(f"127.0.0.1:{port}")
    assert ei.value.message.startswith("mc_segment_open")


def test_register_overlap_is_exists(engine):
    buf = bytearray(8192)
    engine.register(buf)
    with pytest.raises(mc.Exists):
        engine.register(memoryview(buf)[4096:])
    with pytest.raises(mc.Exists):
        engine.register(buf)


def test_unregister_unknown_is_not_found(engine):
    with pytest.raises(mc.NotFound):
        engine.unregister(bytearray(64))


def test_read_only_memory_is_refused(engine):
    with pytest.raises(TypeError):
        engine.register(b"immutable")


def test_unregistered_local_is_out_of_range(pair):
    a, b = pair
    dst = b.alloc(4096)
    seg = a.open(b.name)
    with pytest.raises(mc.OutOfRange) as ei:
        a.write(bytearray(4096), seg, dst.addr)
    assert "local" in ei.value.message


def test_remote_out_of_range(pair):
    a, b = pair
    dst = b.alloc(4096)
    src = a.alloc(8192)
    seg = a.open(b.name)
    with pytest.raises(mc.OutOfRange):
        a.write(src, seg, dst.addr)  # 8192 bytes into a 4096-byte buffer


def test_closed_segment_is_not_found(pair):
    a, b = pair
    b.alloc(4096)
    seg = a.open(b.name)
    handle = seg.handle
    seg.close()
    with pytest.raises(mc.NotFound):
        mc.Segment(a, b.name, handle).info()


def test_heap_errors():
    with mc.Heap(4096) as h:
        off = h.alloc(4096)
        with pytest.raises(mc.NoMemory):
            h.alloc(1)
        h.free(off)
        with pytest.raises(mc.NotFound):
            h.free(off)
        with pytest.raises(mc.InvalidArgument):
            h.alloc(64, align=3)
    with pytest.raises(mc.InvalidArgument):
        mc.Heap(0)


def test_batch_status_past_end(engine):
    with engine.batch(4) as b:
        with pytest.raises(mc.InvalidArgument) as ei:
            b.status(0)
        assert "index 0" in ei.value.message
    with pytest.raises(mc.InvalidArgument):
        engine.batch(0)


def test_use_after_close_raises():
    e = mc.Engine(listen="127.0.0.1:0")
    e.close()
    e.close()
    with pytest.raises(mc.Error):
        e.alloc(4096)
    with pytest.raises(mc.Error):
        e.stats()


def test_messages_are_per_thread():
    """Each thread sees its own failure's message (mc_last_error is thread-local and is read in
    errcheck, on the calling thread, right after the call)."""
    results = {}

    def worker(i):
        msgs = []
        for _ in range(200):
            try:
                mc.Engine(**{f"bad_key_{i}": "1"})
            except mc.InvalidArgument as e:
                msgs.append(e.message)
        results[i] = msgs

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    for i, msgs in results.items():
        assert len(msgs) == 200
        assert all(f"bad_key_{i}" in m for m in msgs), msgs[:3]


def _cuda_driver_present():
    import ctypes
    try:
        ctypes.CDLL("libcuda.so.1")
        return True
    except OSError:
        return False


def test_submit_on_stream_without_cuda(pair):
    """batch.submit(requests, stream=...): stream objects are read through cuda_stream or taken
    as ints; without a CUDA driver the call raises mc.Unsupported and submits nothing."""
    a, b = pair
    src = a.alloc(4096)
    dst = b.alloc(4096)
    seg = a.open(b.name)
    reqs = [mc.Request(mc.WRITE, src.addr, seg, dst.addr, 4096)]
    with mc.Batch(a, 4) as batch:
        with pytest.raises(mc.InvalidArgument):
            batch.submit(reqs, stream="not a stream")
        assert len(batch) == 0
        if _cuda_driver_present():
            pytest.skip("a CUDA driver is present: the no-driver path is not reachable here")

        class FakeTorchStream:
            cuda_stream = 0

        for s in (0, FakeTorchStream()):
            with pytest.raises(mc.Unsupported) as ei:
                batch.submit(reqs, stream=s)
            assert "CUDA" in ei.value.message
        assert len(batch) == 0
        batch.submit(reqs)
        batch.wait()
