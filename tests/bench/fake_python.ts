/**
 * A stand-in for `python3` in the peer tests: a shell script whose body sees the peer script's path in $1 and the
 * model size in $2 (and `-c "import torch"` for the torch check).
 */

import { join } from "@std/path";

/** Writes a fake `python3` running `body` into a fresh folder and returns its path. */
export async function fakePython(body: string): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "fake_python" });
  const path = join(dir, "python3");
  await Deno.writeTextFile(path, `#!/bin/sh\n${body}\n`);
  await Deno.chmod(path, 0o755);
  return path;
}

/** A Python with torch whose torch peer prints text, a warning and its JSON line, and whose hf peer fails. */
export const TORCH_OK_HF_FAILS = `
if [ "$1" = "-c" ]; then exit 0; fi
case "$1" in
  *torch_decode_peer.py)
    echo "Fake GPU: d2d copy 3000 GB/s"
    echo "UserWarning: TF32 is off" >&2
    echo '{"peer": "torch", "size": "'"$2"'", "decode_ms_per_token": 9.5, "ttft_ms": null, "prompt_tokens": 128, "device": "Fake GPU"}' ;;
  *hf_eager_peer.py)
    echo "gpu Fake GPU"
    echo "RuntimeError: CUDA error: no kernel image" >&2
    exit 3 ;;
esac`;

/** A Python without torch. */
export const NO_TORCH = `echo "ModuleNotFoundError: No module named 'torch'" >&2; exit 1`;
