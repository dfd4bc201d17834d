"""mc.compat.mooncake with a metadata server, as Mooncake's users configure it: a redis server
("redis://HOST:PORT") and an etcd server (a bare "HOST:PORT", Mooncake's etcd default). Each test
starts its own server on a free loopback port and ends it; it skips, saying so, where the
server's binary is missing."""

import ctypes
import shutil
import socket
import subprocess
import tempfile
import time

import pytest

from conftest import slack

from mc.compat.mooncake import TransferEngine


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port, proc, what):
    deadline = time.monotonic() + 20 * slack()
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{what} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    pytest.fail(f"{what} did not listen on {port}")


@pytest.fixture
def redis_server():
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no"], stdout=subprocess.DEVNULL)
    try:
        wait_listening(port, proc, "redis-server")
        yield f"redis://127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
def etcd_server():
    exe = shutil.which("etcd")
    if exe is None:
        pytest.skip("etcd is not installed")
    port, peer = free_port(), free_port()
    with tempfile.TemporaryDirectory() as data:
        proc = subprocess.Popen(
            [exe, "--data-dir", data, "--listen-client-urls", f"http://127.0.0.1:{port}",
             "--advertise-client-urls", f"http://127.0.0.1:{port}",
             "--listen-peer-urls", f"http://127.0.0.1:{peer}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_listening(port, proc, "etcd")
            yield f"127.0.0.1:{port}"
        finally:
            proc.kill()
            proc.wait()


def two_engines_through(server):
    """A target and an initiator named by local_hostname through the server; bytes both ways."""
    target, initiator = TransferEngine(), TransferEngine()
    try:
        exchange(target, initiator, server)
    finally:  # before the server goes away
        for e in (initiator, target):
            if e.get_engine() is not None:
                e.get_engine().close()


def exchange(target, initiator, server):
    name = f"127.0.0.1:{free_port()}"
    assert target.initialize(name, server, "tcp", "") == 0
    assert target.get_rpc_port() == int(name.rsplit(":", 1)[1])
    assert initiator.initialize("127.0.0.1", server, "tcp", "") == 0
    assert initiator.get_rpc_port() > 0
    n = 1 << 16
    remote = target.allocate_managed_buffer(n)
    local = ctypes.create_string_buffer(2 * n)
    base = ctypes.addressof(local)
    assert initiator.register_memory(base, 2 * n) == 0
    ctypes.memmove(base, bytes(range(256)) * (n // 256), n)
    assert initiator.get_first_buffer_address(name) == remote
    assert initiator.transfer_sync_write(name, base, remote, n) == 0
    assert ctypes.string_at(remote, n) == ctypes.string_at(base, n)
    assert initiator.transfer_sync_read(name, base + n, remote, n) == 0
    assert ctypes.string_at(base + n, n) == ctypes.string_at(base, n)
    assert initiator.transfer_sync_write("no-such-engine", base, remote, n) == -1


def test_redis_metadata(redis_server):
    two_engines_through(redis_server)


def test_etcd_metadata(etcd_server):
    two_engines_through(etcd_server)
