#!/usr/bin/env bash
# Stages other commits' code for an A/B inside one device call: the same pass timed from two trees, processes
# interleaved (A B A B ...), because the H200 reads the same code up to 1.5% apart from one call to the next (docs/PERF.md,
# session AG; ARCHITECTURE.md, "A tile is chosen by the pass it runs in").
#
#   tools/stage_ab.sh <commit>...   here: each commit's code (git archive: no docs, no results) into .ab/<commit>/
#                                   (git-ignored), then carry ".ab" beside ".device" and ".devnm"
#   tools/stage_ab.sh --link        on the device, once node_modules is in place: each .ab/<commit>/ uses it
#
# then time each tree in turn, e.g.
#   P="deno run --node-modules-dir=manual -A --preload common/runtime_dir.ts tools/profile.ts --webgpu dawn --whole \
#      --size 7b --config prefill --contexts 128 --samples 5"
#   for i in 1 2 3; do $P; (cd .ab/71a3d2f && $P); done
# A staged commit must have the flags the command uses (`profile --whole` exists from 8152f49 on).
set -euo pipefail
cd "$(git rev-parse --show-toplevel 2>/dev/null || pwd)"
if [ "${1:-}" = "--link" ]; then
  for d in .ab/*/; do ln -sfn ../../node_modules "${d}node_modules"; done
  exit 0
fi
if [ $# -eq 0 ]; then
  echo "usage: tools/stage_ab.sh <commit>... | --link" >&2
  exit 2
fi
exclude="$(git rev-parse --git-path info/exclude)"
mkdir -p "$(dirname "$exclude")"
grep -qx '/.ab/' "$exclude" 2>/dev/null || echo '/.ab/' >> "$exclude"
for c in "$@"; do
  short=$(git rev-parse --short "$c^{commit}")
  rm -rf ".ab/$short" && mkdir -p ".ab/$short"
  paths=$(git ls-tree --name-only "$short" | grep -vx -e docs -e results -e tests -e README.md -e ARCHITECTURE.md)
  # shellcheck disable=SC2086
  git archive "$short" $paths | tar -x -C ".ab/$short"
  du -sh ".ab/$short" | sed "s|^|staged $c as |"
done
