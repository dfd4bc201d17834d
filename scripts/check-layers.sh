#!/bin/bash
# Fails on an #include that goes against the layers of src/ (docs/architecture.md):
#
#   api                        50  the C shim
#   engine                     40
#   transport metadata control metrics 30  (transport/X may include transport/*.h, never transport/Y/;
#                                   transport/registry.cpp alone includes every transport/X/;
#                                   metadata and transport may include control)
#   proto gpu                  20
#   memheap                    15  the offset allocator (uses util)
#   util                       10  leaves
#
# A file may include its own folder, and anything of a lower layer; nothing of its own layer
# in another folder (but the exceptions above) and nothing above. Also: nothing under src/
# includes bindings/ or tests/.
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
level() {
  case "$1" in
    api) echo 50 ;; engine) echo 40 ;; transport | metadata | control | metrics) echo 30 ;;
    proto | gpu) echo 20 ;; memheap) echo 15 ;; util) echo 10 ;; *) echo 0 ;;
  esac
}
fail=0; files=0; edges=0
while IFS= read -r f; do
  files=$((files + 1))
  rel="${f#src/}"
  top="${rel%%/*}"
  from=$(level "$top")
  if [ "$from" = 0 ]; then echo "check-layers: $f is in no layer (src/$top/)"; fail=1; continue; fi
  # transport/X: its folder; transport/*.h directly under transport/ is the shared interface.
  sub=""
  case "$rel" in transport/*/*) sub="${rel#transport/}"; sub="${sub%%/*}" ;; esac
  while IFS= read -r inc; do
    edges=$((edges + 1))
    itop="${inc%%/*}"
    case "$inc" in bindings/* | tests/* | ../*) echo "check-layers: $f includes $inc"; fail=1; continue ;; esac
    [ -e "src/$inc" ] || continue  # a system or generated header
    to=$(level "$itop")
    [ "$itop" = "$top" ] && {
      if [ "$top" = transport ] && [ -n "$sub" ]; then
        case "$inc" in
          transport/"$sub"/*) ;;
          transport/samehost/*) ;;  # what shm and nvlink share (samehost itself includes neither)
          transport/*/*) echo "check-layers: $f includes another transport's $inc"; fail=1 ;;
        esac
      elif [ "$rel" = transport/registry.cpp ]; then
        :  # the registry's table is the one place that names every transport
      elif [ "$top" = transport ]; then
        case "$inc" in transport/*/*) echo "check-layers: $f (shared transport interface) includes $inc"; fail=1 ;; esac
      fi
      continue
    }
    if [ "$to" -lt "$from" ]; then continue; fi
    if [ "$to" -eq 30 ] && [ "$from" -eq 30 ] && [ "$itop" = control ]; then continue; fi
    echo "check-layers: $f ($top, layer $from) includes $inc ($itop, layer $to)"
    fail=1
  done < <(sed -n 's/^[ \t]*#[ \t]*include[ \t]*"\([^"]*\)".*/\1/p' "$f")
done < <(find src -name '*.h' -o -name '*.cpp' | sort)
if [ "$fail" -eq 0 ]; then
  echo "check-layers: $files files, $edges includes, all along the layers"
else
  echo "check-layers: FAILED"
fi
exit "$fail"
