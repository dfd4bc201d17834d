"""What Engine.register accepts, resolved to (address, length) with the object that keeps the
memory alive: the buffer protocol, torch tensors (CPU and CUDA), __cuda_array_interface__,
__dlpack__ (CPU and CUDA) and (addr, length) pairs. Torch is never imported: a tensor is known by
its type's module."""

import ctypes
import math

from . import errors


class _Pin:
    """Memory with its address, and what holds it while it is registered: obj (the user's object)
    and carray (a ctypes array over a buffer export, or a DLPack capsule; None otherwise)."""

    __slots__ = ("obj", "carray", "addr", "nbytes")

    def __init__(self, obj, carray, addr, nbytes):
        self.obj, self.carray, self.addr, self.nbytes = obj, carray, addr, nbytes


def _invalid(message):
    return errors.InvalidArg(-1, "mc: " + message)


def _row_major(shape, strides, itemsize):
    """Whether strides (in bytes) describe a dense C-ordered array of shape."""
    expected = itemsize
    for dim, stride in zip(reversed(shape), reversed(strides)):
        if dim != 1 and stride != expected:
            return False
        expected *= dim
    return True


def _torch(t):
    if not t.is_contiguous():
        raise _invalid(f"the torch tensor (shape {tuple(t.shape)}, strides {t.stride()}) is not "
                       "contiguous; register t.contiguous() (a copy) or the tensor it views")
    return _Pin(t, None, int(t.data_ptr()), int(t.numel()) * int(t.element_size()))


def _cuda_array(obj, cai):
    shape = tuple(int(d) for d in cai["shape"])
    itemsize = int(cai["typestr"][2:])
    strides = cai.get("strides")
    if strides is not None and not _row_major(shape, strides, itemsize):
        raise _invalid(f"the device array (shape {shape}, strides {tuple(strides)}) is not "
                       "C-contiguous")
    if cai["data"][1]:
        raise _invalid("the device array is read-only")
    return _Pin(obj, None, int(cai["data"][0]), math.prod(shape) * itemsize)


class _DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class _DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _DLTensor(ctypes.Structure):
    """DLManagedTensor's leading DLTensor (dlpack.h, the unversioned capsule "dltensor")."""
    _fields_ = [("data", ctypes.c_void_p), ("device", _DLDevice), ("ndim", ctypes.c_int32),
                ("dtype", _DLDataType), ("shape", ctypes.POINTER(ctypes.c_int64)),
                ("strides", ctypes.POINTER(ctypes.c_int64)), ("byte_offset", ctypes.c_uint64)]


_DL_CPU, _DL_CUDA, _DL_CUDA_HOST, _DL_CUDA_MANAGED = 1, 2, 3, 13
_capsule_pointer = ctypes.pythonapi.PyCapsule_GetPointer
_capsule_pointer.restype = ctypes.c_void_p
_capsule_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]


def _dlpack(obj):
    """The memory behind obj.__dlpack__(). The capsule is kept, not consumed: while it lives the
    producer keeps the memory; when it is collected its destructor calls the deleter."""
    device = obj.__dlpack_device__()[0] if hasattr(obj, "__dlpack_device__") else None
    if device not in (None, _DL_CPU, _DL_CUDA, _DL_CUDA_HOST, _DL_CUDA_MANAGED):
        raise _invalid(f"DLPack device type {device} is not host or CUDA memory")
    capsule = obj.__dlpack__()
    t = _DLTensor.from_address(_capsule_pointer(capsule, b"dltensor"))
    shape = [t.shape[i] for i in range(t.ndim)]
    bits = t.dtype.bits * t.dtype.lanes
    if bits % 8:
        raise _invalid(f"DLPack elements of {bits} bits are not whole bytes")
    if t.strides and not _row_major(shape, [t.strides[i] * bits // 8 for i in range(t.ndim)],
                                    bits // 8):
        raise _invalid(f"the DLPack tensor (shape {tuple(shape)}) is not C-contiguous")
    return _Pin(obj, capsule, (t.data or 0) + t.byte_offset, math.prod(shape) * bits // 8)


def _buffer(obj, view):
    with view:
        if view.readonly:
            raise TypeError(f"mc: {type(obj).__name__} is read-only; peers may write registered "
                            "memory, so register a writable buffer (bytearray, numpy array, "
                            "mc.Buffer)")
        if not view.c_contiguous:
            raise _invalid("the buffer is not C-contiguous")
        nbytes = view.nbytes
    if nbytes == 0:
        raise _invalid(f"the {type(obj).__name__} is empty")
    carray = (ctypes.c_char * nbytes).from_buffer(obj)  # holds an export: obj cannot move
    return _Pin(obj, carray, ctypes.addressof(carray), nbytes)


def pair(item):
    """An (addr, length) pair of raw memory the caller keeps valid."""
    if len(item) != 2:
        raise _invalid(f"raw memory is an (addr, length) pair, not {item!r}")
    addr, length = item
    if not isinstance(addr, int) or not isinstance(length, int) or addr <= 0 or length <= 0:
        raise _invalid(f"(addr, length) must be two positive ints, not {item!r}")
    return _Pin(None, None, addr, length)


def pin(obj):
    """A _Pin for any object register() takes except mc.Buffer (the engine's own): an
    (addr, length) tuple, a torch tensor, a buffer-protocol object, or one with
    __cuda_array_interface__ or __dlpack__. TypeError for anything else."""
    if isinstance(obj, tuple):
        return pair(obj)
    if type(obj).__module__.startswith("torch") and hasattr(obj, "data_ptr"):
        return _torch(obj)
    try:
        view = memoryview(obj)
    except TypeError:
        pass
    else:
        return _buffer(obj, view)
    cai = getattr(obj, "__cuda_array_interface__", None)
    if cai is not None:
        return _cuda_array(obj, cai)
    if hasattr(obj, "__dlpack__"):
        return _dlpack(obj)
    raise TypeError(f"mc: {type(obj).__name__} is not memory register() takes (the buffer "
                    "protocol, __cuda_array_interface__, __dlpack__, a torch tensor, an "
                    "(addr, length) pair, or a list of these)")
