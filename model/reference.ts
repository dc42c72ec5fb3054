/**
 * A plain TypeScript OLMo-2 / Hydra forward pass in f64 (llama2.c style, no GPU), the reference the GPU model is
 * tested against on tiny configs. Weights are the bf16 values as f32 arrays, in checkpoint layout ([out, in]).
 * @module
 */

import { roundBf16, unpackBf16 } from "../kernels/bf16.ts";
import type { KvDtype } from "../kernels/attention/kv_cache.ts";
import type { Gpu } from "../kernels/runtime.ts";
import { ropeTable } from "../kernels/attention/qk_norm_rope.ts";
import type { ModelConfig } from "./config.ts";
import type { BlockWeights, HydraWeights } from "./weights.ts";

/** One block's weights on the CPU. */
export interface CpuBlock {
  q: Float32Array;
  k: Float32Array;
  v: Float32Array;
  o: Float32Array;
  gate: Float32Array;
  up: Float32Array;
  down: Float32Array;
  qNorm: Float32Array;
  kNorm: Float32Array;
  attnNorm: Float32Array;
  ffNorm: Float32Array;
}

/** A single-tower model on the CPU (one Hydra head with the trunk in front of it). */
export interface CpuModel {
  config: ModelConfig;
  embed: Float32Array;
  blocks: CpuBlock[];
  norm: Float32Array;
  lmHead: Float32Array;
}

/** Copies head `h`'s full tower (trunk blocks + head blocks) of GPU weights to the CPU. */
export async function readTower(gpu: Gpu, w: HydraWeights, h: number): Promise<CpuModel> {
  const c = w.config, d = c.dModel, f = c.ffnHidden;
  const bf = async (b: GPUBuffer) => unpackBf16(new Uint32Array(await gpu.read(b)));
  const f32 = async (b: GPUBuffer) => new Float32Array(await gpu.read(b));
  const block = async (b: BlockWeights): Promise<CpuBlock> => {
    const qkv = await bf(b.qkv), gu = await bf(b.gateUp), qk = await f32(b.qkNorm);
    return {
      q: qkv.slice(0, d * d),
      k: qkv.slice(d * d, 2 * d * d),
      v: qkv.slice(2 * d * d, 3 * d * d),
      o: await bf(b.o),
      gate: gu.slice(0, f * d),
      up: gu.slice(f * d, 2 * f * d),
      down: await bf(b.down),
      qNorm: qk.slice(0, d),
      kNorm: qk.slice(d, 2 * d),
      attnNorm: await f32(b.attnNorm),
      ffNorm: await f32(b.ffNorm),
    };
  };
  const blocks = [];
  for (const b of [...w.trunk, ...w.heads[h].blocks]) blocks.push(await block(b));
  return {
    config: c,
    embed: await bf(w.embed),
    blocks,
    norm: await f32(w.heads[h].norm),
    lmHead: await bf(w.heads[h].lmHead),
  };
}

function matvec(w: Float32Array, x: Float64Array, n: number, k: number): Float64Array {
  const y = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    let s = 0;
    for (let j = 0; j < k; j++) s += w[i * k + j] * x[j];
    y[i] = s;
  }
  return y;
}

function rmsnorm(x: Float64Array, w: Float32Array, eps: number): Float64Array {
  let s = 0;
  for (const v of x) s += v * v;
  const inv = 1 / Math.sqrt(s / x.length + eps);
  return x.map((v, i) => v * inv * w[i]);
}

/**
 * Logits (f64, [ids.length, paddedVocab]) of every position of `ids` through `m`, with the K/V cache kept as the GPU
 * keeps it: `kvDtype` bf16 (the default) rounds each cached K and V element to bf16, f32 keeps it (the f64 values).
 */
export function referenceLogits(m: CpuModel, ids: readonly number[], kvDtype: KvDtype = "bf16"): Float64Array[] {
  const cached = (t: Float64Array) => kvDtype === "bf16" ? t.map(roundBf16) : t;
  const c = m.config, d = c.dModel, f = c.ffnHidden, hd = c.headDim, nh = c.nHeads, half = hd / 2;
  const rope = ropeTable(ids.length, hd, c.ropeTheta);
  const keys: Float64Array[][] = m.blocks.map(() => []), values: Float64Array[][] = m.blocks.map(() => []);
  const out: Float64Array[] = [];
  for (let p = 0; p < ids.length; p++) {
    let x = Float64Array.from(m.embed.subarray(ids[p] * d, (ids[p] + 1) * d));
    m.blocks.forEach((b, l) => {
      const q = rmsnorm(matvec(b.q, x, d, d), b.qNorm, c.rmsNormEps);
      const k = rmsnorm(matvec(b.k, x, d, d), b.kNorm, c.rmsNormEps);
      const v = matvec(b.v, x, d, d);
      for (const t of [q, k]) {
        for (let h = 0; h < nh; h++) {
          for (let i = 0; i < half; i++) {
            const cos = rope[p * hd + i], sin = rope[p * hd + half + i];
            const a = t[h * hd + i], bb = t[h * hd + half + i];
            t[h * hd + i] = a * cos - bb * sin;
            t[h * hd + half + i] = bb * cos + a * sin;
          }
        }
      }
      keys[l].push(cached(k));
      values[l].push(cached(v));
      const att = new Float64Array(d);
      for (let h = 0; h < nh; h++) {
        const scores = keys[l].map((kk) => {
          let s = 0;
          for (let i = 0; i < hd; i++) s += q[h * hd + i] * kk[h * hd + i];
          return s / Math.sqrt(hd);
        });
        const mx = Math.max(...scores);
        const e = scores.map((s) => Math.exp(s - mx));
        const z = e.reduce((a, b) => a + b, 0);
        e.forEach((w, j) => {
          for (let i = 0; i < hd; i++) att[h * hd + i] += (w / z) * values[l][j][h * hd + i];
        });
      }
      const a = rmsnorm(matvec(b.o, att, d, d), b.attnNorm, c.rmsNormEps);
      x = x.map((v, i) => v + a[i]);
      const g = matvec(b.gate, x, f, d), u = matvec(b.up, x, f, d);
      const hidden = g.map((gv, i) => (gv / (1 + Math.exp(-gv))) * u[i]);
      const o = rmsnorm(matvec(b.down, hidden, d, f), b.ffNorm, c.rmsNormEps);
      x = x.map((v, i) => v + o[i]);
    });
    out.push(matvec(m.lmHead, rmsnorm(x, m.norm, c.rmsNormEps), c.paddedVocab, d));
  }
  return out;
}

/** Index of the largest of the first `vocab` values (lowest index on ties). */
export function argmaxOf(v: ArrayLike<number>, vocab: number): number {
  let best = 0;
  for (let i = 1; i < vocab; i++) if (v[i] > v[best]) best = i;
  return best;
}

/** log_softmax over the first `vocab` values (f64). */
export function logSoftmaxOf(v: ArrayLike<number>, vocab: number): Float64Array {
  let mx = -Infinity;
  for (let i = 0; i < vocab; i++) mx = Math.max(mx, v[i]);
  let z = 0;
  for (let i = 0; i < vocab; i++) z += Math.exp(v[i] - mx);
  const lz = mx + Math.log(z);
  return Float64Array.from({ length: vocab }, (_, i) => v[i] - lz);
}
