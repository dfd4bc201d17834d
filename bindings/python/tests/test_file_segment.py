"""File segments by name (file:///abs/path?size=N) from Python, and the KV offload example."""

import os
import pathlib
import subprocess
import sys

import pytest

import mc

HERE = pathlib.Path(__file__).resolve().parent


def test_open_write_read(tmp_path):
    path = tmp_path / "seg.bin"
    with mc.Engine(listen="127.0.0.1:0") as eng:
        seg = eng.open(f"file://{path}?size=64K")
        assert seg.info().transport == "file"
        assert seg.buffers[0].addr == 0 and seg.buffers[0].length == 65536
        assert seg.buffers[0].location == "file"
        src, dst = bytearray(os.urandom(4096)), bytearray(4096)
        eng.register(src)
        eng.register(dst)
        eng.write(src, seg, 1000)
        eng.read(dst, seg, 1000)
        assert dst == src
        assert path.read_bytes()[1000:5096] == bytes(src)
        with pytest.raises(mc.OutOfRange):
            eng.write(src, seg, 65536 - 10)
        seg.close()
    with mc.Engine(listen="127.0.0.1:0") as eng:
        with pytest.raises(mc.NotFound) as e:
            eng.open(f"file://{tmp_path}/missing")
        assert "missing" in str(e.value)
        with pytest.raises(mc.InvalidArg):
            eng.open("file://relative/path")


def test_kv_offload_example(tmp_path):
    ex = HERE.parent / "examples" / "kv_offload.py"
    env = dict(os.environ, PYTHONPATH=str(HERE.parent))
    r = subprocess.run([sys.executable, str(ex), str(tmp_path), "16"], env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "every byte matched" in r.stdout
