/**
 * An L2 prefetch: one load of every 32-byte sector of a byte range of a buffer, and no store, so that a later kernel
 * finds that range in the L2 cache.
 *
 * A decode step alternates bandwidth-bound products with latency-bound dispatches (the attention at short contexts, its
 * merge, the post-norms), during which the memory bus idles. Dispatched right after one of those, a prefetch of the
 * next product's first bytes has nothing to wait for (it writes nothing, so the runtime puts no barrier before it;
 * kernels/control/read_barrier.ts says why that matters) and streams them into L2 while the small kernel runs; the
 * next product's barrier waits for both, then reads those bytes from L2. Sized to the small kernel's time, it turns
 * idle bus time into weight bytes (`model/hydra.ts`, `HydraShape.prefetch`).
 *
 * The loads' results go to a workgroup atomic that nothing reads (a dead store a compiler could drop would take the
 * loads with it; an atomic is kept). With `check`, the kernel instead stores each invocation's xor of what it loaded,
 * so the tests can see which words it read.
 * @module
 */

import type { Dispatch, Gpu, Kernel } from "../runtime.ts";

/** Bytes a prefetch loads one word of: a 32-byte L2 sector. */
export const PREFETCH_SECTOR_BYTES = 32;

/** Threads a prefetch workgroup runs. */
const WG = 256;

/**
 * Most workgroups of a prefetch (they stride over the range, four loads in flight a thread): 8 a streaming
 * multiprocessor of an H200 (132). 264 measured the same in a 7B step (4.983 against 4.981 ms at 8 MB).
 */
const MAX_WORKGROUPS = 1056;

/** The WGSL kernel (`check`: the variant the tests read, with a third binding). */
export function prefetchKernelFor(check = false): Kernel {
  return {
    name: `prefetch${check ? "_check" : ""}`,
    source: /* wgsl */ `
// bindings: 0 ctl (gate only) · 1 src u32, read: words FIRST, FIRST + 8, ... (one a 32-byte sector), COUNT of them${
      check ? "\n//   · 2 seen [grid threads] u32, read_write: each invocation's xor of the words it loaded" : ""
    }
override FIRST: u32;
override COUNT: u32;
override WG: u32 = ${WG}u;
const STRIDE: u32 = ${PREFETCH_SECTOR_BYTES / 4}u;
@group(0) @binding(0) var<storage, read> ctl: array<u32>;
@group(0) @binding(1) var<storage, read> src: array<u32>;${
      check
        ? "\n@group(0) @binding(2) var<storage, read_write> seen: array<u32>;"
        : "\nvar<workgroup> sink: atomic<u32>;"
    }

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) t: u32) {
  if (gated_off()) { return; }
  let threads = nwg.x * nwg.y * WG;
  let me = flat_workgroup(wid, nwg) * WG + t;
  var acc = 0u;
  // four independent loads in flight a thread, then the rest
  var i = me;
  for (; i + 3u * threads < COUNT; i += 4u * threads) {
    let a = src[FIRST + i * STRIDE];
    let b = src[FIRST + (i + threads) * STRIDE];
    let c = src[FIRST + (i + 2u * threads) * STRIDE];
    let d = src[FIRST + (i + 3u * threads) * STRIDE];
    acc ^= a ^ b ^ c ^ d;
  }
  for (; i < COUNT; i += threads) { acc ^= src[FIRST + i * STRIDE]; }
  ${check ? "seen[me] = acc;" : "atomicXor(&sink, acc);"}
}
`,
  };
}

/** What a prefetch dispatch covers: words `first`, `first + 8`, ... (`count` of them) of `src`. */
export interface PrefetchPlan {
  first: number;
  count: number;
  workgroups: number;
}

/**
 * The plan of a prefetch of `bytes` bytes from byte `offset` of a buffer of `size` bytes (clamped to the buffer; a
 * multiple of 4 offset). Null when nothing is left to load.
 */
export function planPrefetch(size: number, offset: number, bytes: number): PrefetchPlan | null {
  if (offset % 4 !== 0) throw new Error(`prefetch: offset ${offset} is not a multiple of 4`);
  const end = Math.min(size, offset + Math.max(0, bytes));
  const count = Math.ceil((end - offset) / PREFETCH_SECTOR_BYTES);
  if (count <= 0) return null;
  return { first: offset / 4, count, workgroups: Math.min(MAX_WORKGROUPS, Math.ceil(count / (4 * WG))) };
}

/**
 * Records a prefetch of `bytes` bytes of `src` from byte `offset` (load time), or nothing when the range is empty.
 * `seen` (tests): the check variant, storing each invocation's xor there.
 */
export function prefetch(
  gpu: Gpu,
  a: { ctl: GPUBuffer; src: GPUBuffer; offset?: number; bytes: number; gated?: boolean; seen?: GPUBuffer },
): Dispatch[] {
  const plan = planPrefetch(a.src.size, a.offset ?? 0, a.bytes);
  if (!plan) return [];
  const check = a.seen !== undefined;
  return [gpu.dispatch(
    prefetchKernelFor(check),
    { FIRST: plan.first, COUNT: plan.count, GATED: a.gated ?? false },
    check ? [a.ctl, a.src, a.seen!] : [a.ctl, a.src],
    plan.workgroups,
  )];
}

/** CPU reference of the check variant: each of `threads` invocations' xor of the words it loads from `words`. */
export function prefetchReference(words: Uint32Array, plan: PrefetchPlan, threads: number): Uint32Array {
  const seen = new Uint32Array(threads);
  for (let i = 0; i < plan.count; i++) seen[i % threads] ^= words[plan.first + i * (PREFETCH_SECTOR_BYTES / 4)];
  return seen;
}
