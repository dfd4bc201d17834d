import pytest

import mc

np = pytest.importorskip("numpy")


def test_numpy_roundtrip(pair):
    a, b = pair
    src = np.arange(1 << 16, dtype=np.float32).reshape(256, 256)
    dst = np.zeros_like(src)
    a.register(src)
    b.register(dst)
    seg = a.open(b.name)
    (remote,) = [x.addr for x in seg.buffers]
    assert remote == dst.ctypes.data
    a.write(src, seg, remote)  # length defaults to nbytes, not len()
    np.testing.assert_array_equal(dst, src)
    back = np.empty(1024, dtype=np.float32)
    a.register(back)
    a.read(back, seg, remote + 4 * 1024)
    np.testing.assert_array_equal(back, src.ravel()[1024:2048])


def test_numpy_view_of_buffer(pair):
    a, b = pair
    buf = a.alloc(1 << 20)
    arr = np.frombuffer(buf, dtype=np.uint64)
    arr[:] = np.arange(arr.size, dtype=np.uint64)
    dst = b.alloc(1 << 20)
    seg = a.open(b.name)
    a.write(buf, seg, dst.addr)
    np.testing.assert_array_equal(np.frombuffer(dst, dtype=np.uint64), arr)
    del arr  # the view holds an export of the mapping


def test_numpy_rejects_bad_arrays(engine):
    with pytest.raises(ValueError):
        engine.register(np.zeros((64, 64))[:, ::2])  # not contiguous
    ro = np.zeros(64)
    ro.flags.writeable = False
    with pytest.raises(TypeError):
        engine.register(ro)
