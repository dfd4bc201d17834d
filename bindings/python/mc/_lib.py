"""Loading libmc and declaring its C ABI (include/mc.h) for ctypes.

Every function is declared once, in _FUNCTIONS. Functions returning mc_status_t get an errcheck
that reads mc_last_error() right after the call, on the same thread, and raises the mc.Error
subclass for the status.

The few functions named in _UNCHECKED are also bound a second time, as unchecked.<name>, for the
hot path of the sync helpers: no argtypes (ctypes' per-argument from_param conversion was the
largest part of a small transfer's Python cost) and no errcheck. Callers pass ctypes objects of
exactly the types the table declares (or a Python int where the C type is int) and, on a nonzero
status, raise error(status) before any other mc_* call on the thread.
"""

import ctypes
import ctypes.util
import os
import pathlib
import shutil
import subprocess

from . import errors

# The ABI this package was written against (include/mc.h MC_VERSION_*).
VERSION_MAJOR = 0
VERSION_MINOR = 1

# What peers may do with a buffer (enum in include/mc.h, for mc_buffer_set_access).
ACCESS_READ = 1
ACCESS_WRITE = 2

# ----------------------------------------------------------------------------- C types

c_status = ctypes.c_int32
c_segment = ctypes.c_uint64


class Config(ctypes.Structure):
    """mc_config_t (opaque)."""


class EngineHandle(ctypes.Structure):
    """mc_engine_t (opaque)."""


class BatchHandle(ctypes.Structure):
    """mc_batch_t (opaque)."""


class HeapHandle(ctypes.Structure):
    """mc_heap_t (opaque)."""


class SegmentInfoC(ctypes.Structure):
    _fields_ = [
        ("size", ctypes.c_size_t),
        ("state", ctypes.c_uint32),
        ("buffer_count", ctypes.c_uint32),
        ("incarnation", ctypes.c_uint64),
        ("total_bytes", ctypes.c_uint64),
        ("transport", ctypes.c_char * 16),
        ("rejoins", ctypes.c_uint64),
        ("state_changed_ms", ctypes.c_uint64),
    ]


class BufferInfoC(ctypes.Structure):
    _fields_ = [
        ("addr", ctypes.c_uint64),
        ("length", ctypes.c_uint64),
        ("location", ctypes.c_char * 32),
    ]


class BufferDescC(ctypes.Structure):
    """mc_buffer_desc_t, for mc_buffer_register_batch."""
    _fields_ = [
        ("addr", ctypes.c_void_p),
        ("length", ctypes.c_uint64),
        ("location", ctypes.c_char_p),
    ]


class RequestC(ctypes.Structure):
    _fields_ = [
        ("opcode", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("local", ctypes.c_void_p),
        ("segment", c_segment),
        ("remote", ctypes.c_uint64),
        ("length", ctypes.c_uint64),
    ]


class RequestStatusC(ctypes.Structure):
    _fields_ = [
        ("state", ctypes.c_uint32),
        ("error", ctypes.c_int32),
        ("bytes", ctypes.c_uint64),
    ]


class NotificationC(ctypes.Structure):
    """mc_notification_t, for mc_notify_recv."""
    _fields_ = [
        ("size", ctypes.c_size_t),
        ("peer", ctypes.c_char * 256),
        ("incarnation", ctypes.c_uint64),
        ("length", ctypes.c_uint64),
    ]


class HeapStatsC(ctypes.Structure):
    _fields_ = [
        ("size", ctypes.c_size_t),
        ("capacity", ctypes.c_uint64),
        ("used", ctypes.c_uint64),
        ("free", ctypes.c_uint64),
        ("largest_free", ctypes.c_uint64),
        ("allocations", ctypes.c_uint64),
    ]


LOG_FN = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)
SEGMENT_FN = ctypes.CFUNCTYPE(None, c_segment, ctypes.c_uint32, ctypes.c_uint64, ctypes.c_void_p)

P = ctypes.POINTER
S = "status"  # restype marker: mc_status_t checked by errcheck

# ----------------------------------------------------------------------------- the one table

# (name, argtypes, restype). restype S means mc_status_t with errcheck.
_FUNCTIONS = [
    ("mc_version", [], ctypes.c_uint32),
    ("mc_version_string", [], ctypes.c_char_p),
    ("mc_status_str", [c_status], ctypes.c_char_p),
    ("mc_last_error", [], ctypes.c_char_p),
    ("mc_config_create", [P(P(Config))], S),
    ("mc_config_set", [P(Config), ctypes.c_char_p, ctypes.c_char_p], S),
    ("mc_config_destroy", [P(Config)], None),
    ("mc_engine_create", [P(Config), P(P(EngineHandle))], S),
    ("mc_engine_destroy", [P(EngineHandle)], None),
    ("mc_engine_name", [P(EngineHandle)], ctypes.c_char_p),
    ("mc_engine_stats_json", [P(EngineHandle), ctypes.c_char_p, ctypes.c_size_t,
                              P(ctypes.c_size_t)], S),
    ("mc_buffer_register", [P(EngineHandle), ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p], S),
    ("mc_buffer_unregister", [P(EngineHandle), ctypes.c_void_p], S),
    ("mc_buffer_register_batch", [P(EngineHandle), P(BufferDescC), ctypes.c_size_t], S),
    ("mc_buffer_unregister_batch", [P(EngineHandle), P(ctypes.c_void_p), ctypes.c_size_t], S),
    ("mc_buffer_set_access", [P(EngineHandle), ctypes.c_void_p, ctypes.c_uint32], S),
    ("mc_segment_open", [P(EngineHandle), ctypes.c_char_p, P(c_segment)], S),
    ("mc_segment_close", [P(EngineHandle), c_segment], S),
    ("mc_engine_set_segment_callback", [P(EngineHandle), SEGMENT_FN, ctypes.c_void_p], S),
    ("mc_segment_query", [P(EngineHandle), c_segment, P(SegmentInfoC)], S),
    ("mc_segment_buffers", [P(EngineHandle), c_segment, P(BufferInfoC), ctypes.c_size_t,
                            P(ctypes.c_size_t)], S),
    ("mc_batch_create", [P(EngineHandle), ctypes.c_size_t, P(P(BatchHandle))], S),
    ("mc_batch_submit", [P(BatchHandle), P(RequestC), ctypes.c_size_t], S),
    ("mc_batch_submit_on_stream", [P(BatchHandle), P(RequestC), ctypes.c_size_t, ctypes.c_void_p], S),
    ("mc_batch_wait", [P(BatchHandle), ctypes.c_int], S),
    ("mc_batch_status", [P(BatchHandle), ctypes.c_size_t, P(RequestStatusC)], S),
    ("mc_batch_cancel", [P(BatchHandle)], S),
    ("mc_batch_reset", [P(BatchHandle)], S),
    ("mc_batch_destroy", [P(BatchHandle)], S),
    ("mc_transfer", [P(EngineHandle), P(RequestC), ctypes.c_size_t, ctypes.c_int], S),
    ("mc_notify_recv", [P(EngineHandle), P(NotificationC), ctypes.c_void_p, ctypes.c_size_t], S),
    ("mc_engine_event_fd", [P(EngineHandle), P(ctypes.c_int)], S),
    ("mc_heap_create", [ctypes.c_uint64, P(P(HeapHandle))], S),
    ("mc_heap_alloc", [P(HeapHandle), ctypes.c_uint64, ctypes.c_uint64, P(ctypes.c_uint64)], S),
    ("mc_heap_free", [P(HeapHandle), ctypes.c_uint64], S),
    ("mc_heap_stats", [P(HeapHandle), P(HeapStatsC)], S),
    ("mc_heap_destroy", [P(HeapHandle)], None),
    ("mc_log_set_handler", [LOG_FN, ctypes.c_void_p], None),
    ("mc_log_set_level", [ctypes.c_int], None),
]

# Also bound unchecked (see the module doc); each must be an S entry of _FUNCTIONS.
_UNCHECKED = ("mc_transfer",)

# ----------------------------------------------------------------------------- finding the library

SONAME = "libmc.so.0"


def _candidates():
    """Where libmc is looked for, in order: MC_LIBRARY, the copy the wheel carries (setup.py),
    pkg-config's libdir, the build tree, the system."""
    env = os.environ.get("MC_LIBRARY")
    if env:
        yield env, "MC_LIBRARY"
        return  # an explicit choice is not second-guessed
    yield str(pathlib.Path(__file__).resolve().parent / SONAME), "package"
    if shutil.which("pkg-config"):
        try:
            libdir = subprocess.run(["pkg-config", "--variable=libdir", "mc"], capture_output=True,
                                    text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            libdir = ""
        if libdir:
            yield os.path.join(libdir, SONAME), "pkg-config"
    # bindings/python/mc/_lib.py -> the repository root is three levels up.
    root = pathlib.Path(__file__).resolve().parent.parent.parent.parent
    yield str(root / "build" / "lib" / SONAME), "build tree"
    found = ctypes.util.find_library("mc")
    yield found or SONAME, "system"


def _load():
    tried = []
    for path, how in _candidates():
        if how != "system" and not os.path.exists(path):
            tried.append(f"{how}: {path} (absent)")
            continue
        try:
            return ctypes.CDLL(path), path
        except OSError as e:
            tried.append(f"{how}: {path} ({e})")
    raise ImportError("mc: cannot load libmc; tried " + "; ".join(tried) +
                      ". Set MC_LIBRARY to the path of libmc.so.0.")


def error(status):
    """The mc.Error for a failed call's status, with this thread's mc_last_error(): call it right
    after the failing call, before any other mc_* call on the thread."""
    message = _last_error().decode("utf-8", "replace")
    return errors.error_class(status)(status, message)


def _errcheck(result, func, args):
    if result == 0:
        return result
    raise error(result)


def _missing(name):
    def stub(*args):
        raise errors.Unsupported(-10, f"{name} is not in the loaded libmc ({path})")
    stub.__name__ = name
    return stub


lib, path = _load()

for _name, _argtypes, _restype in _FUNCTIONS:
    try:
        _f = getattr(lib, _name)
    except AttributeError:
        setattr(lib, _name, _missing(_name))
        continue
    _f.argtypes = _argtypes
    if _restype == S:
        _f.restype = c_status
        _f.errcheck = _errcheck
    else:
        _f.restype = _restype

_last_error = lib.mc_last_error


class _Unchecked:
    """The _UNCHECKED functions, bound without argtypes and errcheck (restype mc_status_t)."""


unchecked = _Unchecked()
for _name in _UNCHECKED:
    _entry = next(e for e in _FUNCTIONS if e[0] == _name)
    assert _entry[2] == S, f"{_name}: only status-returning functions are bound unchecked"
    if isinstance(getattr(lib, _name), ctypes._CFuncPtr):
        _f = lib._FuncPtr((_name, lib))  # a second function object on the same symbol
        _f.restype = c_status
    else:
        _f = getattr(lib, _name)  # the _missing stub: raises mc.Unsupported
    setattr(unchecked, _name, _f)

version = lib.mc_version()
version_string = lib.mc_version_string().decode()
if (version >> 16) != VERSION_MAJOR:
    raise ImportError(f"mc: {path} is libmc {version_string}; this package needs "
                      f"{VERSION_MAJOR}.x")


def status_str(status):
    return lib.mc_status_str(int(status)).decode("utf-8", "replace")
