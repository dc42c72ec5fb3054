/**
 * Finiteness check of a weight tensor on the GPU, run as each tensor is uploaded, generated or merged: counts the NaN
 * and infinite values of a bf16 (packed two per u32) or f32 tensor and records, in the tensor's slot of a flags
 * buffer, the count and the first such element:
 *   flags[2 * slot]     += number of elements e < count with exponent bits all ones (NaN, +Inf, -Inf)
 *   flags[2 * slot + 1]  = max(flags[2 * slot + 1], 0xffffffff - e) over those e   (0: none; else the first is
 *                          0xffffffff - flags[2 * slot + 1])
 * A model's checks write one slot each into one flags buffer that is read back once, after the whole load, so the
 * check adds no sync point per tensor (see model/finite_checks.ts).
 *
 * Why a bit test rather than `x != x`: WGSL has no isnan, and a compiler may fold `x != x` to false under fast-math
 * assumptions; the exponent test is exact on the stored bits, and bf16 values are tested without converting them.
 *
 * Cost: one coalesced u32 load per thread and no atomics unless a value is bad (workgroup atomics, then one global
 * atomic per workgroup), so a tensor is checked at memory bandwidth: the 22.7 GB of a 7B Hydra with 5 heads is ~6 ms
 * of an H100's 3.35 TB/s, next to seconds of reading the files. The word offset, word count and slot live in a small
 * buffer per dispatch (like the random fill's parameters), so one pipeline per element type serves every tensor.
 * @module
 */

import type { Dispatch, Gpu, Kernel } from "../runtime.ts";

/** The WGSL kernel. */
export const finiteCheckKernel: Kernel = {
  name: "finite_check",
  source: /* wgsl */ `
// One thread per u32 word of the tensor, ceil(p.words / WG) workgroups. Bindings:
//   0: the control block (gate only)
//   1: p, this check's tensor (where it starts in data, its words) and slot
//   2: data, the buffer holding the tensor: packed bf16 when BF16 (element 2w in the low half of word w), else f32
//   3: flags, per slot: the non-finite count, then 0xffffffff - the first non-finite element
struct Check {
  offset: u32, // first word of the tensor in data
  words: u32,
  slot: u32,
  unused: u32,
}
override BF16: bool = true;
override WG: u32 = 256u;
const EXP: u32 = 0x7f800000u; // an f32 (or a bf16 in the high half) is NaN or +-Inf iff these bits are all set
@group(0) @binding(0) var<storage, read> ctl: array<u32>;
@group(0) @binding(1) var<storage, read> p: Check;
@group(0) @binding(2) var<storage, read> data: array<u32>;
@group(0) @binding(3) var<storage, read_write> flags: array<atomic<u32>>;
var<workgroup> wg_count: atomic<u32>;
var<workgroup> wg_first: atomic<u32>; // 0xffffffff - the first non-finite element seen by the workgroup, or 0

fn non_finite(bits: u32) -> bool { return (bits & EXP) == EXP; }

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) t: u32) {
  if (gated_off()) { return; }
  let w = flat_workgroup(wid, nwg) * WG + t;
  // The counters start at zero by this kernel's own stores, not by Dawn's or wgpu's zeroing of workgroup memory (a
  // toggle may turn that off). No early return: every thread reaches the barriers below.
  if (t == 0u) {
    atomicStore(&wg_count, 0u);
    atomicStore(&wg_first, 0u);
  }
  workgroupBarrier();
  if (w < p.words) {
    let x = data[p.offset + w];
    var n = 0u;
    var first = 0xffffffffu;
    if (BF16) {
      if (non_finite(x << 16u)) { n += 1u; first = 2u * w; }
      if (non_finite(x & 0xffff0000u)) { n += 1u; first = min(first, 2u * w + 1u); }
    } else if (non_finite(x)) {
      n = 1u;
      first = w;
    }
    if (n > 0u) {
      atomicAdd(&wg_count, n);
      atomicMax(&wg_first, 0xffffffffu - first);
    }
  }
  workgroupBarrier();
  if (t == 0u) {
    let n = atomicLoad(&wg_count);
    if (n > 0u) {
      atomicAdd(&flags[2u * p.slot], n);
      atomicMax(&flags[2u * p.slot + 1u], atomicLoad(&wg_first));
    }
  }
}
`,
};

/** Words of a flags slot: the non-finite count and the encoded first element. */
export const FINITE_SLOT_WORDS = 2;

/** Arguments of one finiteness check. */
export interface FiniteCheckArgs {
  ctl: GPUBuffer;
  /** The buffer holding the tensor (bound whole: tensors inside fused buffers need not be 256-byte aligned). */
  data: GPUBuffer;
  /** Byte offset of the tensor in `data` (a multiple of 4). */
  byteOffset?: number;
  /** Bytes of the tensor (a multiple of 4; default: the rest of the buffer). */
  bytes?: number;
  /** bf16 packed two per u32, or f32. */
  bf16: boolean;
  /** u32 flags buffer of FINITE_SLOT_WORDS words per slot (zeroed before the first check). */
  flags: GPUBuffer;
  slot: number;
  workgroupSize?: number;
}

/** Records one finiteness check (load time). Throws on arguments the kernel cannot honour. */
export function finiteCheck(gpu: Gpu, a: FiniteCheckArgs, kernel: Kernel = finiteCheckKernel): Dispatch {
  const offset = a.byteOffset ?? 0, bytes = a.bytes ?? a.data.size - offset;
  if (offset % 4 !== 0 || bytes % 4 !== 0 || bytes < 4 || offset + bytes > a.data.size) {
    throw new Error(
      `finiteCheck: bytes ${offset}..${offset + bytes} are not whole words of a ${a.data.size}-byte buffer`,
    );
  }
  if (!(Number.isInteger(a.slot) && a.slot >= 0 && (a.slot + 1) * FINITE_SLOT_WORDS * 4 <= a.flags.size)) {
    throw new Error(`finiteCheck: slot ${a.slot} is outside the ${a.flags.size}-byte flags buffer`);
  }
  const words = bytes / 4, wg = a.workgroupSize ?? 256;
  const params = gpu.upload("finite check params", new Uint32Array([offset / 4, words, a.slot, 0]));
  return gpu.dispatch(kernel, { BF16: a.bf16, WG: wg }, [a.ctl, params, a.data, a.flags], Math.ceil(words / wg));
}

/** What a check found: the number of NaN / infinite elements and the index of the first (null when none). */
export interface FiniteCheckResult {
  count: number;
  first: number | null;
}

/** Decodes slot `slot` of a flags buffer read back as u32. */
export function finiteCheckSlot(flags: Uint32Array, slot: number): FiniteCheckResult {
  const count = flags[FINITE_SLOT_WORDS * slot], enc = flags[FINITE_SLOT_WORDS * slot + 1];
  return { count, first: count === 0 ? null : 0xffffffff - enc };
}

/** CPU reference: the count and first index of NaN / infinite elements of `words` (packed bf16 or f32 bits). */
export function finiteCheckReference(words: Uint32Array, bf16: boolean): FiniteCheckResult {
  const bad = (bits: number) => ((bits >>> 0) & 0x7f800000) === 0x7f800000;
  let count = 0, first: number | null = null;
  for (let w = 0; w < words.length; w++) {
    const halves = bf16 ? [words[w] << 16, words[w] & 0xffff0000] : [words[w]];
    halves.forEach((bits, h) => {
      if (!bad(bits)) return;
      count++;
      first ??= bf16 ? 2 * w + h : w;
    });
  }
  return { count, first };
}
