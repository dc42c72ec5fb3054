/**
 * Tests of the QK-norm + RoPE + cache-store kernel (`qk_norm_rope.ts`) and its RoPE table against the references:
 * q_out and both caches, untouched sentinel rows, rows past the cache, and mutants.
 * @module
 */

import { assertEquals, assertThrows } from "@std/assert";
import {
  qkNormReference,
  qkNormRope,
  qkNormRopeKernelFor,
  qkNormRopeReference,
  ropeReference,
  ropeTable,
} from "./qk_norm_rope.ts";
import type { Gpu, Kernel } from "../runtime.ts";
import type { KvDtype } from "./kv_cache.ts";
import { packBf16, roundBf16Array, unpackBf16 } from "../bf16.ts";
import { subgroupWidth } from "../reduce.ts";
import { splitKReduce } from "../matmul/split_k_reduce.ts";
import { assertCaught, assertClose, ctlBuffer, gpuTest, mutate, poisoned, Rng } from "../testing/harness.ts";

// Inputs are N(0, 2^2) (|x| <= ~10), norm weights N(1, 0.5^2). The kernel works in f32 against an f64 reference on the
// same f32 inputs and table: RoPE alone differs by ~1 ulp of its products (<= 1e-6 absolute); with QK-norm the f32
// sum of squares over D <= 384 and inverseSqrt (2 ulp) add a few ulp of relative error, <= ~4e-6 absolute on values
// of magnitude 10 (lavapipe measures <= 1e-6). atol 1e-5 + rtol 1e-5 leaves a margin; the bugs below move outputs
// by O(1).
const TOL = { atol: 1e-5, rtol: 1e-5 };
const THETA = 500000;

interface Case {
  heads: number;
  headDim: number;
  rows: number;
  pos: number;
  maxPos: number;
  applyNorm: boolean;
  kernel?: Kernel;
  workgroupSize?: number;
  kvDtype?: KvDtype;
  /** ctl[POS] is pos + posBack; the kernel, recorded with that posBack, must still write rows pos .. */
  posBack?: number;
  /** Also write each row's largest |v| as f32 bits (`vmax`), rows past the cache and past M untouched. */
  vmax?: boolean;
  /** The reduction path (default: subgroups where the device has them). */
  subgroups?: boolean;
  /** Values put into v (row, column within v) before the run: an infinity or a NaN among finite values. */
  vValues?: [number, number, number][];
}

/** The f32 bits of |x| (row_scale.ts's order: NaN and infinity above every finite value). */
function magnitudeBits(x: number): number {
  return new Uint32Array(new Float32Array([x]).buffer)[0] & 0x7fffffff;
}

/**
 * Runs one dispatch and compares q_out and both caches with the reference. The caches hold random sentinel rows
 * (which must stay untouched) except rows POS .. POS + M - 1, which are NaN until written; both buffers have two
 * sentinel rows past maxPos, so a write beyond the cache is caught instead of dropped by robust buffer access.
 */
async function checkQkNormRope(gpu: Gpu, c: Case): Promise<void> {
  const dim = c.heads * c.headDim;
  const rng = new Rng(c.rows * 104729 + dim * 31 + c.pos + (c.applyNorm ? 1 : 0));
  const qkv = rng.normals(c.rows * 3 * dim, 2);
  for (const [row, col, value] of c.vValues ?? []) qkv[row * 3 * dim + 2 * dim + col] = value;
  const normWeights = rng.normals(2 * dim, 0.5, 1);
  const table = ropeTable(c.maxPos, c.headDim, THETA);
  const stored = c.maxPos + 2;
  const bf16 = c.kvDtype === "bf16";
  const caches = [0, 1].map(() => {
    const cache = rng.normals(stored * dim, 1, 5);
    cache.fill(NaN, c.pos * dim, Math.min(c.pos + c.rows, c.maxPos) * dim);
    return bf16 ? roundBf16Array(cache) : cache;
  });
  const ctl = ctlBuffer(gpu, { POS: c.pos + (c.posBack ?? 0) });
  const bufs = {
    qkv: gpu.upload("qkv", qkv),
    normWeights: gpu.upload("norm_w", normWeights),
    ropeTable: gpu.upload("rope", table),
    qOut: poisoned(gpu, c.rows * dim, "q_out"),
    kCache: gpu.upload("k_cache", bf16 ? packBf16(caches[0]) : caches[0]),
    vCache: gpu.upload("v_cache", bf16 ? packBf16(caches[1]) : caches[1]),
  };
  const vmax = c.vmax ? gpu.upload("vmax", new Uint32Array(c.rows + 2).fill(0xdeadbeef)) : undefined;
  gpu.run([qkNormRope(gpu, { ctl, ...bufs, ...c, dim, vmax }, c.kernel)]);
  if (vmax) {
    const got = await gpu.readU32(vmax, c.rows + 2);
    vmax.destroy();
    const valid = Math.max(0, Math.min(c.rows, c.maxPos - c.pos));
    const want = Array.from({ length: c.rows + 2 }, (_, m) => {
      if (m >= valid) return 0xdeadbeef;
      let top = 0;
      for (let i = 0; i < dim; i++) top = Math.max(top, magnitudeBits(qkv[m * 3 * dim + 2 * dim + i]));
      return top;
    });
    const bad = got.findIndex((v, m) => v !== want[m]);
    if (bad >= 0) throw new Error(`qk_norm_rope vmax[${bad}] = ${got[bad]}, want ${want[bad]}`);
  }
  const q = await gpu.readF32(bufs.qOut, c.rows * dim);
  const readCache = async (b: GPUBuffer) =>
    bf16 ? unpackBf16(await gpu.readU32(b, (stored * dim) / 2)) : await gpu.readF32(b, stored * dim);
  const k = await readCache(bufs.kCache);
  const v = await readCache(bufs.vCache);
  for (const b of [ctl, ...Object.values(bufs)]) b.destroy();
  const want = qkNormRopeReference(qkv, normWeights, table, { ...c, dim, eps: 1e-6 }, caches[0], caches[1]);
  const what = `qk_norm_rope ${JSON.stringify({ ...c, kernel: c.kernel?.name })}`;
  const valid = Math.max(0, Math.min(c.rows, c.maxPos - c.pos)) * dim; // rows past the cache leave q_out unwritten
  assertClose(q.subarray(0, valid), want.q.subarray(0, valid), TOL, `${what} q_out`);
  // bf16: the kernel rounds its f32 result, the reference its f64 one, so the two may land one bf16 ulp apart (2^-7
  // relative at most); a copy (v) rounds the same f32 value on both sides: exact.
  const round = (a: Float32Array) => bf16 ? roundBf16Array(a) : a;
  assertClose(k, round(want.kCache), bf16 ? { atol: 1e-5, rtol: 2 ** -7 } : TOL, `${what} k_cache`);
  // a copy: exact, infinities and NaN included
  const wantV = round(want.vCache), badV = v.findIndex((x, i) => !(x === wantV[i] || (isNaN(x) && isNaN(wantV[i]))));
  if (badV >= 0) throw new Error(`${what} v_cache[${badV}] = ${v[badV]}, want ${wantV[badV]}`);
}

const SHAPES = [[2, 64], [3, 128], [1, 8]];

gpuTest("RoPE alone (no QK-norm) matches the reference at POS > 0", async (gpu) => {
  for (const [heads, headDim] of SHAPES) {
    for (const rows of [1, 3, 16]) {
      await checkQkNormRope(gpu, { heads, headDim, rows, pos: 11 + rows, maxPos: 40, applyNorm: false });
    }
  }
});

gpuTest("QK-norm + RoPE + cache stores match the composed reference", async (gpu) => {
  for (const [heads, headDim] of SHAPES) {
    for (const rows of [1, 3, 16]) {
      await checkQkNormRope(gpu, { heads, headDim, rows, pos: 7 + 2 * rows, maxPos: 33, applyNorm: true });
    }
  }
});

gpuTest("QK-norm + RoPE at the end of a 4096-position cache (large angles)", async (gpu) => {
  await checkQkNormRope(gpu, { heads: 2, headDim: 128, rows: 3, pos: 4093, maxPos: 4096, applyNorm: true });
});

gpuTest("QK-norm + RoPE with a workgroup smaller than the row", async (gpu) => {
  await checkQkNormRope(gpu, {
    heads: 3,
    headDim: 128,
    rows: 3,
    pos: 5,
    maxPos: 9,
    applyNorm: true,
    workgroupSize: 32,
  });
});

gpuTest("QK-norm + RoPE appends to bf16 caches (rounded to nearest even)", async (gpu) => {
  for (const [heads, headDim] of SHAPES) {
    for (const rows of [1, 3]) {
      await checkQkNormRope(gpu, { heads, headDim, rows, pos: 5, maxPos: 20, applyNorm: true, kvDtype: "bf16" });
    }
  }
});

gpuTest("QK-norm + RoPE with posBack writes the rows posBack before ctl[POS]", async (gpu) => {
  await checkQkNormRope(gpu, { heads: 2, headDim: 64, rows: 3, pos: 9, maxPos: 32, applyNorm: true, posBack: 2 });
  await checkQkNormRope(gpu, { heads: 1, headDim: 8, rows: 4, pos: 20, maxPos: 24, applyNorm: false, posBack: 3 });
  const kernel = mutate(
    qkNormRopeKernelFor(subgroupWidth(gpu) > 0),
    "let p = ctl[CTL_POS] - POS_BACK + m;",
    "let p = ctl[CTL_POS] + m;",
  );
  await assertCaught(
    () =>
      checkQkNormRope(gpu, { heads: 2, headDim: 64, rows: 3, pos: 9, maxPos: 32, applyNorm: true, posBack: 2, kernel }),
    "posBack ignored",
  );
});

gpuTest(
  "QK-norm + RoPE writes each row's largest |v| (vmax), infinities and NaN above every finite value",
  async (gpu) => {
    const paths = subgroupWidth(gpu) > 0 ? [true, false] : [false];
    for (const subgroups of paths) {
      for (const [heads, headDim] of SHAPES) {
        for (const rows of [1, 3, 16]) {
          await checkQkNormRope(gpu, {
            heads,
            headDim,
            rows,
            pos: 2,
            maxPos: 40,
            applyNorm: true,
            vmax: true,
            subgroups,
          });
        }
      }
      // a workgroup smaller than the row, a bf16 cache, rows past the cache (vmax unwritten there)
      const base = { heads: 3, headDim: 128, rows: 3, pos: 5, applyNorm: true, vmax: true, subgroups };
      await checkQkNormRope(gpu, { ...base, maxPos: 9, workgroupSize: 32 });
      await checkQkNormRope(gpu, { ...base, maxPos: 9, kvDtype: "bf16" });
      await checkQkNormRope(gpu, { ...base, maxPos: 6 });
      // the largest magnitude negative; an infinity; a NaN
      const vValues: [number, number, number][] = [[0, 5, -1e4], [1, 300, Infinity], [2, 17, NaN], [2, 18, -Infinity]];
      await checkQkNormRope(gpu, { ...base, maxPos: 9, vValues });
    }
    const cases: [string, string][] = [
      ["bitcast<u32>(v0) & 0x7fffffffu", "bitcast<u32>(v0)"], // a negative value's sign bit counted
      ["if (t == 0u) { vmax[m] = atomicLoad(&v_top); }", "if (t == 0u) { vmax[m] = bitcast<u32>(1.0); }"],
      ["i < D / 2u; i += WG) {\n      let v0", "i < D / 4u; i += WG) {\n      let v0"], // half of v seen (and stored)
    ];
    for (const [from, to] of cases) {
      const kernel = mutate(qkNormRopeKernelFor(subgroupWidth(gpu) > 0, "f32", { vmax: true }), from, to);
      const vValues: [number, number, number][] = [[1, 100, -50]];
      await assertCaught(
        () =>
          checkQkNormRope(gpu, {
            heads: 2,
            headDim: 64,
            rows: 3,
            pos: 1,
            maxPos: 8,
            applyNorm: true,
            vmax: true,
            vValues,
            kernel,
          }),
        `vmax: ${from} -> ${to}`,
      );
    }
  },
);

gpuTest("rows at positions >= MAX_POS write nothing", async (gpu) => {
  await checkQkNormRope(gpu, { heads: 2, headDim: 64, rows: 3, pos: 18, maxPos: 20, applyNorm: true });
  await checkQkNormRope(gpu, { heads: 1, headDim: 8, rows: 3, pos: 21, maxPos: 20, applyNorm: true });
});

gpuTest("the composed reference is QK-norm followed by RoPE", () => {
  // Guards the reference itself: composing the two public references by hand must give the same q.
  const rng = new Rng(3);
  const [rows, dim, headDim, pos] = [2, 16, 8, 5];
  const qkv = rng.normals(rows * 3 * dim), w = rng.normals(2 * dim, 0.5, 1), table = ropeTable(8, headDim, THETA);
  const { q } = qkNormReference(qkv, w, rows, dim, 1e-6);
  const byHand = ropeReference(q, [pos, pos + 1], headDim, table);
  const shape = { rows, dim, headDim, maxPos: 8, pos, eps: 1e-6, applyNorm: true };
  const zeros = new Float32Array(8 * dim);
  assertEquals(qkNormRopeReference(qkv, w, table, shape, zeros, zeros).q, byHand);
  return Promise.resolve();
});

gpuTest("ropeTable holds f32 cos/sin of f32 angles, as PyTorch computes them", () => {
  const hd = 128;
  const t = ropeTable(4096, hd, THETA);
  // Position 0: angle 0 for every frequency.
  for (let i = 0; i < hd / 2; i++) {
    assertEquals([t[i], t[hd / 2 + i]], [1, 0]);
  }
  // inv_freq[0] = 1, so entry (p, 0) is cos(p) / sin(p) rounded to f32.
  for (const p of [1, 7, 1000, 4095]) {
    assertEquals([t[p * hd], t[p * hd + hd / 2]], [Math.fround(Math.cos(p)), Math.fround(Math.sin(p))]);
  }
  // Values computed independently with numpy float32 arithmetic (inv_freq = 1 / theta ** (arange(0, 128, 2) / 128),
  // angle = p * inv_freq, all f32), then cos/sin of the f32 angle. At (1000, 1) the f32 angle 814.6171875 differs from
  // the exact one by 4e-5 rad: the f64 cos would be -0.58595636, so this also pins down the f32 angle rounding.
  const known: [number, number, number, number][] = [
    [1000, 1, -0.5859939455986023, -0.8103154301643372],
    [4095, 1, 0.8707965016365051, -0.49164360761642456],
    [4095, 17, 0.9769033789634705, -0.2136814296245575],
    [7, 17, 0.977095365524292, 0.21280188858509064],
    [1, 63, 1, 0.0000024551407022954663],
  ];
  for (const [p, i, cos, sin] of known) assertEquals([t[p * hd + i], t[p * hd + hd / 2 + i]], [cos, sin]);
  // Every entry is within f32 angle rounding of the exact f64 value: |error| <= |angle| * 2^-22 + 2^-24.
  for (let p = 0; p < 4096; p += 97) {
    for (let i = 0; i < hd / 2; i++) {
      const angle = p * THETA ** (-2 * i / hd);
      const bound = angle * 2 ** -22 + 2 ** -24;
      if (
        Math.abs(t[p * hd + i] - Math.cos(angle)) > bound || Math.abs(t[p * hd + hd / 2 + i] - Math.sin(angle)) > bound
      ) {
        throw new Error(`ropeTable(${p}, ${i}) is further than ${bound} from the exact cos/sin of ${angle}`);
      }
    }
  }
  return Promise.resolve();
});

gpuTest("qkNormRope rejects a width that is not whole heads and an odd head_dim", (gpu) => {
  const ctl = ctlBuffer(gpu);
  const b = {
    ctl,
    qkv: ctl,
    normWeights: ctl,
    ropeTable: ctl,
    qOut: ctl,
    kCache: ctl,
    vCache: ctl,
    rows: 1,
    maxPos: 4,
  };
  assertThrows(() => qkNormRope(gpu, { ...b, dim: 100, headDim: 64 }), Error, "multiple of head_dim");
  assertThrows(() => qkNormRope(gpu, { ...b, dim: 14, headDim: 7 }), Error, "odd");
  ctl.destroy();
  return Promise.resolve();
});

gpuTest("qk_norm_rope checks catch broken kernels", async (gpu) => {
  const cases: [string, string][] = [
    ["let lo0 = a0 * c0 - b0 * s0;", "let lo0 = a0 * c0 + b0 * s0;"], // rotate_half without the minus
    ["total / f32(D)", "total / f32(HEAD_DIM)"], // norm statistics per head instead of the whole width
    ["let rrow = p * HEAD_DIM;", "let rrow = m * HEAD_DIM;"], // angle of the row index, not the position
    ["if (p >= MAX_POS) { return; }", ""], // no guard: writes past the cache
  ];
  for (const [from, to] of cases) {
    const kernel = mutate(qkNormRopeKernelFor(subgroupWidth(gpu) > 0), from, to);
    await assertCaught(async () => {
      await checkQkNormRope(gpu, { heads: 2, headDim: 64, rows: 3, pos: 9, maxPos: 16, applyNorm: true, kernel });
      await checkQkNormRope(gpu, { heads: 1, headDim: 8, rows: 3, pos: 15, maxPos: 16, applyNorm: true, kernel });
    }, `${from} -> ${to}`);
  }
});

/** A split-K case: `splitK` partial sums of `rows` QKV rows of `heads` x `headDim`, at position `pos`. */
interface SplitCase {
  heads: number;
  headDim: number;
  rows: number;
  splitK: number;
  pos: number;
  kvDtype?: KvDtype;
}

/**
 * Fails unless qk_norm_rope summing the split-K partials itself stores, bit for bit, what split_k_reduce followed by
 * qk_norm_rope stores (q_out and both caches), and q_out is the reference's on the partials' f32 sum.
 */
async function checkSplit(gpu: Gpu, c: SplitCase, kernel?: Kernel): Promise<void> {
  const dim = c.heads * c.headDim, maxPos = c.pos + c.rows + 3;
  const rng = new Rng(c.rows * 7919 + dim * 13 + c.splitK);
  const partials = rng.normals(c.splitK * c.rows * 3 * dim, 2);
  const normWeights = rng.normals(2 * dim, 0.5, 1);
  const table = ropeTable(maxPos, c.headDim, THETA);
  const ctl = ctlBuffer(gpu, { POS: c.pos });
  const pb = gpu.upload("partials", partials), wb = gpu.upload("norm_w", normWeights), tb = gpu.upload("rope", table);
  const cacheWords = (maxPos * dim) / (c.kvDtype === "bf16" ? 2 : 1);
  const run = async (fused: boolean) => {
    const qOut = poisoned(gpu, c.rows * dim, "q_out");
    const [kCache, vCache] = [0, 1].map(() => gpu.upload("cache", new Uint32Array(cacheWords).fill(0x7fc00000)));
    const sum = fused ? undefined : poisoned(gpu, c.rows * 3 * dim, "qkv");
    const args = {
      ctl,
      normWeights: wb,
      ropeTable: tb,
      qOut,
      kCache,
      vCache,
      kvDtype: c.kvDtype,
      rows: c.rows,
      dim,
      headDim: c.headDim,
      maxPos,
    };
    gpu.run(
      fused ? [qkNormRope(gpu, { ...args, qkv: pb, splitK: c.splitK }, kernel)] : [
        splitKReduce(gpu, { ctl, partials: pb, y: sum!, rows: c.rows, n: 3 * dim, splitK: c.splitK }),
        qkNormRope(gpu, { ...args, qkv: sum! }),
      ],
    );
    const got = {
      q: await gpu.readU32(qOut, c.rows * dim),
      k: await gpu.readU32(kCache, cacheWords),
      v: await gpu.readU32(vCache, cacheWords),
    };
    for (const b of [qOut, kCache, vCache, ...(sum ? [sum] : [])]) b.destroy();
    return got;
  };
  const fused = await run(true), apart = await run(false);
  for (const b of [ctl, pb, wb, tb]) b.destroy();
  const what = `qk_norm_rope split ${JSON.stringify(c)}`;
  for (const key of ["q", "k", "v"] as const) {
    const i = fused[key].findIndex((w, j) => w !== apart[key][j]);
    if (i >= 0) throw new Error(`${what}: ${key}[${i}] bits ${fused[key][i]}, apart ${apart[key][i]}`);
  }
  // the partials summed in f32 in split order, as both sides sum them, then the composed reference
  const qkv = new Float32Array(c.rows * 3 * dim);
  for (let s = 0; s < c.splitK; s++) {
    for (let i = 0; i < qkv.length; i++) qkv[i] = Math.fround(qkv[i] + partials[s * qkv.length + i]);
  }
  const shape = { ...c, dim, maxPos, eps: 1e-6, applyNorm: true };
  const zeros = new Float32Array(maxPos * dim);
  const want = qkNormRopeReference(qkv, normWeights, table, shape, zeros, zeros).q;
  assertClose(new Float32Array(fused.q.buffer), want, TOL, `${what} q_out`);
}

gpuTest(
  "qk_norm_rope summing split-K partials stores what split_k_reduce and qk_norm_rope store, bit for bit",
  async (gpu) => {
    for (const [heads, headDim] of SHAPES) {
      for (const [rows, splitK] of [[1, 2], [3, 4], [17, 3]]) {
        await checkSplit(gpu, {
          heads,
          headDim,
          rows,
          splitK,
          pos: 5,
        });
      }
    }
    await checkSplit(gpu, { heads: 2, headDim: 64, rows: 5, splitK: 2, pos: 9, kvDtype: "bf16" });
  },
);

gpuTest("qk_norm_rope's split-K sum: checks catch broken kernels", async (gpu) => {
  const cases: [string, string][] = [
    ["v += qkv[s * stride + i]", "v += qkv[i]"], // every partial read from the first
    ["let slice = M * 3u * D;", "let slice = M * D;"], // partial stride in rows of D, not 3 D
    ["s < SPLIT_K; s++", "s + 1u < SPLIT_K; s++"], // the last partial left out
  ];
  for (const [from, to] of cases) {
    const kernel = mutate(qkNormRopeKernelFor(subgroupWidth(gpu) > 0, "f32", { splitK: true }), from, to);
    await assertCaught(() => checkSplit(gpu, { heads: 2, headDim: 64, rows: 3, splitK: 3, pos: 4 }, kernel), from);
  }
});
