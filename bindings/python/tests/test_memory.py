"""What Engine.register accepts: (addr, length) pairs, DLPack (numpy arrays behind a wrapper that
offers only __dlpack__, so the DLPack path is the one taken), __cuda_array_interface__, torch
tensors (skipped where torch is missing), and lists of these in one call. Each registration is
checked by moving bytes through the address it gave."""

import ctypes
import os

import pytest

import mc

np = pytest.importorskip("numpy")


class DLPackOnly:
    """Exposes an array only through DLPack (no buffer protocol)."""

    def __init__(self, arr):
        self.arr = arr

    def __dlpack__(self, **kw):
        return self.arr.__dlpack__(**kw)

    def __dlpack_device__(self):
        return self.arr.__dlpack_device__()


def roundtrip(a, b, local_obj, local_addr, nbytes):
    """Writes nbytes of random data from local memory (registered in a) into b and reads them back
    into local memory; returns the data written."""
    dst = b.alloc(nbytes)
    seg = a.open(b.name)
    payload = os.urandom(nbytes)
    ctypes.memmove(local_addr, payload, nbytes)
    a.write(local_addr, seg, dst.addr, length=nbytes)
    assert dst[:] == payload
    ctypes.memset(local_addr, 0, nbytes)
    a.read(local_addr, seg, dst.addr, length=nbytes)
    assert ctypes.string_at(local_addr, nbytes) == payload
    return payload


def test_error_names_follow_the_c_codes():
    assert mc.InvalidArg is mc.InvalidArgument and mc.InvalidArg.status == -1
    assert issubclass(mc.InvalidArg, mc.Error) and issubclass(mc.Timeout, mc.Error)
    assert mc.error_class(-7) is mc.Timeout and mc.error_class(-999) is mc.Error
    # every MC_ERR_ code has a class named as its CamelCase stem
    for name, status in [("NoMemory", -2), ("NotFound", -3), ("OutOfRange", -4),
                         ("Exists", -5), ("Busy", -6), ("PeerDown", -8), ("Transport", -9),
                         ("Unsupported", -10), ("Metadata", -11), ("Internal", -12),
                         ("BufferTooSmall", -13), ("Canceled", -14), ("Denied", -15)]:
        assert getattr(mc, name).status == status


def test_register_addr_length_pair(pair):
    a, b = pair
    raw = ctypes.create_string_buffer(8192)
    addr = ctypes.addressof(raw)
    assert a.register((addr, 8192)) == addr
    roundtrip(a, b, raw, addr, 8192)
    with pytest.raises(mc.Exists):
        a.register((addr, 8192))
    a.unregister(addr)
    with pytest.raises(mc.InvalidArg):
        a.register((addr, 0))
    with pytest.raises(mc.InvalidArg):
        a.register((addr, 10, 20))


def test_register_numpy_through_dlpack(pair):
    a, b = pair
    arr = np.zeros((64, 256), dtype=np.float32)
    wrapped = DLPackOnly(arr)
    with pytest.raises(TypeError):
        memoryview(wrapped)  # so register() cannot take the buffer-protocol path
    addr = a.register(wrapped)
    assert addr == arr.ctypes.data
    roundtrip(a, b, wrapped, addr, arr.nbytes)
    a.unregister(wrapped)


def test_dlpack_rejects_non_contiguous(engine):
    arr = np.zeros((64, 64), dtype=np.float64)[:, ::2]
    with pytest.raises(mc.InvalidArg, match="not C-contiguous"):
        engine.register(DLPackOnly(arr))


def test_dlpack_offset_view(pair):
    a, b = pair
    base = np.zeros(4096, dtype=np.uint8)
    view = base[1024:3072]  # byte_offset or a moved data pointer: either gives this address
    addr = a.register(DLPackOnly(view))
    assert addr == base.ctypes.data + 1024
    roundtrip(a, b, view, addr, 2048)


class FakeDeviceArray:
    """__cuda_array_interface__ over host memory: enough to check how it is parsed."""

    def __init__(self, arr, strides=None):
        self.arr = arr
        self.__cuda_array_interface__ = {
            "shape": arr.shape, "typestr": arr.dtype.str, "data": (arr.ctypes.data, False),
            "strides": strides, "version": 3}


def test_cuda_array_interface_parsing(engine):
    arr = np.zeros((32, 32), dtype=np.float32)
    assert engine.register(FakeDeviceArray(arr, strides=(128, 4))) == arr.ctypes.data
    engine.unregister(arr.ctypes.data)
    with pytest.raises(mc.InvalidArg, match="not C-contiguous"):
        engine.register(FakeDeviceArray(arr, strides=(4, 128)))


def test_register_list_in_one_call(pair):
    a, b = pair
    raw = ctypes.create_string_buffer(4096)
    arr = np.zeros(2048, dtype=np.uint8)
    ba = bytearray(4096)
    addrs = a.register([(ctypes.addressof(raw), 4096), DLPackOnly(arr), ba])
    assert addrs == [ctypes.addressof(raw), arr.ctypes.data, a._registered_addr(ba)]
    assert a.stats()["buffers"] == 3
    for addr, n in zip(addrs, (4096, 2048, 4096)):
        roundtrip(a, b, None, addr, n)
    # all or nothing: one bad item registers none
    more = bytearray(4096)
    with pytest.raises(mc.Exists):
        a.register([more, ba])
    assert a.stats()["buffers"] == 3
    a.unregister_batch(addrs)
    assert a.stats()["buffers"] == 0


def test_register_refuses_other_objects(engine):
    with pytest.raises(TypeError, match="not memory register"):
        engine.register(object())


# ----------------------------------------------------------------------------- torch

def _torch():
    try:
        import torch
    except ImportError:
        pytest.skip("torch is not installed (it is not a dependency of mc)")
    return torch


def test_torch_cpu_tensor(pair):
    torch = _torch()
    a, b = pair
    t = torch.zeros(128, 64, dtype=torch.float16)
    addr = a.register(t)
    assert addr == t.data_ptr()
    roundtrip(a, b, t, addr, t.numel() * t.element_size())


def test_torch_non_contiguous_refused(engine):
    torch = _torch()
    t = torch.zeros(64, 64).t()
    with pytest.raises(mc.InvalidArg, match="not contiguous"):
        engine.register(t)


def test_torch_list_in_one_call(engine):
    torch = _torch()
    ts = [torch.zeros(1024, dtype=torch.uint8) for _ in range(4)]
    assert engine.register(ts) == [t.data_ptr() for t in ts]
    assert engine.stats()["buffers"] == 4


def test_torch_cuda_tensor(pair):
    torch = _torch()
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    a, b = pair
    t = torch.arange(1 << 20, dtype=torch.uint8, device="cuda")
    assert a.register(t) == t.data_ptr()
    dst = b.alloc(1 << 20)
    seg = a.open(b.name)
    a.write(t.data_ptr(), seg, dst.addr, length=1 << 20)
    assert bytes(dst[:]) == bytes(t.cpu().numpy())
    back = torch.zeros(1 << 20, dtype=torch.uint8, device="cuda")
    a.register(back)
    a.read(back.data_ptr(), seg, dst.addr, length=1 << 20)
    assert torch.equal(back, t)
    # the DLPack path with a CUDA tensor
    c = torch.ones(4096, dtype=torch.uint8, device="cuda")
    assert a.register(DLPackOnly(c)) == c.data_ptr()
