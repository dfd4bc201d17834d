"""The Python face of mc: Engine, Buffer, Segment, Batch, Heap over the C ABI in _lib."""

import collections
import ctypes
import enum
import json
import math
import mmap
import struct
import threading

from . import _lib
from . import _memory
from . import _notify
from ._notify import Notification, NOTIFY_MAX_BYTES
from . import errors

lib = _lib.lib

__all__ = [
    "Opcode", "READ", "WRITE", "Access", "ACCESS_NONE", "ACCESS_READ", "ACCESS_WRITE",
    "ACCESS_READ_WRITE", "RequestState", "SegmentState", "LogLevel", "Request",
    "RequestStatus", "SegmentInfo", "BufferInfo", "HeapStats", "Buffer", "Engine", "Segment",
    "Batch", "Heap", "set_log_handler", "set_log_level", "status_str", "last_error",
    "version", "version_string", "TIMEOUTS", "NOTIFY", "NOTIFY_MAX_BYTES", "Notification",
]


class Opcode(enum.IntEnum):
    READ = 0
    WRITE = 1
    NOTIFY = 2  # a message to the segment's engine, after the batch's earlier requests


READ = Opcode.READ
WRITE = Opcode.WRITE
NOTIFY = Opcode.NOTIFY


class Access(enum.IntFlag):
    """What peers may do with a registered buffer (Engine.set_access); bits combine with |."""
    NONE = 0
    READ = _lib.ACCESS_READ
    WRITE = _lib.ACCESS_WRITE


ACCESS_NONE = Access.NONE
ACCESS_READ = Access.READ
ACCESS_WRITE = Access.WRITE
ACCESS_READ_WRITE = Access.READ | Access.WRITE  # the default of every registered buffer


class RequestState(enum.IntEnum):
    PENDING = 0
    COMPLETED = 1
    FAILED = 2


class SegmentState(enum.IntEnum):
    OK = 0
    UNREACHABLE = 1


class LogLevel(enum.IntEnum):
    ERROR = 0
    WARN = 1
    INFO = 2
    DEBUG = 3


# local: an int address, an mc.Buffer or a registered buffer-protocol object; segment: an
# mc.Segment or its int handle; remote: the peer's virtual address.
Request = collections.namedtuple("Request", "opcode local segment remote length")
RequestStatus = collections.namedtuple("RequestStatus", "state error bytes")
SegmentInfo = collections.namedtuple(
    "SegmentInfo", "state buffer_count incarnation total_bytes transport rejoins state_changed_ms")
BufferInfo = collections.namedtuple("BufferInfo", "addr length location")
HeapStats = collections.namedtuple("HeapStats", "capacity used free largest_free allocations")


def version():
    """The loaded library's version as a (major, minor, patch) tuple."""
    v = lib.mc_version()
    return (v >> 16, (v >> 8) & 0xFF, v & 0xFF)


def version_string():
    return lib.mc_version_string().decode()


def status_str(status):
    """The library's name for a status ("invalid argument", ...)."""
    return _lib.status_str(status)


def last_error():
    """This thread's message for its last failed mc_* call."""
    return lib.mc_last_error().decode("utf-8", "replace")


TIMEOUTS = """Every blocking call takes timeout=None (float seconds). The default is the engine's
own bound: the C call gets -1 and every request still ends within the engine's timeout_ms of no
progress (so a call never hangs). An explicit timeout is a wall-clock limit on top."""


def _timeout_ms(timeout):
    """timeout, as every blocking call of this package takes it, to the C int milliseconds.
    The default is the engine's own bound: None passes -1 and every request still ends within the
    engine's timeout_ms of no progress (so a call never hangs). An explicit timeout (float
    seconds, >= 0) is a wall-clock limit on top."""
    if timeout is None:
        return -1
    if timeout < 0:
        raise errors.InvalidArg(-1, f"timeout must be >= 0 or None, not {timeout}")
    return min(int(math.ceil(timeout * 1000)), 2**31 - 1)


def _closed(what):
    return errors.InvalidArg(-1, f"the {what} is closed")


# ----------------------------------------------------------------------------- memory


_Pin = _memory._Pin


def _pin(obj):
    """A _Pin for anything register() takes (mc.Buffer: its own)."""
    if isinstance(obj, Buffer):
        return obj._pin_
    return _memory.pin(obj)


class Buffer(mmap.mmap):
    """Page-aligned memory allocated and registered by Engine.alloc. Supports len(), slicing,
    the buffer protocol (memoryview(buf), numpy.frombuffer(buf, ...)) and .addr. It stays
    registered (and alive) until .free() or the engine's close()."""

    def __new__(cls, length):
        self = super().__new__(cls, -1, length, flags=mmap.MAP_PRIVATE,
                               prot=mmap.PROT_READ | mmap.PROT_WRITE)
        carray = (ctypes.c_char * length).from_buffer(self)
        self._pin_ = _Pin(self, carray, ctypes.addressof(carray), length)
        self._engine = None
        return self

    def __init__(self, length):
        pass

    @property
    def addr(self):
        """The address of the first byte (use it in mc.Request.local)."""
        return self._pin_.addr

    @property
    def nbytes(self):
        return self._pin_.nbytes

    def set_access(self, access):
        """What peers may do with this buffer (Engine.set_access)."""
        eng = self._engine
        if eng is None:
            raise errors.InvalidArg(-1, "the buffer is not registered")
        eng.set_access(self, access)

    def free(self):
        """Unregisters the buffer and unmaps it. Busy while requests use it."""
        eng = self._engine
        if eng is not None and eng._handle:
            eng.unregister(self)
        self._release()

    def _release(self):
        self._engine = None
        pin, self._pin_.carray = self._pin_, None
        del pin
        if not self.closed:
            self.close()

    def __repr__(self):
        return f"<mc.Buffer addr=0x{self.addr:x} length={self.nbytes}>"


def address_of(obj):
    """The address of local memory: an int as is, mc.Buffer.addr, or the first byte of a
    buffer-protocol object (which the caller keeps alive)."""
    if isinstance(obj, int):
        return obj
    if isinstance(obj, Buffer):
        return obj._pin_.addr
    return _pin(obj).addr


# ----------------------------------------------------------------------------- engine


# The sync helpers' hot path. mc_request_t packed in one call (its layout checked against the
# ctypes declaration at import), mc_transfer through the unchecked binding (no argtypes: the
# arguments are already the declared ctypes types), the status checked inline.
_REQUEST = struct.Struct("@IIPQQQ")
assert _REQUEST.size == ctypes.sizeof(_lib.RequestC) and \
    [getattr(_lib.RequestC, f).offset for f in ("opcode", "flags", "local", "segment", "remote",
                                                "length")] == [0, 4, 8, 16, 24, 32], \
    "mc: mc_request_t layout differs from the struct format"
_pack_request = _REQUEST.pack_into
_transfer = _lib.unchecked.mc_transfer
_ONE = ctypes.c_size_t(1)  # the count argument; ctypes only reads it


def _new_request():
    """A (byref, byte view) pair over a fresh mc_request_t for the sync helpers' pool."""
    req = _lib.RequestC()
    return ctypes.byref(req), memoryview(req).cast("B")  # both keep req alive


def _sync_helper(opcode, name, doc):
    """Engine.write (opcode 1) or Engine.read (0). Same checks, errors and results as _one, at a
    fraction of the cost: the local object's registered (address, length) is one dict lookup
    (Engine._by_id, identity-checked; an int address is taken as is), the request struct comes
    from a per-engine pool (one per thread in flight: list.pop/append are atomic), and anything
    unusual (unregistered memory, a closed engine, a value the struct format refuses) goes
    through _one."""

    def helper(self, local, segment, remote, length=None, timeout=None):
        h = self._handle
        if not h:
            return self._one(opcode, local, segment, remote, length, timeout)  # raises
        if type(local) is int:
            if length is None:
                return self._one(opcode, local, segment, remote, length, timeout)  # raises
            addr, n = local, length
        else:
            pin = self._by_id.get(id(local))
            if pin is None or pin.obj is not local:
                return self._one(opcode, local, segment, remote, length, timeout)
            addr, n = pin.addr, (pin.nbytes if length is None else length)
        seg = segment.handle if type(segment) is Segment else _segment_handle(segment)
        ms = -1 if timeout is None else _timeout_ms(timeout)
        pool = self._reqs
        try:
            r = pool.pop()
        except IndexError:
            r = _new_request()
        try:
            _pack_request(r[1], 0, opcode, 0, addr, seg, remote, n)
        except struct.error:  # negative or non-integer values: ctypes' own conversions decide
            pool.append(r)
            return self._one(opcode, local, segment, remote, length, timeout)
        status = _transfer(h, r[0], _ONE, ms)
        if status:
            e = _lib.error(status)  # mc_last_error() first, before anything else on this thread
            pool.append(r)
            raise e
        pool.append(r)

    helper.__name__ = name
    helper.__qualname__ = f"Engine.{name}"
    helper.__doc__ = doc
    return helper


def _config_value(value):
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


class Engine:
    """An mc engine. Keyword arguments are config keys (name, metadata, listen, transports,
    workers, slice_size, tcp_connections, rdma_*, timeout_ms, heartbeat_ms, peer_timeout_ms,
    log_level, auth_token; see include/mc.h) passed to mc_config_set. Engines with different
    auth_tokens (or one without) refuse each other: mc.Denied.
    Use as a context manager or call close(); methods are thread-safe except close()."""

    def __init__(self, **config):
        self._handle = None
        self._pins = {}  # addr -> _Pin: registered memory kept alive
        # id(obj) -> _Pin of every registered object (the pin holds obj, so the id cannot be
        # reused while the entry exists; lookups also check pin.obj is obj). Written under _lock,
        # read without it (one dict.get) by the sync helpers; unregister removes the entry.
        self._by_id = {}
        self._reqs = []  # free (byref, view) mc_request_t structs of the sync helpers (a pool)
        self._lock = threading.Lock()
        self._callbacks = []  # every segment-callback thunk set, alive as long as the engine
        cfg = ctypes.POINTER(_lib.Config)()
        lib.mc_config_create(ctypes.byref(cfg))
        try:
            for key, value in config.items():
                lib.mc_config_set(cfg, key.encode(), _config_value(value).encode())
            handle = ctypes.POINTER(_lib.EngineHandle)()
            lib.mc_engine_create(cfg, ctypes.byref(handle))
        finally:
            lib.mc_config_destroy(cfg)
        self._handle = handle
        self._name = lib.mc_engine_name(handle).decode()

    # -- lifetime

    def close(self):
        """Destroys the engine (waits until no pending request can touch memory), then releases
        the memory it kept registered. Idempotent."""
        handle, self._handle = self._handle, None
        if not handle:
            return
        lib.mc_engine_destroy(handle)
        with self._lock:
            pins, self._pins, self._by_id = self._pins, {}, {}
        for pin in pins.values():
            if isinstance(pin.obj, Buffer) and pin.obj._engine is self:
                pin.obj._engine = None  # no longer registered; unmapped when the user drops it

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def _h(self):
        h = self._handle
        if not h:
            raise _closed("engine")
        return h

    @property
    def closed(self):
        return not self._handle

    @property
    def name(self):
        """The name peers open this engine's segment by ("HOST:PORT" in p2p mode)."""
        return self._name

    def __repr__(self):
        return f"<mc.Engine {self._name!r}{' closed' if self.closed else ''}>"

    # -- memory

    def alloc(self, length, location=None):
        """Allocates length bytes of page-aligned memory and registers it: an mc.Buffer."""
        if length <= 0:
            raise errors.InvalidArg(-1, f"alloc: length must be > 0, not {length}")
        buf = Buffer(length)
        try:
            self._register_pin(buf._pin_, location)
        except BaseException:
            buf._release()
            raise
        buf._engine = self
        return buf

    def register(self, obj, location=None):
        """Registers memory and keeps its object alive until unregister() or close(). obj is any
        writable C-contiguous buffer-protocol object (bytearray, numpy array, mmap, memoryview),
        a contiguous torch tensor (CPU or CUDA; a non-contiguous one is refused with
        mc.InvalidArg), an object with __cuda_array_interface__ or __dlpack__ (CPU or CUDA), an
        (addr, length) pair of raw memory the caller keeps valid, or a list of any of these,
        registered in one call as register_batch() does. Returns the address of the first byte
        (a list of addresses for a list)."""
        if isinstance(obj, list):
            return self.register_batch(obj, location)
        pin = _pin(obj)
        self._register_pin(pin, location)
        if isinstance(obj, Buffer) and obj._engine is None:
            obj._engine = self  # so that obj.free() unregisters it before unmapping
        return pin.addr

    def _register_pin(self, pin, location):
        loc = location.encode() if location is not None else None
        lib.mc_buffer_register(self._h(), pin.addr, pin.nbytes, loc)
        with self._lock:
            self._pins[pin.addr] = pin
            self._by_id[id(pin.obj)] = pin

    def register_batch(self, items, location=None):
        """Registers several memories at once (mc_buffer_register_batch): all or nothing, and the
        segment's descriptor is published once. Each item is an object as for register() (kept
        alive until unregistered) or an (addr, length[, location]) tuple of raw memory the caller
        keeps valid; location applies to items that name none. Returns the addresses, in order.
        An overlap among them or with registered memory: mc.Exists (the message names the
        index), and nothing is registered."""
        items = list(items)
        if not items:
            return []
        loc_default = location.encode() if location is not None else None
        pins, locs = [], []
        for item in items:
            if isinstance(item, tuple):
                if len(item) not in (2, 3):
                    raise errors.InvalidArg(
                        -1, f"register_batch: a tuple is (addr, length[, location]), not {item!r}")
                pins.append(_memory.pair(item[:2]))
                loc = item[2] if len(item) == 3 else None
                locs.append(loc.encode() if loc is not None else loc_default)
            else:
                pins.append(_pin(item))
                locs.append(loc_default)
        arr = (_lib.BufferDescC * len(pins))()
        for c, pin, loc in zip(arr, pins, locs):
            c.addr, c.length, c.location = pin.addr, pin.nbytes, loc
        lib.mc_buffer_register_batch(self._h(), arr, len(arr))
        with self._lock:
            for pin in pins:
                self._pins[pin.addr] = pin
                if pin.obj is not None:
                    self._by_id[id(pin.obj)] = pin
        return [pin.addr for pin in pins]

    def _registered_addr(self, obj):
        """The address an object (or int address) was registered under."""
        if isinstance(obj, int):
            return obj
        pin = self._by_id.get(id(obj))
        return pin.addr if pin is not None and pin.obj is obj else address_of(obj)

    def _forget(self, addr):
        with self._lock:
            pin = self._pins.pop(addr, None)
            if pin is not None and pin.obj is not None and \
                    self._by_id.get(id(pin.obj)) is pin:
                del self._by_id[id(pin.obj)]
        if pin is not None and isinstance(pin.obj, Buffer) and pin.obj._engine is self:
            pin.obj._engine = None

    def unregister(self, obj):
        """Unregisters memory registered with register() or alloc(): pass the object or its
        address. Raises mc.Busy while requests use it."""
        addr = self._registered_addr(obj)
        lib.mc_buffer_unregister(self._h(), addr)
        self._forget(addr)

    def unregister_batch(self, objs):
        """Unregisters several registered memories (objects or addresses) at once, all or nothing
        (mc_buffer_unregister_batch): mc.NotFound for an unknown one, mc.Busy while one is used,
        and nothing unregistered."""
        addrs = [self._registered_addr(o) for o in objs]
        if not addrs:
            return
        arr = (ctypes.c_void_p * len(addrs))(*addrs)
        lib.mc_buffer_unregister_batch(self._h(), arr, len(addrs))
        for addr in addrs:
            self._forget(addr)

    def set_access(self, obj, access):
        """Sets what peers may do with a registered buffer (an object or the address it starts
        at): mc.ACCESS_READ, mc.ACCESS_WRITE, both (the default) or 0. A forbidden peer request
        fails with mc.Denied and writes nothing; this engine's own requests are not affected.
        Taking rights away returns once no peer request admitted under the old ones runs."""
        lib.mc_buffer_set_access(self._h(), self._registered_addr(obj), int(access))

    def _local(self, obj, length):
        """(address, length) of local memory for the sync helpers and their slow path."""
        if isinstance(obj, int):
            if length is None:
                raise errors.InvalidArg(-1, "length is required with an int address")
            return obj, length
        pin = self._by_id.get(id(obj))
        if pin is None or pin.obj is not obj:
            # Not registered here (a freed mc.Buffer, another engine's, a view into registered
            # memory, plain memory): its address as is; the C library reports OUT_OF_RANGE for
            # memory outside this engine's registered buffers. No staging copy.
            if isinstance(obj, Buffer):
                if obj.closed:  # its address may belong to newer memory by now
                    raise errors.OutOfRange(-4, "local: the mc.Buffer was freed")
                pin = obj._pin_
            else:
                pin = _pin(obj)
        return pin.addr, pin.nbytes if length is None else length

    # -- segments

    def open(self, name):
        """Opens the segment published under name (blocks at most timeout_ms)."""
        out = ctypes.c_uint64()
        lib.mc_segment_open(self._h(), name.encode(), ctypes.byref(out))
        return Segment(self, name, out.value)

    def set_segment_callback(self, fn):
        """Calls fn(segment_handle, state: mc.SegmentState, incarnation) on every state change or
        rejoin of an open segment, from an engine thread; None clears it. Exceptions in fn are
        swallowed."""
        if fn is None:
            lib.mc_engine_set_segment_callback(self._h(), ctypes.cast(None, _lib.SEGMENT_FN), None)
            return

        def thunk(segment, state, incarnation, user):
            try:
                fn(segment, SegmentState(state) if state in (0, 1) else state, incarnation)
            except BaseException:
                pass

        cb = _lib.SEGMENT_FN(thunk)
        self._callbacks.append(cb)  # the library may still be running an older one
        lib.mc_engine_set_segment_callback(self._h(), cb, None)

    # -- transfers

    def transfer(self, requests, timeout=None):
        """Submits requests (mc.Request) on an internal batch and waits (timeout: float
        seconds, or None for the engine's own bound: see TIMEOUTS). Raises the first failure's
        error, or mc.Timeout."""
        arr = _requests(requests)
        lib.mc_transfer(self._h(), arr, len(arr), _timeout_ms(timeout))

    def _one(self, opcode, local, segment, remote, length, timeout):
        """The sync helpers' slow path (and their behaviour, which the fast path in _sync_helper
        must match): a fresh mc_request_t through the checked binding."""
        addr, n = self._local(local, length)
        req = _lib.RequestC(opcode, 0, addr, _segment_handle(segment), remote, n)
        lib.mc_transfer(self._h(), ctypes.byref(req), 1, _timeout_ms(timeout))

    write = _sync_helper(
        1, "write", """Copies local memory (registered: mc.Buffer, a registered object, or an int
        address) to the peer's address remote. length defaults to the size of local in bytes.
        Thread-safe; blocks until the bytes are in the peer's memory (timeout: float seconds, or
        None for the engine's own bound: see TIMEOUTS).""")

    read = _sync_helper(
        0, "read", """Copies [remote, remote+length) of the segment into local memory
        (registered). length defaults to the size of local in bytes. Thread-safe; blocks until
        the bytes arrived (timeout: float seconds, or None for the
        engine's own bound: see TIMEOUTS).""")

    def batch(self, capacity=128):
        """A new mc.Batch for up to capacity requests (a context manager)."""
        return Batch(self, capacity)

    # -- notifications (mc_notify_recv, mc_engine_event_fd)

    event_fd = _notify.event_fd
    notify_recv = _notify.notify_recv
    notifications = _notify.notifications
    wait_notification = _notify.wait_notification

    # -- stats

    def stats(self):
        """The engine's counters (mc_engine_stats_json) as a dict."""
        h = self._h()
        needed = ctypes.c_size_t(0)
        capacity = 4096
        while True:
            buf = ctypes.create_string_buffer(capacity)
            try:
                lib.mc_engine_stats_json(h, buf, capacity, ctypes.byref(needed))
            except errors.BufferTooSmall:
                capacity = max(needed.value, capacity * 2)
                continue
            return json.loads(buf.value.decode("utf-8", "replace"))


def _segment_handle(segment):
    if isinstance(segment, Segment):
        return segment.handle
    return int(segment)


def _requests(requests):
    requests = list(requests)
    arr = (_lib.RequestC * len(requests))()
    for i, r in enumerate(requests):
        op, local, seg, remote, length = r
        c = arr[i]
        c.opcode = int(op)
        c.local = address_of(local)
        c.segment = _segment_handle(seg)
        c.remote = remote
        c.length = length
    return arr


# ----------------------------------------------------------------------------- segments


class Segment:
    """An open handle to a peer's (or this engine's own) published buffers."""

    def __init__(self, engine, name, handle):
        self.engine = engine
        self.name = name
        self.handle = handle

    def info(self):
        """An mc.SegmentInfo(state, buffer_count, incarnation, total_bytes, transport, rejoins,
        state_changed_ms)."""
        info = _lib.SegmentInfoC()
        info.size = ctypes.sizeof(info)
        lib.mc_segment_query(self.engine._h(), self.handle, ctypes.byref(info))
        return SegmentInfo(SegmentState(info.state) if info.state in (0, 1) else info.state,
                           info.buffer_count, info.incarnation, info.total_bytes,
                           info.transport.decode(), info.rejoins, info.state_changed_ms)

    @property
    def buffers(self):
        """The peer's buffers as last known: a list of mc.BufferInfo(addr, length, location)."""
        h = self.engine._h()
        count = ctypes.c_size_t(0)
        capacity = 16
        while True:
            arr = (_lib.BufferInfoC * capacity)()
            try:
                lib.mc_segment_buffers(h, self.handle, arr, capacity, ctypes.byref(count))
            except errors.BufferTooSmall:
                capacity = max(count.value, capacity * 2)
                continue
            return [BufferInfo(b.addr, b.length, b.location.decode())
                    for b in arr[:count.value]]

    def close(self):
        """Closes the handle (requests already submitted still run). Idempotent."""
        handle, self.handle = self.handle, 0
        if handle and self.engine._handle:
            lib.mc_segment_close(self.engine._handle, handle)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"<mc.Segment {self.name!r} handle={self.handle}>"


# ----------------------------------------------------------------------------- batches


def _stream_handle(stream):
    """The CUstream of a stream object (its cuda_stream attribute) or of an int."""
    h = getattr(stream, "cuda_stream", stream)
    if isinstance(h, bool) or not isinstance(h, int) or h < 0:
        raise errors.InvalidArg(-1, "submit: stream must have an int cuda_stream or be an int "
                                f"CUstream handle, got {type(stream).__name__}")
    return h


class Batch:
    """Up to capacity requests submitted in one or more calls and waited on together. As a
    context manager it waits for pending requests and frees the batch on exit."""

    def __init__(self, engine, capacity=128):
        self.engine = engine  # keeps the Python engine (and its registered memory) alive
        self.capacity = capacity
        self._submitted = 0
        self._lock = threading.Lock()
        out = ctypes.POINTER(_lib.BatchHandle)()
        lib.mc_batch_create(engine._h(), capacity, ctypes.byref(out))
        self._handle = out

    def _h(self):
        h = self._handle
        if not h:
            raise _closed("batch")
        return h

    def submit(self, requests, stream=None):
        """Submits mc.Request tuples; none starts if any is bad. Returns the index of the first.

        stream (optional): a CUDA stream the requests are ordered on (mc_batch_submit_on_stream):
        any object with a ``cuda_stream`` attribute (torch.cuda.Stream, cupy streams) or an int
        (a CUstream / cudaStream_t handle; 0 is the legacy default stream). The requests then
        start after the work queued on the stream before, and work queued after waits for them,
        without this thread waiting for the GPU. Raises mc.Unsupported without a CUDA driver."""
        arr = _requests(requests)
        if len(arr) == 0:
            raise errors.InvalidArg(-1, "submit: no requests")
        handle = None if stream is None else _stream_handle(stream)
        with self._lock:
            if handle is None:
                lib.mc_batch_submit(self._h(), arr, len(arr))
            else:
                lib.mc_batch_submit_on_stream(self._h(), arr, len(arr), ctypes.c_void_p(handle))
            first = self._submitted
            self._submitted += len(arr)
        return first

    notify = _notify.notify
    wait_async = _notify.wait_async

    def wait(self, timeout=None):
        """Waits until every submitted request ended (timeout: float seconds, 0 to poll, or
        None for the engine's own bound: see TIMEOUTS). Raises the first failed request's error,
        or mc.Timeout."""
        lib.mc_batch_wait(self._h(), _timeout_ms(timeout))

    def status(self, index):
        """An mc.RequestStatus(state, error, bytes) of request index."""
        out = _lib.RequestStatusC()
        lib.mc_batch_status(self._h(), index, ctypes.byref(out))
        return RequestStatus(RequestState(out.state), out.error, out.bytes)

    def cancel(self):
        """Cancels every pending request (they end FAILED with mc.Canceled); returns once none
        can touch memory any more."""
        lib.mc_batch_cancel(self._h())

    def statuses(self):
        return [self.status(i) for i in range(self._submitted)]

    def __len__(self):
        return self._submitted

    def reset(self):
        """Forgets every request (mc.Busy while some are pending)."""
        lib.mc_batch_reset(self._h())
        self._submitted = 0

    def close(self):
        """Frees the batch (mc.Busy while requests are pending). Idempotent."""
        h = self._handle
        if h:
            lib.mc_batch_destroy(h)
            self._handle = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if not self._handle:
            return
        try:
            self.close()
        except errors.Busy:
            try:
                self.wait(None)
            except errors.Error:
                if exc[0] is None:
                    raise
            finally:
                self.close()

    def __del__(self):
        try:
            if self._handle:
                try:
                    self.close()
                except errors.Busy:
                    try:
                        lib.mc_batch_wait(self._handle, -1)
                    except errors.Error:
                        pass
                    self.close()
        except Exception:
            pass


# ----------------------------------------------------------------------------- heap


class Heap:
    """An offset allocator over [0, capacity): alloc(size, align) -> offset, free(offset)."""

    def __init__(self, capacity):
        out = ctypes.POINTER(_lib.HeapHandle)()
        lib.mc_heap_create(capacity, ctypes.byref(out))
        self._handle = out

    def _h(self):
        h = self._handle
        if not h:
            raise _closed("heap")
        return h

    def alloc(self, size, align=1):
        """An offset of size bytes aligned to align (mc.NoMemory when there is no room)."""
        out = ctypes.c_uint64()
        lib.mc_heap_alloc(self._h(), size, align, ctypes.byref(out))
        return out.value

    def free(self, offset):
        lib.mc_heap_free(self._h(), offset)

    def stats(self):
        """An mc.HeapStats(capacity, used, free, largest_free, allocations)."""
        s = _lib.HeapStatsC()
        s.size = ctypes.sizeof(s)
        lib.mc_heap_stats(self._h(), ctypes.byref(s))
        return HeapStats(s.capacity, s.used, s.free, s.largest_free, s.allocations)

    def close(self):
        h, self._handle = self._handle, None
        if h:
            lib.mc_heap_destroy(h)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


# ----------------------------------------------------------------------------- logging

_log_callback = None  # the ctypes thunk must outlive its use by the library


def set_log_handler(fn):
    """Sends every log line to fn(level: mc.LogLevel, message: str), called from mc threads;
    None restores stderr. Exceptions in fn are swallowed."""
    global _log_callback
    if fn is None:
        lib.mc_log_set_handler(ctypes.cast(None, _lib.LOG_FN), None)
        _log_callback = None
        return

    def thunk(level, message, user):
        try:
            fn(LogLevel(level) if 0 <= level <= 3 else level,
               message.decode("utf-8", "replace") if message else "")
        except BaseException:
            pass

    cb = _lib.LOG_FN(thunk)
    lib.mc_log_set_handler(cb, None)
    _log_callback = cb  # replace only after the library switched, so the old one stayed valid


def set_log_level(level):
    """Sets the process-wide log level (mc.LogLevel or 0..3)."""
    lib.mc_log_set_level(int(level))
