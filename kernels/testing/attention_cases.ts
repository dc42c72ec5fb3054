/**
 * Inputs and the check shared by the attention kernel tests: seeded queries and caches whose rows past the valid
 * length hold garbage (NaN or huge values, so a kernel that reads a key it must not fails), an output buffer poisoned
 * with NaN and followed by sentinel rows (which must come back untouched), and the comparison with the reference.
 * @module
 */

import { attentionReference } from "../attention/reference.ts";
import type { KvDtype } from "../attention/kv_cache.ts";
import { packBf16, roundBf16Array } from "../bf16.ts";
import type { Dispatch, Gpu } from "../runtime.ts";
import { assertClose, ctlBuffer, type ErrorReport, Rng, type Tolerance } from "./harness.ts";

// The kernels compute in f32 what the reference computes in f64. Scores are dot products of HEAD_DIM terms
// (rounding ~1e-6 absolute on scores of a few units, i.e. ~1e-6 relative on each exp); exp itself is within a few
// ulp plus 2|x| ulp for arguments down to about -30 (~4e-6 relative); the sums over up to 2048 keys of positive
// weights add ~sqrt(2048) * 6e-8 ~ 3e-6 relative. Outputs are convex combinations of V values of order 1, so the
// error is a few 1e-6: atol 2e-5 + rtol 1e-4 leaves a margin of about 5x. A causal off-by-one moves an output by
// ~p(key) * |v - out|, at least ~1 / length (5e-4 at 2048 keys), well outside it.
export const ATTENTION_TOL = { atol: 2e-5, rtol: 1e-4 };

/** Value of the output rows after the M written ones; they must come back bit for bit. */
const SENTINEL = 12345.5;
/** Extra output rows after the M rows the kernel writes. */
const EXTRA_ROWS = 2;

/** One attention problem: M rows at positions pos .. pos + rows - 1 over caches of maxPos rows. */
export interface AttentionCase {
  rows: number;
  pos: number;
  nHeads: number;
  headDim: number;
  maxPos: number;
  /** What the cache rows past pos + rows - 1 hold. */
  garbage?: "nan" | "huge";
  /** Standard deviation of the query entries; scores have about this standard deviation (keys are N(0, 1)). */
  qStd?: number;
  /** ctl[ACTIVE] (only kernels built with `gated` read it). */
  active?: number;
  /** Element type of the caches (default f32): bf16 caches hold the f32 values rounded, and the reference reads those. */
  kvDtype?: KvDtype;
  /** ctl[POS] is pos + posBack (a kernel recorded with that posBack must still attend from pos). */
  posBack?: number;
  /** V cache entries set after the random fill: [position, column, value] (a few large values among N(0, 1)). */
  vSpikes?: [number, number, number][];
}

/** The buffers a kernel under test reads and writes. */
export interface AttentionBuffers {
  ctl: GPUBuffer;
  q: GPUBuffer;
  kCache: GPUBuffer;
  vCache: GPUBuffer;
  out: GPUBuffer;
}

/**
 * Runs the dispatches `record` makes for case `c` and compares the output with the reference, or, with `untouched`,
 * asserts that the kernel wrote nothing (a gated-off kernel). `tol`: ATTENTION_TOL unless the kernel rounds to f16.
 */
export async function checkAttention(
  gpu: Gpu,
  c: AttentionCase,
  record: (b: AttentionBuffers, values: { vCache: Float32Array }) => Dispatch[],
  what: string,
  untouched = false,
  tol: Tolerance = ATTENTION_TOL,
  /** Where the dispatches write the output elsewhere than `out` (f16 rows): its rows * d values, read back. */
  readOutput?: () => Promise<Float32Array>,
): Promise<ErrorReport | undefined> {
  const d = c.nHeads * c.headDim;
  const valid = c.pos + c.rows;
  if (valid > c.maxPos) throw new Error(`test case: ${valid} keys do not fit ${c.maxPos} cache rows`);
  const rng = new Rng(((c.rows * 7919 + c.pos) * 104729 + d) * 31 + c.maxPos);
  const q = rng.normals(c.rows * d, c.qStd ?? 2);
  const kCache = new Float32Array(c.maxPos * d);
  const vCache = new Float32Array(c.maxPos * d);
  const round = (v: Float32Array) => c.kvDtype === "bf16" ? roundBf16Array(v) : v;
  kCache.set(round(rng.normals(valid * d)));
  vCache.set(round(rng.normals(valid * d)));
  for (const [p, col, value] of c.vSpikes ?? []) vCache[p * d + col] = round(new Float32Array([value]))[0];
  for (let i = valid * d; i < c.maxPos * d; i++) {
    const huge = (i % 2 === 0 ? 1 : -1) * 1e30;
    kCache[i] = c.garbage === "huge" ? huge : NaN;
    vCache[i] = c.garbage === "huge" ? huge : NaN;
  }
  const outInit = new Float32Array((c.rows + EXTRA_ROWS) * d).fill(SENTINEL).fill(NaN, 0, c.rows * d);
  const b: AttentionBuffers = {
    ctl: ctlBuffer(gpu, { POS: c.pos + (c.posBack ?? 0), ACTIVE: c.active ?? 0 }),
    q: gpu.upload("q", q),
    kCache: gpu.upload("k cache", c.kvDtype === "bf16" ? packBf16(kCache) : kCache),
    vCache: gpu.upload("v cache", c.kvDtype === "bf16" ? packBf16(vCache) : vCache),
    out: gpu.upload("out", outInit),
  };
  const label = `${what} ${JSON.stringify(c)}`;
  try {
    gpu.run(record(b, { vCache }));
    const got = await gpu.readF32(b.out, outInit.length);
    if (readOutput) got.set(await readOutput()); // out itself stays untouched (NaN rows, then sentinels)
    if (untouched) {
      const written = got.findIndex((v, i) => !Object.is(v, outInit[i]));
      if (written >= 0) throw new Error(`${label}: wrote element ${written} while gated off`);
      return undefined;
    }
    for (let i = c.rows * d; i < got.length; i++) {
      if (got[i] !== SENTINEL) throw new Error(`${label}: wrote element ${i}, past its ${c.rows} output rows`);
    }
    const want = attentionReference(q, kCache, vCache, c.rows, c.pos, c.nHeads, c.headDim);
    return assertClose(got.subarray(0, c.rows * d), want, tol, label);
  } finally {
    for (const buffer of Object.values(b)) buffer.destroy();
  }
}

/** Asserts that each call throws an error whose message contains the paired text. */
export function assertRejected(cases: [() => unknown, string][]): void {
  for (const [call, says] of cases) {
    let message = "no error";
    try {
      call();
    } catch (e) {
      message = e instanceof Error ? e.message : String(e);
    }
    if (!message.includes(says)) throw new Error(`expected an error saying "${says}", got "${message}"`);
  }
}
