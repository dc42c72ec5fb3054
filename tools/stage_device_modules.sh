#!/usr/bin/env bash
# Copies the npm packages the GPU path imports (not the chart packages, ~70 MB with their native builds) from
# node_modules/ into .devnm/ (git-ignored), for device runs: carry ".devnm", then on the device run
#   rm -rf node_modules && mv .devnm node_modules && tools/device_unpack.sh && deno run --node-modules-dir=manual ...
# js-tiktoken ships every encoding; only cl100k_base is kept. The Dawn runtime (npm webgpu, --webgpu dawn) ships a
# native build per platform (132 MB): only linux-x64's dawn.node is kept, xz -9 compressed (21.5 MB -> about 5 MB),
# which tools/device_unpack.sh decompresses in place on the device. DEVNM_DAWN=0 leaves the Dawn runtime out (about 5
# MB) for Deno-only device calls: the committed tree plus .device and a full .devnm reached the 64 MiB the device
# accepts on 2026-11-30 (the Deno runtime never loads the package; kernels/runtime.ts imports it only for dawn).
set -euo pipefail
dawn=${DEVNM_DAWN:-1}
cd "$(git rev-parse --show-toplevel)"
exclude="$(git rev-parse --git-path info/exclude)" # a worktree's .git is a file: ask git where the exclude file is
mkdir -p "$(dirname "$exclude")"
grep -qx '/.devnm/' "$exclude" 2>/dev/null || echo '/.devnm/' >> "$exclude"
rm -rf .devnm && mkdir -p .devnm/.deno
for p in deno-std@1.4.0 @huggingface+tokenizers@0.2.0 @huggingface+jinja@0.5.11 js-tiktoken@1.0.21 base64-js@1.5.1 \
  @webgpu+types@0.1.74 debug@4.4.3 ms@2.1.3; do
  cp -a "node_modules/.deno/$p" .devnm/.deno/
done
cp -a node_modules/deno-std node_modules/js-tiktoken .devnm/
mkdir -p .devnm/@huggingface && cp -a node_modules/@huggingface/* .devnm/@huggingface/
find .devnm/.deno/js-tiktoken@1.0.21 -path '*ranks*' -type f ! -name 'cl100k_base*' -delete
if [ "$dawn" = 0 ]; then
  du -sh .devnm | sed 's/^/staged (without Dawn): /'
  exit 0
fi
cp -a node_modules/webgpu .devnm/
# webgpu: everything but the other platforms' builds and the build scripts; dawn.node compressed.
web=node_modules/.deno/webgpu@0.6.2/node_modules
mkdir -p ".devnm/.deno/webgpu@0.6.2/node_modules/webgpu/dist/linux-x64"
cp -a "$web/@webgpu" "$web/debug" ".devnm/.deno/webgpu@0.6.2/node_modules/"
cp -a "$web/webgpu/"{index.js,package.json,types.d.ts,LICENSE.md} ".devnm/.deno/webgpu@0.6.2/node_modules/webgpu/"
xz -9 -T0 -c "$web/webgpu/dist/linux-x64/dawn.node" \
  > ".devnm/.deno/webgpu@0.6.2/node_modules/webgpu/dist/linux-x64/dawn.node.xz"
du -sh .devnm | sed 's/^/staged: /'
