#!/usr/bin/env python3
"""Offloads KV-cache blocks of a numpy cache to a file and loads them back, verified.

    PYTHONPATH=bindings/python python3 bindings/python/examples/kv_offload.py [DIR] [BLOCKS]

A file is just another segment: "file:///abs/path?size=N" opens (creating or growing) the file,
its one buffer is [0, N) at address 0, and a request's remote is the file offset. The cache is
[layers, blocks, 2 (K and V), tokens per block, heads, head dim] float16; one KV block of one
layer is contiguous, so each (layer, block) is one request. Half the blocks are written to the
file in one batch, the cache is wiped, and the same blocks are read back in one batch into
other slots (as a serving system reloads spilled blocks wherever there is room), then checked
against a copy.
"""

import os
import sys
import tempfile

import numpy as np

import mc


def main():
    directory = sys.argv[1] if len(sys.argv) > 1 else tempfile.gettempdir()
    blocks = int(sys.argv[2]) if len(sys.argv) > 2 else 64
    layers, tokens, heads, head_dim = 4, 16, 8, 64
    cache = np.random.default_rng(7).standard_normal(
        (layers, blocks, 2, tokens, heads, head_dim)).astype(np.float16)
    block_bytes = cache[0, 0].nbytes  # 2 * tokens * heads * head_dim * 2 bytes, 64 KiB here
    spilled = list(range(0, blocks, 2))  # the blocks to offload
    path = os.path.join(os.path.abspath(directory), f"mc-kv-offload-{os.getpid()}.bin")
    size = layers * len(spilled) * block_bytes
    try:
        with mc.Engine(listen="127.0.0.1:0") as eng:
            base = eng.register(cache)
            seg = eng.open(f"file://{path}?size={size}")
            assert seg.buffers[0].location == "file" and seg.buffers[0].length == size

            def slot_addr(layer, block):  # the address of cache[layer, block]
                return base + (layer * blocks + block) * block_bytes

            def file_off(layer, i):  # where spilled block i of layer lives in the file
                return (layer * len(spilled) + i) * block_bytes

            saved = cache.copy()
            with eng.batch(layers * len(spilled)) as b:  # offload: one WRITE per (layer, block)
                b.submit([mc.Request(mc.WRITE, slot_addr(layer, blk), seg, file_off(layer, i), block_bytes)
                          for layer in range(layers) for i, blk in enumerate(spilled)])
                b.wait()
            cache[:] = 0  # the blocks are gone from memory
            # Reload each spilled block into the slot after it (blk + 1): other slots than before.
            with eng.batch(layers * len(spilled)) as b:
                b.submit([mc.Request(mc.READ, slot_addr(layer, blk + 1), seg, file_off(layer, i), block_bytes)
                          for layer in range(layers) for i, blk in enumerate(spilled)])
                b.wait()
            for blk in spilled:
                if not np.array_equal(cache[:, blk + 1], saved[:, blk]):
                    print(f"block {blk}: MISMATCH after reload")
                    return 1
            stats = eng.stats().get("file", {})
            print(f"offloaded and reloaded {len(spilled)} blocks x {layers} layers "
                  f"({size / 2**20:.1f} MiB) through {seg.info().transport}: every byte matched "
                  f"({stats.get('direct_ops', '?')} O_DIRECT operations)")
            seg.close()
            return 0
    finally:
        if os.path.exists(path):
            os.unlink(path)


if __name__ == "__main__":
    sys.exit(main())
