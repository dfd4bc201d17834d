import os
import pathlib
import sys

# Import the package from this tree (bindings/python), unless MC_PY_INSTALLED=1 asks for the
# installed one (scripts/test-python-wheel.sh tests a wheel that way).
INSTALLED = os.environ.get("MC_PY_INSTALLED") == "1"
if not INSTALLED:
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

import pytest  # noqa: E402

import mc  # noqa: E402

if INSTALLED:  # the package under test is the installed one, not this tree's
    assert not pathlib.Path(mc.__file__).resolve().is_relative_to(
        pathlib.Path(__file__).resolve().parents[1]), f"MC_PY_INSTALLED=1 but mc is {mc.__file__}"


@pytest.fixture
def engine():
    with mc.Engine(listen="127.0.0.1:0", workers=2, timeout_ms=3000) as e:
        yield e


@pytest.fixture
def pair():
    """Two engines in one process; a opens b's segment over loopback TCP."""
    with mc.Engine(listen="127.0.0.1:0", workers=2, timeout_ms=3000) as a, \
         mc.Engine(listen="127.0.0.1:0", workers=2, timeout_ms=3000) as b:
        yield a, b


def slack():
    """MC_TEST_SLACK (default 1): the factor tests/testutil.h applies to every time limit of the
    C tests, so that a loaded CI machine never fails a correct build."""
    try:
        v = int(os.environ.get("MC_TEST_SLACK", "1"))
    except ValueError:
        v = 1
    return v if v > 0 else 1


def repo_root():
    return pathlib.Path(__file__).resolve().parents[3]


def build_dir():
    return pathlib.Path(os.environ.get("MC_BUILD_DIR", repo_root() / "build"))


def child_env():
    """The environment for a Python child process that imports the same mc as the tests."""
    env = dict(os.environ)
    if not INSTALLED:
        env["PYTHONPATH"] = str(repo_root() / "bindings" / "python") + os.pathsep + \
            env.get("PYTHONPATH", "")
    return env
