"""A program written in Mooncake's style (mooncake.engine.TransferEngine), run unchanged against
Mooncake's wheel and against mc.compat.mooncake; only the import differs:

    python mooncake_style.py mc|mooncake target            prints "SESSION ADDR SIZE", then waits
    python mooncake_style.py mc|mooncake initiator SESSION ADDR SIZE
                                                             prints one JSON object of results

The results are return codes and whether the bytes arrived, so the two runs can be compared key
by key (tests/test_mooncake_compat.py does)."""

import ctypes
import json
import os
import sys
import time


def engine_class(impl):
    if impl == "mooncake":
        from mooncake.engine import TransferEngine
    else:
        from mc.compat.mooncake import TransferEngine
    return TransferEngine


def target(TransferEngine):
    size = 4 << 20
    engine = TransferEngine()
    assert engine.initialize("127.0.0.1", "P2PHANDSHAKE", "tcp", "") == 0
    addr = engine.allocate_managed_buffer(size)
    assert addr != 0
    print(f"127.0.0.1:{engine.get_rpc_port()} {addr} {size}", flush=True)
    sys.stdin.read()  # until the test closes our stdin
    engine.free_managed_buffer(addr, size)


def pattern(n, seed):
    return bytes((i * 131 + seed) & 0xFF for i in range(n))


def initiator(TransferEngine, session, remote, size):
    r = {}
    engine = TransferEngine()
    r["initialize"] = engine.initialize("127.0.0.1", "P2PHANDSHAKE", "tcp", "")
    r["rpc_port_positive"] = engine.get_rpc_port() > 0
    n = 1 << 20
    local = ctypes.create_string_buffer(2 * n)
    base = ctypes.addressof(local)
    r["register_memory"] = engine.register_memory(base, 2 * n)

    r["err_register_twice"] = engine.register_memory(base, 2 * n)
    spare = ctypes.create_string_buffer(4096)
    r["err_unregister_unknown"] = engine.unregister_memory(ctypes.addressof(spare))
    r["err_remote_out_of_range"] = engine.transfer_sync_write(session, base, remote + size, 64)
    r["err_local_unregistered"] = engine.transfer_sync_write(
        session, ctypes.addressof(spare), remote, 64)
    r["err_unreachable_sync"] = engine.transfer_sync_write("127.0.0.1:1", base, remote, 64)
    r["err_unreachable_async"] = engine.batch_transfer_async_write(
        "127.0.0.1:1", [base], [remote], [64])

    data = pattern(n, 7)
    ctypes.memmove(base, data, n)
    r["transfer_sync_write"] = engine.transfer_sync_write(session, base, remote, n)
    r["transfer_sync_read"] = engine.transfer_sync_read(session, base + n, remote, n)
    r["sync_roundtrip_equal"] = ctypes.string_at(base + n, n) == data

    # four pieces of 64 KiB, written to the remote in reverse order, read back in order
    piece = 64 << 10
    ctypes.memmove(base, pattern(4 * piece, 3), 4 * piece)
    srcs = [base + i * piece for i in range(4)]
    dsts = [remote + (3 - i) * piece for i in range(4)]
    r["batch_transfer_sync_write"] = engine.batch_transfer_sync_write(
        session, srcs, dsts, [piece] * 4)
    r["batch_transfer_sync_read"] = engine.batch_transfer_sync_read(
        session, [base + n], [remote], [4 * piece])
    got = ctypes.string_at(base + n, 4 * piece)
    want = b"".join(ctypes.string_at(s, piece) for s in reversed(srcs))
    r["batch_roundtrip_equal"] = got == want

    ctypes.memmove(base, pattern(n, 11), n)
    bid = engine.batch_transfer_async_write(session, [base], [remote + n], [n])
    r["async_write_id_nonzero"] = bid != 0
    r["async_write_status"] = engine.get_batch_transfer_status([bid])
    bid2 = engine.batch_transfer_async_read(session, [base + n], [remote + n], [n])
    bid3 = engine.batch_transfer_async_read(session, [base + n - 4096], [remote], [4096])
    r["async_read_status"] = engine.get_batch_transfer_status([bid2, bid3])
    r["async_roundtrip_equal"] = ctypes.string_at(base + n, n) == pattern(n, 11)

    # submit and poll, as Mooncake's users of transfer_submit_write do
    ctypes.memmove(base, pattern(4096, 17), 4096)
    bid = engine.transfer_submit_write(session, base, remote + 3 * n, 4096)
    r["submit_write_id_nonzero"] = bid != 0
    deadline = time.monotonic() + 30
    while (status := engine.transfer_check_status(bid)) == 0 and time.monotonic() < deadline:
        time.sleep(0.001)
    r["check_status_completed"] = status
    bid = engine.transfer_submit_write(session, base, remote + size, 64)
    while (status := engine.transfer_check_status(bid)) == 0 and time.monotonic() < deadline:
        time.sleep(0.001)
    r["check_status_failed"] = status

    managed = engine.allocate_managed_buffer(n)
    r["managed_nonzero"] = managed != 0
    ctypes.memmove(managed, pattern(n, 5), n)
    r["managed_write"] = engine.transfer_sync_write(session, managed, remote + 2 * n, n)
    ctypes.memset(managed, 0, n)
    r["managed_read"] = engine.transfer_sync_read(session, managed, remote + 2 * n, n)
    r["managed_roundtrip_equal"] = ctypes.string_at(managed, n) == pattern(n, 5)
    r["free_managed_buffer"] = engine.free_managed_buffer(managed, n)

    r["err_batch_unregister_unknown"] = engine.batch_unregister_memory(
        [ctypes.addressof(spare)])
    r["batch_unregister_memory"] = engine.batch_unregister_memory([base])
    other = ctypes.create_string_buffer(8192)
    oaddr = ctypes.addressof(other)
    r["batch_register_memory"] = engine.batch_register_memory([oaddr, oaddr + 4096],
                                                              [4096, 4096])
    r["unregister_memory"] = engine.unregister_memory(oaddr)
    r["unregister_memory_second"] = engine.unregister_memory(oaddr + 4096)
    return r


def main():
    impl, role = sys.argv[1], sys.argv[2]
    TransferEngine = engine_class(impl)
    if role == "target":
        target(TransferEngine)
    else:
        session, remote, size = sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
        started = time.monotonic()
        r = initiator(TransferEngine, session, remote, size)
        r["seconds"] = round(time.monotonic() - started, 3)
        print("RESULT " + json.dumps(r), flush=True)
        os._exit(0)  # the engines' threads are not this program's business


if __name__ == "__main__":
    main()
