"""Notifications through the Python binding: Batch.notify, Engine.notifications, the event fd,
and the asyncio waits built on it (Engine.wait_notification, Batch.wait_async)."""
import asyncio
import os
import select

import pytest

import mc
from conftest import slack


def test_notify_after_write_and_drain(pair):
    a, b = pair
    src = a.alloc(1 << 20)
    dst = b.alloc(1 << 20)
    seg = a.open(b.name)
    for r in range(20):
        payload = os.urandom(1 << 20)
        src[:] = payload
        with a.batch(2) as bt:
            bt.submit([mc.Request(mc.WRITE, src, seg, dst.addr, 1 << 20)])
            assert bt.notify(seg, b"round %d" % r) == 1
            bt.wait()
        got = list(b.notifications())
        assert [n.data for n in got] == [b"round %d" % r]
        assert got[0].peer == a.name and got[0].incarnation == a.stats()["incarnation"]
        assert dst[:] == payload
    assert b.notify_recv() is None


def test_event_fd_polls_readable(pair):
    a, b = pair
    seg = a.open(b.name)
    fd = b.event_fd()
    assert fd == b.event_fd() and fd >= 0
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    assert poller.poll(0) == []
    with a.batch(1) as bt:
        bt.notify(seg, b"ping")
        bt.wait()
    assert poller.poll(int(5000 * slack()))
    os.read(fd, 8)
    assert b.notify_recv().data == b"ping"


def test_bad_notify_and_full_queue():
    with mc.Engine(listen="127.0.0.1:0", timeout_ms=3000) as a, \
         mc.Engine(listen="127.0.0.1:0", timeout_ms=3000, notify_queue=2) as b:
        seg = a.open(b.name)
        with a.batch(4) as bt:
            with pytest.raises(mc.InvalidArg):
                bt.notify(seg, b"x" * (mc.NOTIFY_MAX_BYTES + 1))
            with pytest.raises(mc.InvalidArg):
                bt.notify(seg, b"")
            assert len(bt) == 0
            for i in range(2):
                bt.notify(seg, b"%d" % i)
                bt.wait()
            bt.notify(seg, b"one too many")
            with pytest.raises(mc.Busy):
                bt.wait()
        assert [n.data for n in b.notifications()] == [b"0", b"1"]


def test_asyncio_waits(pair):
    a, b = pair
    src = a.alloc(4 << 20)
    dst = b.alloc(4 << 20)
    seg = a.open(b.name)
    back = b.open(a.name)

    async def decode_side():
        n = await b.wait_notification()
        assert dst[:16] == b"k" * 16  # the WRITE before it is in place
        with b.batch(1) as bt:
            bt.notify(back, b"done:" + n.data)
            await bt.wait_async()
        return n

    async def prefill_side():
        src[:] = b"k" * (4 << 20)
        with a.batch(2) as bt:
            bt.submit([mc.Request(mc.WRITE, src, seg, dst.addr, 4 << 20)])
            bt.notify(seg, b"blocks 0-3")
            await bt.wait_async()
        return await a.wait_notification()

    async def main():
        return await asyncio.wait_for(asyncio.gather(decode_side(), prefill_side()), 10 * slack())

    n, reply = asyncio.run(main())
    assert n.data == b"blocks 0-3" and n.peer == a.name
    assert reply.data == b"done:blocks 0-3" and reply.peer == b.name


def test_wait_async_raises_failure():
    with mc.Engine(listen="127.0.0.1:0", timeout_ms=3000) as a, \
         mc.Engine(listen="127.0.0.1:0", timeout_ms=3000, notify_queue=1) as b:
        seg = a.open(b.name)

        async def main():
            with a.batch(2) as bt:
                bt.notify(seg, b"fits")
                bt.notify(seg, b"queue full")
                with pytest.raises(mc.Busy):
                    await bt.wait_async()
                assert bt.status(0).state == mc.RequestState.COMPLETED
                assert bt.status(1).error == mc.Busy.status

        asyncio.run(main())
        assert [n.data for n in b.notifications()] == [b"fits"]
