"""KV-cache handoff between a prefill and a decode process, as disaggregated serving does it.

The prefill process fills a paged KV cache (a numpy array of fixed-size blocks, carved by an
mc.Heap), WRITEs each request's blocks into the decode process's cache and, in the same batch,
sends one NOTIFY naming them. mc sends the NOTIFY only after those WRITEs completed, so when the
decode side wakes up the blocks are in its memory. The decode process awaits the notification
(asyncio, on the engine's event fd), checks every block and NOTIFYs back, and the prefill side
frees the blocks on both ends.

    python3 kv_handoff.py [--requests N] [--blocks B] [--block-kib K] [--transports T]

runs both: it starts the decode process (this file with --role decode) and is the prefill side.
"""

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time

import numpy as np

import mc

HERE = os.path.dirname(os.path.abspath(__file__))


def block_pattern(req, i, elems):
    """What block i of request req holds: a value only that block has, so a block written to
    the wrong slot, or read before it landed, is caught."""
    return np.full(elems, (req * 1009 + i * 17) % 65521, dtype=np.float32)


class PagedCache:
    """A KV cache of `blocks` blocks of `elems` float32 each, registered with the engine, and
    the mc.Heap that hands out block indices."""

    def __init__(self, engine, blocks, elems):
        self.data = np.zeros((blocks, elems), dtype=np.float32)
        self.addr = engine.register(self.data)
        self.block_bytes = elems * 4
        self.heap = mc.Heap(blocks)

    def take(self, n):
        """n block indices (scattered, as a paged cache's are), or None when full."""
        got = []
        try:
            for _ in range(n):
                got.append(self.heap.alloc(1))
        except mc.NoMemory:
            for b in got:
                self.heap.free(b)
            return None
        return got

    def give(self, blocks):
        for b in blocks:
            self.heap.free(b)

    def block_addr(self, b):
        return self.addr + b * self.block_bytes


# ---------------------------------------------------------------------------------- decode


async def decode_main(args):
    elems = args.block_kib * 256
    with mc.Engine(listen="127.0.0.1:0", transports=args.transports) as eng:
        cache = PagedCache(eng, args.cache_blocks, elems)
        # The prefill side needs our name and where the cache lives.
        print(json.dumps({"name": eng.name, "cache": cache.addr, "block_bytes": cache.block_bytes}),
              flush=True)
        back = None
        checked = 0
        while True:
            n = await eng.wait_notification()
            msg = json.loads(n.data)
            if msg.get("bye"):
                break
            if back is None:
                back = eng.open(n.peer)
            req = msg["req"]
            bad = [i for i, b in enumerate(msg["blocks"])
                   if not np.array_equal(cache.data[b], block_pattern(req, i, elems))]
            checked += len(msg["blocks"])
            with eng.batch(1) as bt:
                bt.notify(back, json.dumps({"req": req, "ok": not bad, "bad": bad}).encode())
                await bt.wait_async()
        print(json.dumps({"checked_blocks": checked}), flush=True)


# ---------------------------------------------------------------------------------- prefill


class Prefill:
    def __init__(self, eng, seg, peer, args):
        self.eng, self.seg, self.args = eng, seg, args
        self.elems = args.block_kib * 256
        self.local = PagedCache(eng, args.cache_blocks, self.elems)
        # The decode cache's blocks this side hands out (one prefill feeds this decode process).
        self.remote = mc.Heap(args.cache_blocks)
        self.remote_base, self.block_bytes = peer["cache"], peer["block_bytes"]
        self.acks = {}
        self.freed = asyncio.Event()

    async def acks_loop(self):
        """Routes the decode side's answers to the requests waiting for them."""
        while self.acks or not self.done:
            n = await self.eng.wait_notification()
            msg = json.loads(n.data)
            self.acks.pop(msg["req"]).set_result(msg)

    async def take_blocks(self):
        while True:
            mine = self.local.take(self.args.blocks)
            theirs = None
            if mine is not None:
                try:
                    theirs = [self.remote.alloc(1) for _ in range(self.args.blocks)]
                except mc.NoMemory:
                    self.local.give(mine)
                    theirs = None
            if theirs is not None:
                return mine, theirs
            self.freed.clear()
            await self.freed.wait()  # an answer frees blocks

    async def one(self, req):
        mine, theirs = await self.take_blocks()
        for i, b in enumerate(mine):  # "prefill": compute this request's KV blocks
            self.local.data[b] = block_pattern(req, i, self.elems)
        ack = asyncio.get_running_loop().create_future()
        self.acks[req] = ack
        t0 = time.perf_counter()
        with self.eng.batch(len(mine) + 1) as bt:
            bt.submit([mc.Request(mc.WRITE, self.local.block_addr(b), self.seg,
                                  self.remote_base + d * self.block_bytes, self.block_bytes)
                       for b, d in zip(mine, theirs)])
            bt.notify(self.seg, json.dumps({"req": req, "blocks": theirs}).encode())
            await bt.wait_async()
        msg = await ack
        self.local.give(mine)  # the decode side has them: free both ends
        for d in theirs:
            self.remote.free(d)
        self.freed.set()
        if not msg["ok"]:
            raise SystemExit(f"request {req}: decode found bad blocks {msg['bad']}")
        return time.perf_counter() - t0

    async def run(self):
        self.done = False
        loop_task = asyncio.create_task(self.acks_loop())
        sem = asyncio.Semaphore(self.args.inflight)

        async def guarded(r):
            async with sem:
                return await self.one(r)

        lat = await asyncio.gather(*(guarded(r) for r in range(self.args.requests)))
        self.done = True
        loop_task.cancel()
        with self.eng.batch(1) as bt:
            bt.notify(self.seg, b'{"bye": true}')
            await bt.wait_async()
        return sorted(lat)


def prefill_main(args):
    cmd = [sys.executable, os.path.abspath(__file__), "--role", "decode"] + args.pass_on
    decode = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        peer = json.loads(decode.stdout.readline())
        with mc.Engine(listen="127.0.0.1:0", transports=args.transports) as eng:
            seg = eng.open(peer["name"])
            t0 = time.perf_counter()
            lat = asyncio.run(Prefill(eng, seg, peer, args).run())
            wall = time.perf_counter() - t0
            info = seg.info()
        done = json.loads(decode.stdout.readline())
        if decode.wait(timeout=30) != 0:
            raise SystemExit("the decode process failed")
    finally:
        if decode.poll() is None:
            decode.kill()
    moved = args.requests * args.blocks * args.block_kib * 1024
    want = args.requests * args.blocks
    print(f"kv_handoff: {args.requests} requests x {args.blocks} blocks of {args.block_kib} KiB over "
          f"{info.transport}: decode checked {done['checked_blocks']}/{want} blocks; "
          f"{moved / wall / 1e6:.0f} MB/s, handoff p50 {lat[len(lat) // 2] * 1e3:.2f} ms, "
          f"max {lat[-1] * 1e3:.2f} ms")
    if done["checked_blocks"] != want:
        raise SystemExit("kv_handoff: not every block was checked")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--role", choices=["prefill", "decode"], default="prefill")
    p.add_argument("--requests", type=int, default=64)
    p.add_argument("--blocks", type=int, default=8, help="KV blocks per request")
    p.add_argument("--block-kib", type=int, default=64)
    p.add_argument("--cache-blocks", type=int, default=128, help="blocks in each side's cache")
    p.add_argument("--inflight", type=int, default=8, help="requests handed off at once")
    p.add_argument("--transports", default="auto")
    args = p.parse_args()
    args.pass_on = [f"--block-kib={args.block_kib}", f"--cache-blocks={args.cache_blocks}",
                    f"--transports={args.transports}"]
    if args.role == "decode":
        asyncio.run(decode_main(args))
    else:
        prefill_main(args)


if __name__ == "__main__":
    main()
