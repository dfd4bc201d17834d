"""mc: a transfer engine for AI infrastructure (Python bindings over libmc's C ABI, ctypes).

    import mc
    with mc.Engine(listen="127.0.0.1:0", workers=2) as eng:
        buf = eng.alloc(1 << 20)
        seg = eng.open("127.0.0.1:15000")
        eng.write(buf, seg, seg.buffers[0].addr)

The library is found through MC_LIBRARY, then the copy the wheel carries, then pkg-config's
libdir, then the build tree, then the system; its major version must match this package's.
mc.compat.mooncake is Mooncake's Python TransferEngine API on mc.
"""

from .errors import *  # noqa: F401,F403
from .errors import __all__ as _errors_all
from ._core import *  # noqa: F401,F403
from ._core import __all__ as _core_all, address_of  # noqa: F401
from . import _lib

__version__ = "0.1.0"
library_path = _lib.path

__all__ = list(_errors_all) + list(_core_all) + ["address_of", "library_path"]
