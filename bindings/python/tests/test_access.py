"""Batch registration and per-buffer access (mc_buffer_register_batch / _unregister_batch,
mc_buffer_set_access), between two engines of this process."""

import ctypes

import pytest

import mc


def test_access_constants():
    assert mc.ACCESS_READ == 1 and mc.ACCESS_WRITE == 2
    assert mc.ACCESS_READ_WRITE == mc.ACCESS_READ | mc.ACCESS_WRITE == 3
    assert mc.ACCESS_NONE == 0
    assert mc.Denied.status == -15 and mc.error_class(-15) is mc.Denied
    assert issubclass(mc.Denied, mc.Error) and issubclass(mc.Canceled, mc.Error)


def test_read_only_buffer_refuses_peer_write(pair):
    a, b = pair
    target = bytearray(b"r" * 8192)
    b.register(target)
    b.set_access(target, mc.ACCESS_READ)
    seg = a.open(b.name)
    src = a.alloc(8192)
    src[:] = b"w" * 8192
    remote = seg.buffers[0].addr
    assert remote == mc.address_of(target)
    with pytest.raises(mc.Denied) as ei:
        a.write(src, seg, remote)
    assert ei.value.status == -15
    assert bytes(target) == b"r" * 8192, "a denied WRITE changed the target"
    # READ is still allowed.
    a.read(src, seg, remote)
    assert src[:] == b"r" * 8192

    # No rights: READ refused too; then both back.
    b.set_access(target, mc.ACCESS_NONE)
    with pytest.raises(mc.Denied):
        a.read(src, seg, remote)
    b.set_access(remote, mc.ACCESS_READ | mc.ACCESS_WRITE)
    src[:] = b"x" * 8192
    a.write(src, seg, remote)
    assert bytes(target) == b"x" * 8192


def test_write_only_and_buffer_method(pair):
    a, b = pair
    dst = b.alloc(4096)
    dst.set_access(mc.ACCESS_WRITE)
    seg = a.open(b.name)
    src = a.alloc(4096)
    src[:] = b"q" * 4096
    a.write(src, seg, dst.addr)
    assert dst[:] == b"q" * 4096
    with pytest.raises(mc.Denied):
        a.read(src, seg, dst.addr)
    # Denied in a batch: the submit or the request fails with MC_ERR_DENIED.
    with a.batch(4) as batch:
        try:
            batch.submit([mc.Request(mc.READ, src, seg, dst.addr, 4096)])
        except mc.Denied:
            pass
        else:
            with pytest.raises(mc.Denied):
                batch.wait(5)
            st = batch.status(0)
            assert st.state == mc.RequestState.FAILED and st.error == mc.Denied.status


def test_set_access_errors(engine):
    buf = bytearray(4096)
    addr = engine.register(buf)
    with pytest.raises(mc.InvalidArgument):
        engine.set_access(buf, 4)
    with pytest.raises(mc.NotFound):
        engine.set_access(addr + 1, mc.ACCESS_READ)
    engine.unregister(buf)
    with pytest.raises(mc.NotFound):
        engine.set_access(addr, mc.ACCESS_READ)


def test_register_batch_then_transfer_into_last(pair):
    a, b = pair
    bufs = [bytearray(1024 + i) for i in range(100)]
    addrs = b.register_batch(bufs)
    assert addrs == [mc.address_of(x) for x in bufs]
    seg = a.open(b.name)
    published = {(x.addr, x.length) for x in seg.buffers}
    assert len(published) == 100
    assert (addrs[-1], len(bufs[-1])) in published
    src = a.alloc(len(bufs[-1]))
    payload = bytes(i * 7 % 251 for i in range(len(bufs[-1])))
    src[:] = payload
    a.write(src, seg, addrs[-1])
    assert bytes(bufs[-1]) == payload
    assert bytes(bufs[-2]) == bytes(len(bufs[-2]))
    # The sync helpers find batch-registered objects like registered ones.
    back = bufs[0]
    b_seg = b.open(a.name)
    b.read(back, b_seg, src.addr, length=len(back))
    assert bytes(back) == payload[:len(back)]

    b.unregister_batch(bufs[:50] + addrs[50:])
    assert all(x.addr not in addrs for x in b.open(b.name).buffers)
    with pytest.raises(mc.NotFound):
        b.unregister_batch([bufs[0]])


def test_register_batch_is_all_or_nothing(engine):
    keep = bytearray(4096)
    engine.register(keep)
    fresh = bytearray(4096)
    with pytest.raises(mc.Exists):
        engine.register_batch([fresh, keep])
    with pytest.raises(mc.NotFound):
        engine.unregister(fresh)  # the first one was not registered either
    # Overlaps among the new ones too.
    raw = (ctypes.c_char * 8192)()
    base = ctypes.addressof(raw)
    with pytest.raises(mc.Exists):
        engine.register_batch([(base, 4096), (base + 100, 100, "cpu")])
    # Raw (addr, length[, location]) tuples.
    assert engine.register_batch([(base, 4096, "cpu"), (base + 4096, 4096)]) == [base, base + 4096]
    with pytest.raises(mc.NotFound):
        engine.unregister_batch([base, base + 1])  # one unknown: none unregistered
    engine.unregister_batch([base, base + 4096])
    assert engine.register_batch([]) == []
    with pytest.raises(mc.InvalidArgument):
        engine.register_batch([(base,)])


def test_auth_token_mismatch_is_denied():
    token = "t" * 32
    with mc.Engine(listen="127.0.0.1:0", timeout_ms=3000, auth_token=token) as a, \
         mc.Engine(listen="127.0.0.1:0", timeout_ms=3000, auth_token="u" * 32) as b, \
         mc.Engine(listen="127.0.0.1:0", timeout_ms=3000) as c, \
         mc.Engine(listen="127.0.0.1:0", timeout_ms=3000, auth_token=token) as d:
        for other in (b, c):
            with pytest.raises(mc.Denied) as ei:
                a.open(other.name)
            assert token not in str(ei.value)
        with pytest.raises(mc.Denied):
            c.open(a.name)
        dst = a.alloc(4096)
        src = d.alloc(4096)
        src[:] = b"k" * 4096
        d.write(src, d.open(a.name), dst.addr)
        assert dst[:] == b"k" * 4096
    with pytest.raises(mc.InvalidArgument):
        mc.Engine(auth_token="")
