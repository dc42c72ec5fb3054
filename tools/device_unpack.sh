#!/usr/bin/env bash
# On the GPU machine, after `mv .devnm node_modules`: decompresses, in place, the native builds that
# tools/stage_device_modules.sh staged xz-compressed (Dawn's dawn.node of npm webgpu, for --webgpu dawn). Uses xz,
# else Python's lzma module. Running it again does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
find node_modules/.deno -name '*.node.xz' -print0 | while IFS= read -r -d '' f; do
  if command -v xz >/dev/null; then
    xz -d -f "$f"
  else
    python3 -c 'import lzma, os, sys; f = sys.argv[1]; open(f[:-3], "wb").write(lzma.open(f).read()); os.remove(f)' "$f"
  fi
  echo "unpacked ${f%.xz}"
done
