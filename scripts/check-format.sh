#!/bin/sh
# Fails when a file under src/ differs from what clang-format makes of it with the repository's
# .clang-format (Google-based, 110 columns). Fix with: scripts/check-format.sh --fix
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root" || exit 2
cf=$(command -v clang-format || command -v clang-format-14 || true)
if [ -z "$cf" ]; then
  echo "check-format: clang-format not found (scripts/install-deps.sh installs it)" >&2
  exit 1
fi
files=$(find src -name '*.cpp' -o -name '*.h' | sort)
if [ "${1:-}" = "--fix" ]; then
  echo "$files" | xargs "$cf" -i
  exit 0
fi
bad=0
for f in $files; do
  if ! "$cf" "$f" | cmp -s - "$f"; then
    echo "check-format: $f is not clang-formatted"
    bad=$((bad + 1))
  fi
done
n=$(echo "$files" | wc -l)
echo "check-format: $n files, $bad not formatted ($($cf --version | head -1))"
[ "$bad" -eq 0 ]
