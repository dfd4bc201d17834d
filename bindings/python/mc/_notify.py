"""Notifications (MC_NOTIFY) and the engine's event fd, with asyncio waits built on it.

One reader per (engine, event loop) drains the event fd and wakes every coroutine waiting on that
engine in that loop, so Engine.wait_notification and any number of Batch.wait_async calls can
wait at once. A waiter is armed before it looks at what it waits for: a tick that comes between
the look and the await is never lost.
"""

import asyncio
import collections
import ctypes
import os

from . import _lib
from . import errors

lib = _lib.lib

NOTIFY_MAX_BYTES = 4096

Notification = collections.namedtuple("Notification", "peer incarnation data")


def event_fd(engine):
    """The engine's event fd (owned by the engine: do not close it). It polls readable after a
    notification was queued or a batch's requests all ended; reading 8 bytes drains it."""
    fd = ctypes.c_int(-1)
    lib.mc_engine_event_fd(engine._h(), ctypes.byref(fd))
    return fd.value


def notify_recv(engine):
    """The oldest queued notification as an mc.Notification(peer, incarnation, data), or None.
    Never blocks."""
    info = _lib.NotificationC()
    info.size = ctypes.sizeof(info)
    buf = ctypes.create_string_buffer(NOTIFY_MAX_BYTES)
    try:
        lib.mc_notify_recv(engine._h(), ctypes.byref(info), buf, NOTIFY_MAX_BYTES)
    except errors.NotFound:
        return None
    return Notification(info.peer.decode("utf-8", "replace"), info.incarnation, buf.raw[:info.length])


def notifications(engine):
    """Yields every queued notification until none is left (never blocks)."""
    while True:
        n = notify_recv(engine)
        if n is None:
            return
        yield n


class _Waiters:
    """The futures of one engine waiting in one loop on its event fd."""

    def __init__(self, loop, fd):
        self.loop, self.fd, self.futures = loop, fd, set()

    def arm(self):
        if not self.futures:
            self.loop.add_reader(self.fd, self._ready)
        fut = self.loop.create_future()
        self.futures.add(fut)
        return fut

    def disarm(self, fut):
        self.futures.discard(fut)
        if not self.futures:
            self.loop.remove_reader(self.fd)

    def _ready(self):
        try:
            os.read(self.fd, 8)
        except BlockingIOError:
            pass
        for fut in list(self.futures):
            if not fut.done():
                fut.set_result(None)


def _waiters(engine):
    loop = asyncio.get_running_loop()
    table = engine.__dict__.setdefault("_event_waiters", {})
    w = table.get(loop)
    if w is None:
        w = table[loop] = _Waiters(loop, event_fd(engine))
    return w


async def _until(engine, check):
    """Awaits the event fd until check() returns something other than None; returns it."""
    w = _waiters(engine)
    while True:
        fut = w.arm()
        try:
            got = check()
            if got is not None:
                return got
            await fut
        finally:
            w.disarm(fut)


async def wait_notification(engine):
    """Awaits the next notification (asyncio, through loop.add_reader on the event fd)."""
    return await _until(engine, lambda: notify_recv(engine))


async def wait_async(batch):
    """Awaits the end of every request submitted to the batch; raises the first failure's
    error as Batch.wait does."""
    def check():
        try:
            lib.mc_batch_wait(batch._h(), 0)
        except errors.Timeout:
            return None
        return True
    await _until(batch.engine, check)


def notify(batch, segment, data):
    """Submits one NOTIFY carrying data (bytes-like, 1..NOTIFY_MAX_BYTES bytes, copied at
    submit) to segment: it goes once every request submitted to this batch before it ended
    COMPLETED. Returns its index in the batch."""
    payload = bytes(data)
    buf = ctypes.create_string_buffer(payload, len(payload)) if payload else None
    req = _lib.RequestC(2, 0, ctypes.addressof(buf) if buf else None, _segment_of(segment), 0, len(payload))
    with batch._lock:
        lib.mc_batch_submit(batch._h(), ctypes.byref(req), 1)
        first = batch._submitted
        batch._submitted += 1
    return first


def _segment_of(segment):
    h = getattr(segment, "handle", segment)
    return int(h)
