"""Builds the mc wheel: libmc is compiled from the source tree this folder sits in, in a temporary
folder, and copied into the package with the shared libraries it needs that are not part of every
Linux (hiredis, libcurl, libcrypto and what they pull in), renamed the way auditwheel renames them
(see _bundle.py and README.md). Nothing is written into the checkout: setuptools' build/ and
mc.egg-info/ go to the temporary folder too.

Outside a source tree (an sdist unpacked elsewhere) or with MC_PY_NO_BUNDLE=1 the package is built
without a library and finds an installed libmc at import (MC_LIBRARY, pkg-config, the system).
MC_PY_LIBMC=PATH bundles that libmc.so.0 (built from this tree already) instead of compiling."""

import atexit
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

from setuptools import Distribution, setup
from setuptools.command.build_py import build_py

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE))
import _bundle  # noqa: E402  (lives beside this file; not part of the package)

SCRATCH = pathlib.Path(tempfile.mkdtemp(prefix="mc-py-build-"))
atexit.register(shutil.rmtree, SCRATCH, True)


def _source_tree():
    return (ROOT / "Makefile").is_file() and (ROOT / "include" / "mc.h").is_file()


def _build_libmc():
    """Compiles libmc into SCRATCH/make and returns the path of libmc.so.0."""
    out = SCRATCH / "make"
    jobs = os.environ.get("MC_PY_JOBS", str(min(os.cpu_count() or 1, 4)))
    cmd = ["make", "-C", str(ROOT), f"BUILD={out}", f"-j{jobs}", str(out / "lib" / "libmc.so.0")]
    print("mc: building libmc:", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    return out / "lib" / "libmc.so.0"


class BuildPyWithLibmc(build_py):
    """build_py, plus libmc.so.0 and its bundled dependencies under mc/ and mc/_libs/."""

    def run(self):
        super().run()
        if os.environ.get("MC_PY_NO_BUNDLE") == "1" or not _source_tree():
            print("mc: no source tree (or MC_PY_NO_BUNDLE=1): the package carries no libmc",
                  flush=True)
            return
        pkg = pathlib.Path(self.build_lib) / "mc"
        prebuilt = os.environ.get("MC_PY_LIBMC")  # a libmc.so.0 built already, from this tree
        _bundle.bundle(prebuilt or _build_libmc(), pkg)


try:  # setuptools >= 70.1 carries bdist_wheel; older ones take it from the wheel package
    from setuptools.command.bdist_wheel import bdist_wheel
except ImportError:
    from wheel.bdist_wheel import bdist_wheel


class BinaryDistribution(Distribution):
    """Holds a native library: installed to platlib, and the wheel is for this platform."""

    def has_ext_modules(self):
        return True


class PlatformWheel(bdist_wheel):
    """The wheel holds a native library but no extension module: any CPython 3, this platform."""

    def get_tag(self):
        _, _, plat = super().get_tag()
        return "py3", "none", plat


setup(
    distclass=BinaryDistribution,
    cmdclass={"build_py": BuildPyWithLibmc, "bdist_wheel": PlatformWheel},
    options={
        "build": {"build_base": str(SCRATCH / "build")},
        "egg_info": {"egg_base": str(SCRATCH)},
    },
)
