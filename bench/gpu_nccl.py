#!/usr/bin/env python3
"""NCCL send/recv GPU0 -> GPU1 through torch.distributed (one process per GPU), and a torch peer
copy (cudaMemcpyPeerAsync) of the same sizes, for bench/gpu.sh. GB/s = 1e9 bytes/s, timed with
CUDA events over many back-to-back operations after a warm-up. NVLink multicast stays off."""
import os
import sys

os.environ.setdefault("NCCL_NVLS_ENABLE", "0")
os.environ.setdefault("TORCH_SYMM_MEM_DISABLE_MULTICAST", "1")
os.environ.setdefault("NVSHMEM_DISABLE_NVLS", "1")

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

SIZES = [64 << 10, 256 << 10, 1 << 20, 4 << 20, 16 << 20, 64 << 20, 256 << 20]


def reps(size):
    return max(20, min(1000, (4 << 30) // size))


def worker(rank, world, q):
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = "29533"
    torch.cuda.set_device(rank)
    dist.init_process_group("nccl", rank=rank, world_size=world, device_id=torch.device("cuda", rank))
    out = {}
    for size in SIZES:
        buf = torch.empty(size, dtype=torch.uint8, device="cuda")
        n = reps(size)
        for _ in range(5):
            (dist.send if rank == 0 else dist.recv)(buf, 1 - rank)
        torch.cuda.synchronize()
        dist.barrier()
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        for _ in range(n):
            (dist.send if rank == 0 else dist.recv)(buf, 1 - rank)
        b.record()
        torch.cuda.synchronize()
        out[size] = size * n / (a.elapsed_time(b) * 1e-3) / 1e9
    if rank == 1:
        q.put(out)
    dist.barrier()
    dist.destroy_process_group()


def peer_copy():
    out = {}
    for size in SIZES:
        src = torch.empty(size, dtype=torch.uint8, device="cuda:0")
        dst = torch.empty(size, dtype=torch.uint8, device="cuda:1")
        n = reps(size)
        with torch.cuda.device(0):
            for _ in range(5):
                dst.copy_(src, non_blocking=True)
            torch.cuda.synchronize(0)
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            for _ in range(n):
                dst.copy_(src, non_blocking=True)
            b.record()
            torch.cuda.synchronize(0)
            torch.cuda.synchronize(1)
        out[size] = size * n / (a.elapsed_time(b) * 1e-3) / 1e9
    return out


def main():
    if torch.cuda.device_count() < 2:
        print("gpu_nccl: skipped: needs 2 GPUs, found", torch.cuda.device_count())
        return 0
    print("torch", torch.__version__, "nccl", ".".join(map(str, torch.cuda.nccl.version())),
          "NCCL_NVLS_ENABLE=" + os.environ["NCCL_NVLS_ENABLE"])
    pc = peer_copy()
    ctx = mp.get_context("spawn")
    q = ctx.SimpleQueue()
    procs = [ctx.Process(target=worker, args=(r, 2, q)) for r in range(2)]
    for p in procs:
        p.start()
    nccl = q.get()
    for p in procs:
        p.join()
    print("\nGPU0 -> GPU1, GB/s (1e9 B/s)")
    print("%8s %16s %16s" % ("block", "torch_peer_copy", "nccl_send_recv"))
    for s in SIZES:
        label = "%dM" % (s >> 20) if s >= 1 << 20 else "%dK" % (s >> 10)
        print("%8s %16.1f %16.1f" % (label, pc[s], nccl[s]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
