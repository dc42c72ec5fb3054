#!/usr/bin/env bash
# Copies the npm packages the GPU path imports (not the chart packages, ~70 MB with their native builds) from
# node_modules/ into .devnm/ (git-ignored), for device runs: carry ".devnm", then on the device run
#   rm -rf node_modules && mv .devnm node_modules && deno run --node-modules-dir=manual ...
# js-tiktoken ships every encoding; only cl100k_base is kept.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
grep -qx '/.devnm/' .git/info/exclude 2>/dev/null || echo '/.devnm/' >> .git/info/exclude
rm -rf .devnm && mkdir -p .devnm/.deno
for p in deno-std@1.4.0 @huggingface+tokenizers@0.2.0 @huggingface+jinja@0.5.11 js-tiktoken@1.0.21 base64-js@1.5.1; do
  cp -a "node_modules/.deno/$p" .devnm/.deno/
done
cp -a node_modules/deno-std node_modules/js-tiktoken .devnm/
mkdir -p .devnm/@huggingface && cp -a node_modules/@huggingface/* .devnm/@huggingface/
find .devnm/.deno/js-tiktoken@1.0.21 -path '*ranks*' -type f ! -name 'cl100k_base*' -delete
du -sh .devnm | sed 's/^/staged: /'
