/**
 * Random weights generated on the GPU, so that a 7B model's synthetic weights take seconds, not minutes of CPU time
 * and PCIe traffic. Element i of a tensor is a pure function of (seed, i), so the fill is reproducible, independent of
 * the grid, and splittable into several dispatches (`randomFillChunked`) with the same result.
 *
 * The distribution is Irwin-Hall(4), "normal-ish": the sum of four uniforms, centred and scaled to the requested std.
 * It has the normal's mean and variance, excess kurtosis -0.3, and is bounded at +-2*sqrt(3) = +-3.46 std (much like
 * the +-3 std truncated normal OLMo-core initialises with). Every step is exact or a single correctly rounded f32
 * operation, so the CPU reference (`randomFillReference`) reproduces the GPU's bits exactly on every adapter:
 *   - two lanes of a lowbias32 integer hash of i, keyed by four keys derived from the seed, give 48 random bits;
 *   - four 12-bit integers b_j from them; C = b_0 + b_1 + b_2 + b_3 - 8190 is an integer in [-8190, 8190], i.e. the
 *     centred sum of the uniforms (b_j + 1/2) / 4096, times 4096 (13 bits, exact in f32);
 *   - value = C * SCALE + MEAN, where SCALE = std * sqrt(3) / 4096 rounded on the CPU to 11 significant bits: the
 *     product of a 13-bit integer and an 11-bit scale fits f32's 24 bits, so it is exact and the value is one rounding
 *     of C * SCALE + MEAN whether or not the GPU compiler fuses the multiply-add. The std is therefore within 2^-11
 *     (0.05%) of the one requested;
 *   - bf16 output: rounded to nearest even (`bf16_bits`), as `f32ToBf16Bits` does.
 *
 * Tensors larger than one storage binding: the kernel writes `count` elements starting at element `start` of the
 * tensor into the bound region; `randomFillChunked` splits a tensor into regions of at most maxStorageBufferBindingSize
 * bytes (256-byte aligned) and gives each its `start`, which yields exactly the tensor one big dispatch would.
 * Indices are u32: a tensor holds at most 2^32 elements (the 7B's largest has 411M).
 *
 * The seed, start, count and scale live in a small parameter buffer per dispatch rather than in override constants:
 * a model fills hundreds of tensors with different seeds, and override constants would compile a pipeline for each.
 * @module
 */

import { f32ToBf16Bits } from "../bf16.ts";
import type { BufferSlice, Dispatch, Gpu, Kernel } from "../runtime.ts";
import { lowbias32 } from "../prelude.ts";
import { BF16_ROUND_WGSL } from "./bf16_round.ts";

/** The WGSL kernel. */
export const randomFillKernel: Kernel = {
  name: "random_fill",
  source: /* wgsl */ `
// bindings:
//   0 ctl    [CTL_SLOTS] u32, read     control block (gate only)
//   1 params [8] u32, read             P_KEY0..P_KEY3 hash keys (from the seed), P_START index of the bound region's
//                                      first element in the tensor, P_WORDS u32 words to write, P_SCALE and P_MEAN
//                                      f32 bits (value = C * SCALE + MEAN)
//   2 out    [P_WORDS] u32, write      BF16: packed bf16 pairs (element start + 2w in the low half of word w);
//                                      otherwise f32 bits (element start + w in word w)
override BF16: bool = true;
override WG: u32 = 256u;
const P_KEY0: u32 = 0u;
const P_KEY1: u32 = 1u;
const P_KEY2: u32 = 2u;
const P_KEY3: u32 = 3u;
const P_START: u32 = 4u;
const P_WORDS: u32 = 5u;
const P_SCALE: u32 = 6u;
const P_MEAN: u32 = 7u;
@group(0) @binding(0) var<storage, read> ctl: array<u32>;
@group(0) @binding(1) var<storage, read> params: array<u32, 8>;
@group(0) @binding(2) var<storage, read_write> out: array<u32>;
${BF16_ROUND_WGSL}

// Element i of the tensor: Irwin-Hall(4) from four 12-bit uniforms (see the module comment); exact up to one rounding.
fn value(i: u32) -> f32 {
  let h1 = lowbias32(lowbias32(i ^ params[P_KEY0]) ^ params[P_KEY1]);
  let h2 = lowbias32(lowbias32(i ^ params[P_KEY2]) ^ params[P_KEY3]);
  let b = (h1 >> 20u) + ((h1 >> 8u) & 0xfffu) + (h2 >> 20u) + ((h2 >> 8u) & 0xfffu);
  let c = f32(i32(b) - 8190);
  return c * bitcast<f32>(params[P_SCALE]) + bitcast<f32>(params[P_MEAN]);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) t: u32) {
  if (gated_off()) { return; }
  let w = flat_workgroup(wid, nwg) * WG + t;
  if (w >= params[P_WORDS]) { return; }
  if (BF16) {
    let i = params[P_START] + 2u * w;
    out[w] = pack_bf16x2(vec2<f32>(value(i), value(i + 1u)));
  } else {
    out[w] = bitcast<u32>(value(params[P_START] + w));
  }
}
`,
};

/** What to generate: the tensor's seed and distribution. */
export interface RandomSpec {
  /** u32 seed; different tensors should get different seeds. */
  seed: number;
  /** Standard deviation: 0, or in [1e-30, 1e30]. */
  std: number;
  mean?: number;
  /** bf16 packed two per u32 (weights) or f32 (norm weights). */
  bf16: boolean;
}

/** Arguments of one random fill dispatch. */
export interface RandomFillArgs extends RandomSpec {
  ctl: GPUBuffer;
  /** The region written: `count` bf16 (packed) or f32 values. */
  out: GPUBuffer | BufferSlice;
  /** Values written (even for bf16). */
  count: number;
  /** Index in the whole tensor of the region's first value (even for bf16); 0 for a tensor filled at once. */
  start?: number;
  workgroupSize?: number;
}

/** Arguments of a fill split over as many dispatches as the binding limit needs. */
export interface RandomFillChunkedArgs extends RandomSpec {
  ctl: GPUBuffer;
  /** The buffer holding the tensor. */
  buffer: GPUBuffer;
  /** Byte offset of the tensor in `buffer` (a multiple of 256). */
  byteOffset?: number;
  /** Values in the tensor (even for bf16). */
  count: number;
  /** Largest region one dispatch binds; the device's maxStorageBufferBindingSize by default. */
  maxBindingBytes?: number;
  workgroupSize?: number;
}

/** Records one random fill dispatch (load time). Throws on arguments the kernel cannot honour. */
export function randomFill(gpu: Gpu, a: RandomFillArgs, kernel: Kernel = randomFillKernel): Dispatch {
  const start = a.start ?? 0;
  const words = checkRandomArgs(a, start);
  const params = gpu.upload("random fill params", randomParams(a, start, words));
  return gpu.dispatch(
    kernel,
    { BF16: a.bf16, WG: a.workgroupSize ?? 256 },
    [a.ctl, params, a.out],
    Math.ceil(words / (a.workgroupSize ?? 256)),
  );
}

/**
 * Records the dispatches that fill a whole tensor of `count` values at `byteOffset` in `buffer`, each binding at most
 * `maxBindingBytes` (256-byte aligned), for tensors larger than one storage binding. The values are the same as those
 * of one dispatch over the whole tensor.
 */
export function randomFillChunked(gpu: Gpu, a: RandomFillChunkedArgs, kernel: Kernel = randomFillKernel): Dispatch[] {
  const bytesPer = a.bf16 ? 2 : 4;
  const offset = a.byteOffset ?? 0;
  if (offset % 256 !== 0) throw new Error(`randomFillChunked: byte offset ${offset} is not a multiple of 256`);
  const maxBytes = a.maxBindingBytes ?? gpu.device.limits.maxStorageBufferBindingSize;
  const chunk = Math.floor(maxBytes / 256) * 256 / bytesPer; // values per dispatch, a multiple of 64
  if (chunk < 1) throw new Error(`randomFillChunked: a binding of ${maxBytes} bytes cannot hold a 256-byte chunk`);
  const dispatches: Dispatch[] = [];
  for (let start = 0; start < a.count; start += chunk) {
    const count = Math.min(chunk, a.count - start);
    const out = { buffer: a.buffer, offset: offset + start * bytesPer, size: Math.ceil(count * bytesPer / 4) * 4 };
    dispatches.push(randomFill(gpu, { ...a, out, count, start }, kernel));
  }
  return dispatches;
}

/** Validates a fill and returns the number of u32 words it writes. */
function checkRandomArgs(a: RandomFillArgs, start: number): number {
  const what = `random fill (seed ${a.seed})`;
  if (!Number.isInteger(a.seed) || a.seed < 0 || a.seed > 0xffffffff) {
    throw new Error(`${what}: the seed must be an integer in [0, 2^32)`);
  }
  if (!(a.std === 0 || (a.std >= 1e-30 && a.std <= 1e30))) {
    throw new Error(`${what}: std ${a.std} is not 0 or in [1e-30, 1e30]`);
  }
  if (!Number.isFinite(a.mean ?? 0)) throw new Error(`${what}: mean ${a.mean} is not finite`);
  if (!Number.isInteger(a.count) || a.count < 1) throw new Error(`${what}: count ${a.count} is not a positive integer`);
  if (!Number.isInteger(start) || start < 0 || start + a.count > 2 ** 32) {
    throw new Error(`${what}: elements ${start}..${start + a.count} do not fit u32 indices`);
  }
  if (a.bf16 && (a.count % 2 !== 0 || start % 2 !== 0)) {
    throw new Error(`${what}: bf16 values are packed in pairs, so count ${a.count} and start ${start} must be even`);
  }
  return a.bf16 ? a.count / 2 : a.count;
}

/**
 * The scale applied to the centred integer sum C: std * sqrt(3) / 4096 rounded to 11 significant bits, so that
 * C * SCALE (C has at most 13 bits) is exact in f32.
 */
export function randomScale(std: number): number {
  const x = std * Math.sqrt(3) / 4096;
  if (x === 0) return 0;
  let e = Math.floor(Math.log2(x));
  while (2 ** e > x) e--;
  while (2 ** (e + 1) <= x) e++;
  const ulp = 2 ** (e - 10); // 11 significant bits: 2^e .. 2^(e+1) - ulp
  return Math.round(x / ulp) * ulp;
}

const f32Bits = new Float32Array(1);
const u32Bits = new Uint32Array(f32Bits.buffer);

/** The bits of `x` as f32. */
function bitsOf(x: number): number {
  f32Bits[0] = x;
  return u32Bits[0];
}

/** The four hash keys of a seed. */
function randomKeys(seed: number): number[] {
  const s = lowbias32(seed);
  return [0, 1, 2, 3].map((j) => lowbias32((s + Math.imul(j + 1, 0x9e3779b9)) >>> 0));
}

/** The kernel's parameter block. */
function randomParams(a: RandomSpec, start: number, words: number): Uint32Array {
  return new Uint32Array([...randomKeys(a.seed), start, words, bitsOf(randomScale(a.std)), bitsOf(a.mean ?? 0)]);
}

/**
 * CPU reference: the u32 words a fill of `count` values starting at tensor element `start` writes (packed bf16 pairs,
 * or f32 bits), bit for bit.
 */
export function randomFillReference(spec: RandomSpec, count: number, start = 0): Uint32Array {
  const [k0, k1, k2, k3] = randomKeys(spec.seed);
  const scale = randomScale(spec.std), mean = Math.fround(spec.mean ?? 0);
  const value = (i: number) => {
    const h1 = lowbias32(lowbias32((i ^ k0) >>> 0) ^ k1);
    const h2 = lowbias32(lowbias32((i ^ k2) >>> 0) ^ k3);
    const b = (h1 >>> 20) + ((h1 >>> 8) & 0xfff) + (h2 >>> 20) + ((h2 >>> 8) & 0xfff);
    // (b - 8190) * scale is exact; fround of an f64 sum of two f32 values is the correctly rounded f32 sum.
    return Math.fround((b - 8190) * scale + mean);
  };
  if (!spec.bf16) {
    const out = new Float32Array(count);
    for (let w = 0; w < count; w++) out[w] = value(start + w);
    return new Uint32Array(out.buffer);
  }
  const out = new Uint32Array(count / 2);
  for (let w = 0; w < out.length; w++) {
    const i = start + 2 * w;
    out[w] = (f32ToBf16Bits(value(i)) | (f32ToBf16Bits(value(i + 1)) << 16)) >>> 0;
  }
  return out;
}
