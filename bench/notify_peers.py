"""The notification paths of Mooncake's and NIXL's pip wheels, measured as bench/notify_bench.c
measures mc's, on loopback between two processes of this machine (run by bench/notify.sh in a
venv that has the wheels; a wheel that is missing or fails is reported, not hidden).

  latency: an 8-byte WRITE with its notification, from submit to the receiver seeing it (the
           receiver busy-polls: neither library offers a file descriptor to wait on)
  block:   a WRITE of one block with a notification, until the receiver has the notification,
           against the same WRITE alone (a synchronous transfer)

usage: notify_peers.py mooncake|nixl ROUNDS
"""

import ctypes
import multiprocessing as mp
import sys
import time


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, len(v) * p // 100)]


# ------------------------------------------------------------------------------------ Mooncake


def mooncake_receiver(conn, size):
    from mooncake.engine import TransferEngine
    e = TransferEngine()
    assert e.initialize("127.0.0.1", "P2PHANDSHAKE", "tcp", "") == 0
    buf = ctypes.create_string_buffer(size)
    addr = ctypes.addressof(buf)
    assert e.register_memory(addr, size) == 0
    conn.send((f"127.0.0.1:{e.get_rpc_port()}", addr))
    while True:
        want = conn.recv()
        if want is None:
            return
        lat = []
        for _ in range(want):
            while True:
                got = e.get_notifies()
                if got:
                    break
                time.sleep(0)  # yield: on 2 cores a pure spin starves the sender's threads
            now = time.monotonic_ns()
            for n in got:
                lat.append(now - int(n.msg))
        conn.send(lat)


def mooncake(rounds):
    from mooncake.engine import TransferEngine, TransferOpcode, TransferNotify
    size = 1 << 20
    parent, child = mp.Pipe()
    p = mp.Process(target=mooncake_receiver, args=(child, size))
    p.start()
    try:
        target, raddr = parent.recv()
        e = TransferEngine()
        assert e.initialize("127.0.0.1", "P2PHANDSHAKE", "tcp", "") == 0
        src = ctypes.create_string_buffer(size)
        laddr = ctypes.addressof(src)
        assert e.register_memory(laddr, size) == 0
        name = f"127.0.0.1:{e.get_rpc_port()}"
        # latency: one at a time, the receiver answers after each
        lat = []
        for _ in range(rounds):
            parent.send(1)
            ts = time.monotonic_ns()
            rc = e.transfer_sync(target, laddr, raddr, 8, TransferOpcode.Write,
                                 TransferNotify(name, str(ts)))
            assert rc == 0, rc
            lat += parent.recv()
        print(f"mooncake notify latency (8 B WRITE + notify, submit -> peer's poll sees it), "
              f"{rounds} rounds: p50 {pct(lat, 50) / 1e3:.1f} us, p99 {pct(lat, 99) / 1e3:.1f} us")
        for blk, n in ((64 << 10, rounds), (1 << 20, max(rounds // 4, 1))):
            t0 = time.perf_counter()
            for _ in range(n):
                assert e.transfer_sync_write(target, laddr, raddr, blk) == 0
            alone = (time.perf_counter() - t0) / n * 1e6
            t0 = time.perf_counter()
            for _ in range(n):
                parent.send(1)
                assert e.transfer_sync(target, laddr, raddr, blk, TransferOpcode.Write,
                                       TransferNotify(name, str(time.monotonic_ns()))) == 0
                parent.recv()
            both = (time.perf_counter() - t0) / n * 1e6
            print(f"mooncake {blk >> 10:5d} KiB block: WRITE alone {alone:.1f} us "
                  f"({blk / alone:.0f} MB/s); WRITE+notify until the peer has it {both:.1f} us "
                  f"({blk / both:.0f} MB/s), +{both - alone:.1f} us")
    finally:
        parent.send(None)
        p.join(10)
        if p.is_alive():
            p.kill()


# ------------------------------------------------------------------------------------ NIXL


def nixl(rounds):
    from nixl._api import nixl_agent, nixl_agent_config  # noqa: F401  (raises if absent)
    import numpy as np
    cfg = nixl_agent_config(backends=["UCX"])
    a = nixl_agent("a", cfg)
    b = nixl_agent("b", cfg)
    a.add_remote_agent(b.get_agent_metadata())
    b.add_remote_agent(a.get_agent_metadata())
    lat = []
    for _ in range(rounds):
        ts = time.monotonic_ns()
        a.send_notif("b", str(ts).encode())
        while True:
            got = b.get_new_notifs()
            if got.get("a"):
                break
            time.sleep(0)
        now = time.monotonic_ns()
        lat += [now - int(m) for m in got["a"]]
    print(f"nixl notify latency (genNotif alone, one process, submit -> peer's poll sees it), "
          f"{rounds} rounds: p50 {pct(lat, 50) / 1e3:.1f} us, p99 {pct(lat, 99) / 1e3:.1f} us")
    size = 1 << 20
    src = np.ones(size, dtype=np.uint8)
    dst = np.zeros(size, dtype=np.uint8)
    sa, da = src.ctypes.data, dst.ctypes.data
    a.register_memory([(sa, size, 0, "")], "DRAM")
    b.register_memory([(da, size, 0, "")], "DRAM")
    a.add_remote_agent(b.get_agent_metadata())  # again: now with b's registered memory
    for blk, n in ((64 << 10, rounds), (1 << 20, max(rounds // 4, 1))):
        ld = a.get_xfer_descs([(sa, blk, 0)], "DRAM")
        rd = b.get_xfer_descs([(da, blk, 0)], "DRAM")

        def run(msg):
            h = a.initialize_xfer("WRITE", ld, rd, "b", msg)
            t0 = time.perf_counter()
            for _ in range(n):
                st = a.transfer(h)
                while st != "DONE":
                    assert st != "ERR", "nixl transfer failed"
                    st = a.check_xfer_state(h)
                if msg:
                    while not b.get_new_notifs().get("a"):
                        time.sleep(0)
            a.release_xfer_handle(h)
            return (time.perf_counter() - t0) / n * 1e6

        alone, both = run(b""), run(b"ready")
        print(f"nixl     {blk >> 10:5d} KiB block: WRITE alone {alone:.1f} us ({blk / alone:.0f} MB/s); "
              f"WRITE+notif until the peer has it {both:.1f} us ({blk / both:.0f} MB/s), "
              f"+{both - alone:.1f} us")


if __name__ == "__main__":
    which, rounds = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    mp.set_start_method("spawn")
    {"mooncake": mooncake, "nixl": nixl}[which](rounds)
