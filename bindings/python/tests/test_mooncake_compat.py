"""mc.compat.mooncake: the Mooncake-style program tests/mooncake_style.py runs in two processes
(P2P handshake on loopback) against the shim, and, where Mooncake's wheel is importable here,
against Mooncake too, with the results compared key by key. Plus the shim's failure conventions
(-1 / 0, never an exception) in process."""

import importlib.util
import json
import pathlib
import subprocess
import sys

import pytest

from conftest import child_env, slack

from mc.compat.mooncake import TransferEngine, TransferOpcode

PROGRAM = str(pathlib.Path(__file__).resolve().parent / "mooncake_style.py")


def run_program(impl):
    env = child_env()
    tgt = subprocess.Popen([sys.executable, PROGRAM, impl, "target"], stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, text=True, env=env)
    try:
        line = tgt.stdout.readline().split()
        assert len(line) == 3, f"the {impl} target printed {line!r}"
        out = subprocess.run([sys.executable, PROGRAM, impl, "initiator", *line],
                             capture_output=True, text=True, env=env, timeout=60 * slack())
        results = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
        assert results, f"{impl} initiator: rc {out.returncode}, stderr {out.stderr[-2000:]}"
        r = json.loads(results[-1][len("RESULT "):])
        r.pop("seconds")
        return r
    finally:
        tgt.stdin.close()
        try:
            tgt.wait(timeout=10 * slack())
        except subprocess.TimeoutExpired:
            tgt.kill()
            tgt.wait()


def test_mooncake_style_program_on_mc():
    r = run_program("mc")
    failed = {k: v for k, v in r.items() if v not in (0, True) and not k.startswith("err_")
              and not k.startswith("check_status")}
    assert not failed, f"calls that did not succeed on mc: {failed}"
    # the codes Mooncake 0.3.13 gave for the same calls (the comparison test checks them all)
    assert {k: v for k, v in r.items() if k.startswith("err_")} == {
        "err_register_twice": -7, "err_unregister_unknown": -3, "err_remote_out_of_range": -1,
        "err_local_unregistered": -1, "err_unreachable_sync": -1, "err_unreachable_async": 0,
        "err_batch_unregister_unknown": -3}
    assert (r["check_status_completed"], r["check_status_failed"]) == (1, -1)
    assert len(r) == 32  # every call of the program reported


def test_same_program_same_results_as_mooncake():
    if importlib.util.find_spec("mooncake") is None:
        pytest.skip("Mooncake's wheel (mooncake-transfer-engine-non-cuda) is not installed here")
    ours, theirs = run_program("mc"), run_program("mooncake")
    # The one difference by design (mc.compat.mooncake's doc): mc moves bytes only from and to
    # registered memory; Mooncake's tcp transport sends from unregistered local memory.
    assert (ours.pop("err_local_unregistered"), theirs.pop("err_local_unregistered")) == (-1, 0)
    assert ours == theirs


@pytest.fixture
def moon():
    e = TransferEngine()
    assert e.initialize("127.0.0.1", "P2PHANDSHAKE", "tcp", "") == 0
    yield e
    e._engine.close()


def test_failures_return_codes_not_exceptions(moon):
    import ctypes
    buf = ctypes.create_string_buffer(4096)
    addr = ctypes.addressof(buf)
    assert moon.initialize("127.0.0.1", "P2PHANDSHAKE", "tcp", "") == -1  # twice
    assert moon.register_memory(addr, 0) == -1
    assert moon.register_memory(addr, 4096) == 0
    assert moon.register_memory(addr, 4096) == -7  # already registered: ERR_ADDRESS_OVERLAPPED
    assert moon.batch_register_memory([addr], [1, 2]) == -1
    assert moon.unregister_memory(addr + 8) == -3  # ERR_ADDRESS_NOT_REGISTERED
    # a peer nobody listens on: -1 for sync, 0 for async, at once (connection refused)
    assert moon.transfer_sync_write("127.0.0.1:1", addr, 4096, 16) == -1
    assert moon.batch_transfer_async_write("127.0.0.1:1", [addr], [4096], [16]) == 0
    assert moon.get_batch_transfer_status([12345]) == -1
    assert moon.free_managed_buffer(addr, 4096) == 0  # ignored, as Mooncake does
    assert moon.unregister_memory(addr) == 0


def test_own_segment_and_opcodes(moon):
    import ctypes
    n = 8192
    a = moon.allocate_managed_buffer(n)
    b = moon.allocate_managed_buffer(n)
    assert a and b
    me = f"127.0.0.1:{moon.get_rpc_port()}"
    assert moon.get_first_buffer_address(me) == min(a, b)
    assert moon.write_bytes_to_buffer(a, b"x" * n, n) == 0
    assert moon.transfer_sync(me, a, b, n, TransferOpcode.Write) == 0
    assert moon.read_bytes_from_buffer(b, n) == b"x" * n
    # a remote range running past the peer's registered memory fails (the two buffers may be
    # adjacent, and a request may span adjacent buffers: so past the higher one's end)
    assert moon.transfer_sync_write(me, a, max(a, b) + n - 16, 32) == -1
    assert moon.free_managed_buffer(a, n) == 0 and moon.free_managed_buffer(b, n) == 0


def test_metadata_servers_mapped():
    e = TransferEngine()
    assert e.initialize("127.0.0.1", "http://127.0.0.1:8080/metadata", "tcp", "") == -1
    assert e.initialize("127.0.0.1", "P2PHANDSHAKE", "nvmeof", "") == -1
    from mc.compat import mooncake
    assert mooncake._metadata("P2PHANDSHAKE") == "p2p"
    assert mooncake._metadata("10.0.0.1:2379") == "etcd://10.0.0.1:2379"
    assert mooncake._metadata("redis://10.0.0.1:6379") == "redis://10.0.0.1:6379"
