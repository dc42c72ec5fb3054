/**
 * Kernel microbenchmarks for the GPU machine (llm.c dev/cuda style: each kernel validated by its test, then timed
 * here): the copy roofline, then matvec tuning variants at the OLMo-2 7B and 1B shapes, in GB/s of weight bytes; with
 * `--gemm`, only the prefill GEMMs' tile variants at the 7B shapes, in TFLOP/s: the f32 GEMM's, its f16-multiply
 * variant's (`prefill_math f16`, with the row-scale pre-pass, where the device has shader-f16), and on Dawn with
 * subgroup matrices (HYDRA_WEBGPU=dawn) the tensor-core GEMM's with its row-scale pre-pass (each variant's output is
 * also checked against an f64 reference on sampled elements, some rows holding a 1e5 element, and its max error
 * relative to sum |x w| printed, so a tile shape that breaks on this driver shows as WRONG; `--quick`: the f32 default
 * and linear's tiles for N <= 4096, four f16 variants, four tensor ones, without the plain gate_up shape: under a
 * minute on an H200). Split-K (`splitK` S = 2, 4, 8) of the default f32 tile and of linear's tensor tiles, each
 * timed with its reduction (and row-scale pre-pass): `--quick` keeps f32 S = 4 and tensor S = 2, 4; with
 * `--attention`, decode attention's split variants and (`--prefill` alone) prefill attention's tile variants at 128,
 * 512 and 2,048 tokens of 7B heads (`--quick`: 128 tokens, fewer variants; `--rows 128,2048`: those lengths; `--size
 * 1b`: the 1B's 16 heads), in us and TFLOP/s, each prefill variant checked likewise; on Dawn with subgroup matrices also
 * the tensor-core prefill attention (prefill_tensor.ts: 128, 64, 32 and 16 query rows a workgroup in one pass, 128 and
 * 64 in two).
 * `--attention-probe`: where the decode attention's time goes, at 256, 1,024 and 4,096 keys of 7B heads (bf16 cache, 3
 * caches cycled): the kernel as built, then with its K loads, its V loads or both replaced by constants (the bindings
 * kept), so what remains is the kernel's own work.
 * `--gemm-probe [--rows 2048] [--tensor-tiles JSON]` (Dawn): the same for the tensor-core GEMM at the 7B products, at
 * linear's tiles or the first of `--tensor-tiles` where it fits (`benchGemmProbe`).
 * `--mma-peak` (Dawn): the subgroup-matrix multiply-accumulate rate the device sustains, the ceiling of any GEMM written
 * with these builtins (`benchMmaPeak`).
 * `--gemm-waves [--tensor-tiles JSON]` (Dawn): how many tensor-core GEMM workgroups an SM runs at once, from the time of
 * 1 to 4 waves of tiles (`benchGemmWaves`).
 * `--occupancy`: how many workgroups of 128 to 512 invocations and 1 to 48 KB of workgroup memory an SM holds at once
 * (`benchOccupancy`).
 * `--gemm --tensor-tiles JSON`: only the tensor-core GEMM, at the listed TensorTiles (a tile sweep; `--tiles` likewise
 * for the f32 GEMM's alone); `--shapes qkv,gate_up` only those products (qkv, gate_up, down, o).
 *
 * `--overhead`: per-dispatch costs (shared and distinct outputs, gated-off and tiny dispatches), then whether independent
 * chains of dependent dispatches overlap (`benchIndependentChains`: the measurement behind heads in lock-step).
 *
 * `--chain [--rows 1,4]`: the decode matvecs as a step runs them (each waiting for the previous), plain (over tiles,
 * grid caps, tree or subgroup row sums; at each `--rows` count, default 1) and with the post-norm prologue (recomputed
 * or staged, over grid caps) for qkv and gate_up at one row.
 *
 *   deno run -A tools/bench_kernels.ts [--matvec] [--chain] [--overhead] [--attention] [--attention-probe] [--gemm-probe]
 *                                      [--mma-peak] [--gemm-waves] [--occupancy] [--sms 132]
 *                                      [--gemm [--rows 128] [--tiles JSON] [--tensor-tiles JSON] [--size 7b|1b]
 *                                             [--shapes qkv,gate_up,down,o]]
 *                                      [--matvec [--rows 1,4]]
 *                                      [--attention|--matvec [--variants JSON]] [--prefill [--rows 128,2048] [--size 1b]]
 *                                      [--quick] [--json FILE]
 *                                      [--webgpu deno|dawn]
 *
 * `--webgpu` picks the WebGPU runtime (default: `HYDRA_WEBGPU`, else deno; ARCHITECTURE.md "Two WebGPU runtimes").
 * Weight pools of >= 256 MiB per shape are cycled so no result is an L2-cache reading.
 * @module
 */

import { parseArgs } from "@std/cli/parse-args";
import { type Dispatch, Gpu, type Kernel, runtimeFromFlag } from "../kernels/runtime.ts";
import { runEntryPoint, UserError } from "../common/errors.ts";
import { Epilogue, matvec } from "../kernels/matmul/matvec.ts";
import {
  f16GemmTolerance,
  gemm,
  GEMM_DEFAULT_TILES,
  type GemmTiles,
  gemmWorkgroupBytes,
  gemmXShift,
} from "../kernels/matmul/gemm.ts";
import {
  gemmTensor,
  gemmTensorKernelFor,
  gemmTensorWorkgroupBytes,
  resolveTensorTiles,
  tensorGemmTolerance,
  tensorGemmUnsupported,
  tensorSubgroupSize,
  type TensorTiles,
  tensorTileShape,
} from "../kernels/matmul/gemm_tensor.ts";
import {
  TENSOR_TILES,
  TENSOR_TILES_192,
  TENSOR_TILES_LARGE_M,
  TENSOR_TILES_SMALL_M,
  TENSOR_TILES_SMALL_M_SWIGLU,
  TENSOR_TILES_SWIGLU_192,
  TENSOR_WAVE_SMS,
  tensorTilesFor,
} from "../kernels/matmul/linear.ts";
import { rowScale, rowScaleExponent } from "../kernels/matmul/row_scale.ts";
import { halfWeights } from "../kernels/weights/half_weights.ts";
import { packWeights } from "../kernels/weights/pack_weights.ts";
import { splitKReduce } from "../kernels/matmul/split_k_reduce.ts";
import { timeDispatches } from "../kernels/timing.ts";
import { copyVec4 } from "../kernels/memory/copy.ts";
import { rmsnorm } from "../kernels/norm/rmsnorm.ts";
import { readBarrier } from "../kernels/control/read_barrier.ts";
import { range } from "../kernels/codegen.ts";
import {
  attentionDecode,
  type AttentionDecodeArgs,
  attentionDecodeKernelFor,
  type AttentionDecodeKernelSpec,
  createAttentionDecodeScratch,
} from "../kernels/attention/decode.ts";
import { attentionPrefill, planAttentionPrefill, type PrefillTiles } from "../kernels/attention/prefill.ts";
import {
  attentionPrefillTensor,
  prefillTensorUnsupported,
  TENSOR_PREFILL_TOL,
} from "../kernels/attention/prefill_tensor.ts";
import { attentionReference } from "../kernels/attention/reference.ts";
import { ATTENTION_TOL } from "../kernels/testing/attention_cases.ts";
import type { KvDtype } from "../kernels/attention/kv_cache.ts";
import { packBf16, roundBf16Array } from "../kernels/bf16.ts";
import { measureCopyBandwidth } from "../bench/bandwidth.ts";
import { CTL_SLOTS } from "../kernels/control/ctl.ts";

const args = parseArgs(Deno.args, {
  string: ["json", "rows", "tiles", "tensor-tiles", "webgpu", "variants", "size", "rounds", "sms", "shapes"],
  boolean: [
    "quick",
    "gemm",
    "matvec",
    "overhead",
    "attention",
    "chain",
    "prefill",
    "attention-probe",
    "gemm-probe",
    "mma-peak",
    "gemm-waves",
    "occupancy",
  ],
});
/**
 * `--shapes qkv,gate_up`: the products of `all` whose names end in one of the listed products (default: all of them),
 * else a UserError naming those there are.
 */
function shapesArg<S extends { name: string }>(all: S[]): S[] {
  if (args.shapes === undefined) return all;
  const wanted: string[] = String(args.shapes).split(",").map((w: string) => w.trim());
  const products = all.map((s) => s.name.split(" ").slice(1).join(" "));
  const is = (product: string, w: string) => product === w || product.startsWith(`${w}+`); // gate_up: gate_up+silu
  const unknown = wanted.filter((w) => !products.some((p) => is(p, w)));
  if (unknown.length) {
    throw new UserError(`--shapes: no product ${unknown.join(", ")}; the products are ${products.join(", ")}.`);
  }
  return all.filter((_, i) => wanted.some((w) => is(products[i], w)));
}

/** `--size`: 7b (default) or 1b, else a UserError. */
function sizeArg(): "7b" | "1b" {
  const size = args.size ?? "7b";
  if (size !== "7b" && size !== "1b") throw new UserError(`--size is 7b or 1b, got "${size}".`);
  return size;
}

const gpu = await Promise.resolve().then(() => Gpu.create(runtimeFromFlag(args.webgpu))).catch((e) => {
  if (!(e instanceof UserError)) throw e;
  console.error(`error: ${e.message}`);
  Deno.exit(2);
});
console.log(
  `adapter: ${gpu.description.description} (${gpu.description.vendor}, WebGPU ${gpu.description.runtimeVersion}), features ${
    gpu.description.featuresGranted.join(",")
  }, ${gpu.device.limits.maxComputeWorkgroupStorageSize} bytes of workgroup memory`,
);

/** Word `i` of the pseudo-random bf16 pairs `randomWeights` fills a buffer with (seed `seed`). */
function weightWord(seed: number, i: number): number {
  const s = (seed + Math.imul(i + 1, 0x9e3779b9)) >>> 0;
  let z = Math.imul(s ^ (s >>> 16), 0x85ebca6b);
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) ^ (z >>> 16);
  return ((z & 0x807f807f) | 0x3f003f00) >>> 0;
}

/** A buffer of pseudo-random bf16 pairs in [-1, 1) (never zeros): word i is `weightWord(seed, i)`. */
function randomWeights(gpu: Gpu, label: string, words: number, seed: number): GPUBuffer {
  const buf = gpu.buffer(label, words * 4);
  const chunk = new Uint32Array(Math.min(words, 1 << 22));
  for (let off = 0; off < words; off += chunk.length) {
    const n = Math.min(chunk.length, words - off);
    for (let i = 0; i < n; i++) chunk[i] = weightWord(seed, off + i);
    gpu.device.queue.writeBuffer(buf, off * 4, chunk.buffer, 0, n * 4);
  }
  return buf;
}

/** The input rows every benchmark multiplies: x[i] = 0.5 sin(i), row-major [rows, k]. */
function inputRows(rows: number, k: number): Float32Array {
  return Float32Array.from({ length: rows * k }, (_, i) => Math.sin(i) * 0.5);
}

/**
 * The GEMM benchmark's rows: `inputRows`, and in every fourth row one element of magnitude 1e5 (past f16's 65504, as
 * OLMo-2's raw residual stream can be), so the sampled error covers the tensor-core GEMM's row scaling.
 */
function gemmInputRows(rows: number, k: number): Float32Array {
  const x = inputRows(rows, k);
  for (let m = 3; m < rows; m += 4) x[m * k + ((m * 7919) % k)] = m % 8 === 3 ? 1e5 : -1e5;
  return x;
}

interface Row {
  kernel: string;
  shape: string;
  rows: number;
  variant: string;
  us: number;
  /** matvec: weight bytes per second, and as a fraction of the copy kernel's. */
  gbps?: number;
  frac_of_copy?: number;
  /**
   * gemm: 2 * rows * NW * K flops per second; attention_prefill: 4 * HEAD_DIM flops per (row, head, visible key).
   * Both: the worst sampled error over its tolerance (> 1: wrong).
   */
  tflops?: number;
  err_over_tol?: number;
  /** gemm, gemm_tensor: the worst sampled error relative to its dot product's sum |x w|. */
  max_rel_err?: number;
  workgroups?: number;
}
const results: Row[] = [];
const ctl = gpu.buffer("ctl", CTL_SLOTS * 4);

/**
 * The GPU's multiprocessors, which WebGPU does not report: linear's wave model's count (TENSOR_WAVE_SMS, the H200's
 * 132) unless `--sms N` says otherwise. The occupancy probes (`--gemm-waves`, `--occupancy`, `--mma-peak`) dispatch
 * whole waves of them.
 */
const SMS = Number(args.sms ?? TENSOR_WAVE_SMS);
if (!(Number.isInteger(SMS) && SMS >= 1)) {
  console.error(`error: --sms is the GPU's multiprocessor count, a positive integer; got "${args.sms}".`);
  Deno.exit(2);
}

/**
 * Busy time before every measurement (`medianMs`). 300 ms was not always enough on the H200 (session V, `nvidia-smi
 * dmon` beside a Dawn sweep): samples at 100% SM activity and 345-615 MHz, the idle clock, and variants read 4-5x slow
 * in one round and not in the next; `--rounds` takes each variant's least median over interleaved rounds as well.
 */
const WARM_MS = 1000;

/**
 * Median of `reps` timed passes of `ds`, divided by `per` (dispatches of interest per pass), in ms. First keeps the GPU
 * busy with the same work for WARM_MS: the weights of the next shape are generated on the CPU for seconds, the idle
 * GPU lowers its clocks, and without this warm-up the first variants after an idle gap read up to 3x slow (seen on
 * the H100: the same GEMM ranked first in one run and last in the next).
 */
async function medianMs(ds: Dispatch[], per: number, reps = 10): Promise<number> {
  const tenMs = (await timeDispatches(gpu, ds, 10)).reduce((a, b) => a + b, 0);
  // The warm-up and the timed passes in one submission: on Dawn a wait between them can stretch to a second (a major
  // garbage collection, docs/PERF.md session W), the GPU idles and lowers its clocks, and the 10 passes after it read
  // 2-8x slow (session X's first sweep). The last `reps` of the passes are the measurement.
  const warm = Math.min(2000, Math.max(10, Math.ceil(WARM_MS / (tenMs / 10)))); // >= WARM_MS busy
  const ms = (await timeDispatches(gpu, ds, warm + reps)).slice(warm).sort((a, b) => a - b);
  return ms[Math.floor(ms.length / 2)] / per;
}

/**
 * Enough random weight matrices of shape `s` (>= 256 MiB in all, cycled) that no timing reads from the L2 cache;
 * matrix i is filled with seed 17 + i. NW = 2N for SwiGLU (gate and up rows).
 */
function weightPool(s: { name: string; n: number; k: number; epi: number }) {
  const nw = s.epi === Epilogue.SWIGLU ? 2 * s.n : s.n;
  const bytes = nw * s.k * 2;
  const pool = Math.max(1, Math.ceil((256 << 20) / bytes));
  const weights = Array.from({ length: pool }, (_, i) => randomWeights(gpu, `${s.name} ${i}`, (nw * s.k) / 2, 17 + i));
  return { nw, bytes, pool, weights };
}

function report(kernel: string, shape: string, rows: number, variant: string, ms: number, bytes: number): void {
  const gbps = bytes / ms / 1e6;
  results.push({ kernel, shape, rows, variant, us: ms * 1000, gbps, frac_of_copy: gbps / bw.kernel_copy_gbps });
  console.log(
    `${kernel} ${shape} M=${rows} ${variant}: ${(ms * 1000).toFixed(1)} us, ${gbps.toFixed(0)} GB/s (${
      (100 * gbps / bw.kernel_copy_gbps).toFixed(0)
    }% of copy)`,
  );
}

/** A block's products at decode (N outputs over K inputs; gate_up: N rows each of gate and up). */
const DECODE_SHAPES_7B = [
  { name: "7b qkv", n: 12288, k: 4096, epi: Epilogue.PLAIN },
  { name: "7b gate_up+silu", n: 11008, k: 4096, epi: Epilogue.SWIGLU },
  { name: "7b down", n: 4096, k: 11008, epi: Epilogue.PLAIN },
  { name: "7b o", n: 4096, k: 4096, epi: Epilogue.PLAIN },
];
const DECODE_SHAPES_1B = [
  { name: "1b qkv", n: 6144, k: 2048, epi: Epilogue.PLAIN },
  { name: "1b gate_up+silu", n: 8192, k: 2048, epi: Epilogue.SWIGLU },
  { name: "1b down", n: 2048, k: 8192, epi: Epilogue.PLAIN },
  { name: "1b o", n: 2048, k: 2048, epi: Epilogue.PLAIN },
];

/** The matvec variants at decode shapes (1 and 4 rows), in GB/s of weight bytes. */
async function benchMatvec(): Promise<void> {
  const shapes = [
    ...DECODE_SHAPES_7B,
    { name: "lm_head 4096", n: 100352, k: 4096, epi: Epilogue.PLAIN },
    DECODE_SHAPES_1B[3],
  ];
  // [rowsPerThread, rowsPerWorkgroup (row groups), workgroupSize(, interleave)]; --variants JSON: a list of such
  const variants: number[][] = args.variants ? JSON.parse(args.variants) : [
    [1, 2, 128],
    [1, 4, 128],
    [1, 8, 256],
    [2, 2, 128],
    [2, 4, 128],
    [2, 8, 256],
    [4, 1, 64],
    [4, 2, 128],
    [4, 4, 128],
    [4, 8, 256],
    [2, 4, 256], // the M = 1 default for o and down
  ];
  // --rows 2,4: the input rows to time (PoE's verify pass runs gamma rows); default 1 and 4
  const rowCounts = args.rows ? args.rows.split(",").map(Number) : [1, 4];
  for (const s of shapes) {
    const { nw, bytes, pool, weights } = weightPool(s);
    for (const rows of rowCounts) {
      const x = gpu.upload("x", Float32Array.from({ length: rows * s.k }, (_, i) => Math.sin(i) * 0.5));
      const ys = weights.map(() => gpu.buffer("y", rows * s.n * 4));
      for (const [rowsPerThread, rowsPerWorkgroup, workgroupSize, interleave = 1] of variants) {
        const knobs = { rowsPerThread, rowsPerWorkgroup, workgroupSize, interleave };
        const ds = weights.map((w, i) =>
          matvec(gpu, { ctl, weight: w, x, y: ys[i], rows, k: s.k, n: s.n, epilogue: s.epi, ...knobs })
        );
        report(
          "matvec",
          `${s.name} [${nw}x${s.k}]`,
          rows,
          `RT=${rowsPerThread} ROWS=${rowsPerWorkgroup} WG=${workgroupSize}${
            interleave > 1 ? ` IL=${interleave}` : ""
          }`,
          await medianMs(ds, pool),
          bytes,
        );
      }
      x.destroy();
      for (const y of ys) y.destroy();
    }
    for (const w of weights) w.destroy();
  }
}

/**
 * The matvec at the decode shapes as a decode step runs it: each dispatch waits for the previous (all write one
 * output, so WebGPU orders them), over default and grid-capped variants (maxWorkgroups: a workgroup strides over row
 * groups, reading x from L1 instead of L2 for each).
 */
async function benchMatvecChain(): Promise<void> {
  const shapes = [...DECODE_SHAPES_7B, ...DECODE_SHAPES_1B];
  const variants: Record<string, number | boolean>[] = [
    {},
    { maxWorkgroups: 264 },
    { maxWorkgroups: 528 },
    { maxWorkgroups: 1056 },
    { maxWorkgroups: 2112 },
    { rowsPerThread: 4, rowsPerWorkgroup: 2, workgroupSize: 128, maxWorkgroups: 1056 },
    { rowsPerThread: 2, rowsPerWorkgroup: 4, workgroupSize: 256 },
    { rowsPerThread: 2, rowsPerWorkgroup: 4, workgroupSize: 256, maxWorkgroups: 528 },
    { subgroups: false }, // the row sums as a tree in workgroup memory (the default before 2026-11-30 evening)
    { rowsPerThread: 4, rowsPerWorkgroup: 2, workgroupSize: 128 },
    { rowsPerThread: 2, rowsPerWorkgroup: 2, workgroupSize: 128 },
  ];
  // --rows 1,4: the input rows (PoE's verify pass runs gamma rows); default 1
  const rowCounts = args.rows ? args.rows.split(",").map(Number) : [1];
  for (const s of shapes) {
    const { nw, bytes, pool, weights } = weightPool(s);
    const x = gpu.upload("x", Float32Array.from({ length: 16 * s.k }, (_, i) => Math.sin(i) * 0.5));
    const y = gpu.buffer("y", 16 * s.n * 4);
    for (const rows of rowCounts) {
      for (const knobs of variants) {
        const ds = weights.map((w) =>
          matvec(gpu, { ctl, weight: w, x, y, rows, k: s.k, n: s.n, epilogue: s.epi, ...knobs })
        );
        const label = JSON.stringify(knobs);
        report("matvec chained", `${s.name} [${nw}x${s.k}]`, rows, label, await medianMs(ds, pool), bytes);
      }
    }
    // The consumers of a post-norm (qkv after the previous block's down, gate_up after o): the fused prologue
    // (model/hydra.ts FuseOptions.postNorm) recomputed or staged, over grid caps, against the plain product above
    // (which the unfused block pays on top of an RMSNorm dispatch, ~6.8 us on the H200).
    if (s.name.endsWith("qkv") || s.name.endsWith("gate_up+silu")) {
      const proj = gpu.upload("proj", Float32Array.from({ length: s.k }, (_, i) => Math.cos(i) * 2));
      const normW = gpu.upload("norm w", Float32Array.from({ length: s.k }, (_, i) => 1 + 0.1 * Math.sin(i)));
      const out = gpu.buffer("x out", s.k * 4);
      const postNorm = { proj, weight: normW, out, eps: 1e-6 };
      for (const staged of [false, true]) {
        for (const maxWorkgroups of [132, 264, 528, 1056, 2112, Infinity]) {
          const knobs = {
            postNorm: staged ? "staged" : "recompute",
            maxWorkgroups: maxWorkgroups === Infinity ? "none" : maxWorkgroups,
          };
          let ds: Dispatch[];
          try {
            ds = weights.map((w) =>
              matvec(gpu, {
                ctl,
                weight: w,
                x,
                y,
                rows: 1,
                k: s.k,
                n: s.n,
                epilogue: s.epi,
                postNorm,
                staged,
                maxWorkgroups,
              })
            );
          } catch (e) {
            console.log(`matvec chained ${s.name} ${JSON.stringify(knobs)}: skipped (${(e as Error).message})`);
            continue;
          }
          report(
            "matvec chained",
            `${s.name} [${nw}x${s.k}]`,
            1,
            JSON.stringify(knobs),
            await medianMs(ds, pool),
            bytes,
          );
        }
      }
      for (const b of [proj, normW, out]) b.destroy();
    }
    x.destroy();
    y.destroy();
    for (const w of weights) w.destroy();
  }
}

/** Per-dispatch costs: shared vs distinct outputs, one dispatch per pass, gated-off and tiny dispatches. */
async function benchOverhead(): Promise<void> {
  // The 7B o projection (33.5 MB, small enough that per-dispatch costs show): 8 weights per pass with one shared
  // output (each dispatch waits for the previous: write-after-write), 8 distinct outputs, and one dispatch per pass.
  const n = 4096, k = 4096, bytes = n * k * 2;
  const weights = Array.from({ length: 8 }, (_, i) => randomWeights(gpu, `o ${i}`, (n * k) / 2, 99 + i));
  const x = gpu.upload("x", Float32Array.from({ length: k }, (_, i) => Math.cos(i)));
  const ys = weights.map(() => gpu.buffer("y", n * 4));
  const mv = (w: GPUBuffer, y: GPUBuffer) => matvec(gpu, { ctl, weight: w, x, y, rows: 1, k, n });
  report("overhead", "o shared y", 1, "8 per pass", await medianMs(weights.map((w) => mv(w, ys[0])), 8), bytes);
  report("overhead", "o distinct y", 1, "8 per pass", await medianMs(weights.map((w, i) => mv(w, ys[i])), 8), bytes);
  report("overhead", "o", 1, "1 per pass", await medianMs([mv(weights[3], ys[0])], 1, 40), bytes);
  // Cost of a dispatch that does nothing: a gated copy of 4096 vec4 with ACTIVE = 0, 1000 per pass.
  const off = gpu.buffer("ctl off", CTL_SLOTS * 4);
  const src = gpu.buffer("src", 65536), dst = gpu.buffer("dst", 65536);
  const gatedOff = copyVec4(gpu, { ctl: off, src, dst, vec4Count: 4096, gated: true });
  const tiny = copyVec4(gpu, { ctl, src, dst, vec4Count: 4096 });
  report("overhead", "gated-off dispatch", 1, "1000 per pass", await medianMs(Array(1000).fill(gatedOff), 1000), 1);
  report("overhead", "64 KiB copy dispatch", 1, "1000 per pass", await medianMs(Array(1000).fill(tiny), 1000), 131072);
  for (const w of weights) w.destroy();
  await benchIndependentChains();
}

/**
 * Whether independent chains of dependent dispatches overlap (the heads of a Hydra after the trunk are such chains):
 * CHAINS chains of DEPTH dispatches, each reading its chain's previous output, every output its own buffer, recorded
 * chain after chain, op by op across the chains, and op by op with one read-barrier dispatch after each op that binds
 * the op's outputs read-only (`readBarrier`, kernels/control/read_barrier.ts), so that the runtime can move them all to
 * the read state in one barrier (also with a barrier of no workgroups, and with two buffers a chain, each written three
 * times a pass). Two ops: the 7B o matvec (bandwidth-bound) and a one-row RMSNorm (latency-bound). Per pass, in us.
 */
async function benchIndependentChains(): Promise<void> {
  const CHAINS = 5, DEPTH = 6, d = 4096;
  // a weight per (chain, step): 1 GB, so no chain reads its weights from the L2 cache
  const weights = Array.from(
    { length: CHAINS * DEPTH },
    (_, i) => randomWeights(gpu, `chain o ${i}`, (d * d) / 2, 7 + i),
  );
  const normW = gpu.upload("norm w", Float32Array.from({ length: d }, (_, i) => 1 + 0.01 * Math.sin(i)));
  const acts = Array.from(
    { length: CHAINS },
    (_, c) =>
      Array.from(
        { length: DEPTH + 1 },
        (_, s) => s === 0 ? gpu.upload(`x ${c}`, inputRows(1, d)) : gpu.buffer(`a ${c}.${s}`, d * 4),
      ),
  );
  // the read barrier over every chain's buffer `at`, its grid `w` workgroups a side (0: none)
  const barrier = (at: number, w: number): Dispatch[] =>
    readBarrier(gpu, { ctl, buffers: acts.map((a) => a[at]) }).map((d) => ({ ...d, workgroups: [w, w, w] }));
  // step s of each chain reads buffer buf(s) and writes buf(s + 1); fresh: a buffer a step; ping-pong: each chain
  // reuses two buffers (as a head's blocks would reuse their activations)
  const fresh = (s: number) => s, pp = (s: number) => s === 0 ? 0 : 1 + ((s - 1) % 2);
  const ops: Record<string, (c: number, from: number, to: number) => Dispatch> = {
    "o matvec": (c, from, to) =>
      matvec(gpu, { ctl, weight: weights[c * DEPTH + from], x: acts[c][from], y: acts[c][to], rows: 1, k: d, n: d }),
    "rmsnorm": (c, from, to) =>
      rmsnorm(gpu, { ctl, x: acts[c][from], weight: normW, out: acts[c][to], rows: 1, dim: d, eps: 1e-6 }),
  };
  for (const [name, opOf] of Object.entries(ops)) {
    const op = (c: number, s: number) => opOf(c, s, s + 1);
    const one = range(DEPTH).map((s) => op(0, s));
    const chained = range(CHAINS).flatMap((c) => range(DEPTH).map((s) => op(c, s)));
    const interleaved = range(DEPTH).flatMap((s) => range(CHAINS).map((c) => op(c, s)));
    // op by op across the chains, a read barrier of `w` workgroups a side after each op
    const withBarriers = (buf: (s: number) => number, w: number) =>
      range(DEPTH).flatMap((s) => [
        ...range(CHAINS).map((c) => opOf(c, buf(s), buf(s + 1))),
        ...barrier(buf(s + 1), w),
      ]);
    const bytes = name === "o matvec" ? d * d * 2 * DEPTH : 0;
    report("chains", `${name} x${DEPTH}`, 1, "one chain", await medianMs(one, 1), bytes);
    const variants = [
      ["chain after chain", chained],
      ["interleaved", interleaved],
      ["interleaved + transitions", withBarriers(fresh, 1)],
      ["interleaved + empty transitions", withBarriers(fresh, 0)],
      ["interleaved + transitions, 2 buffers a chain", withBarriers(pp, 1)],
    ] as const;
    for (const [variant, ds] of variants) {
      report("chains", `${name} x${DEPTH}`, 1, `${CHAINS} chains, ${variant}`, await medianMs(ds, 1), CHAINS * bytes);
    }
  }
  for (const b of [...weights, normW, ...acts.flat()]) b.destroy();
}

/**
 * The 7B's decode attention shape (32 heads of 128, a 4,112-position cache) and the buffers every timing of it shares:
 * 16 query rows, the output and the control block.
 */
function attention7b() {
  const nh = 32, hd = 128, d = nh * hd, maxPos = 4112;
  return {
    nh,
    hd,
    d,
    maxPos,
    q: gpu.upload("q", Float32Array.from({ length: 16 * d }, (_, i) => Math.sin(i))),
    out: gpu.buffer("out", 16 * d * 4),
    pos: gpu.buffer("ctl pos", CTL_SLOTS * 4),
  };
}

/** Decode attention at 256 and 4096 keys (split variants), 7B heads. */
async function benchAttention(): Promise<void> {
  // Decode attention of the 7B (32 heads of 128) in a 4112-position cache.
  const { nh, hd, d, maxPos, q, out, pos } = attention7b();
  const kc = gpu.upload("k", Float32Array.from({ length: maxPos * d }, (_, i) => Math.cos(i * 0.7)));
  const vc = gpu.upload("v", Float32Array.from({ length: maxPos * d }, (_, i) => Math.sin(i * 0.3)));
  // Each context in a cache of its size (the benchmark's default run has ~264 positions; 4096 is the limit).
  for (const [keys, cachePos] of [[256, 272], [4096, maxPos]]) {
    gpu.write(pos, Uint32Array.from([keys - 1]));
    for (const rows of [1, 4]) {
      type Variant = Pick<
        AttentionDecodeArgs,
        "splits" | "subgroups" | "kvDtype" | "workgroupSize" | "minKeys" | "keyLanes" | "scoreUnroll" | "pvUnroll"
      >;
      // --variants JSON: the attentionDecode knobs to time instead of the list below
      const variants: Variant[] = args.variants ? JSON.parse(args.variants) : [
        {},
        { kvDtype: "bf16" },
        { kvDtype: "bf16", workgroupSize: 128 },
        { kvDtype: "bf16", minKeys: 32 },
        { kvDtype: "bf16", splits: 1 },
        { kvDtype: "bf16", splits: 4 },
        { kvDtype: "bf16", splits: 8 },
        { kvDtype: "bf16", splits: 32 },
        { kvDtype: "bf16", splits: 64 },
      ];
      for (const v of variants) {
        const shape = { rows, nHeads: nh, headDim: hd, maxPos: cachePos, ...v };
        let scratch: GPUBuffer | undefined;
        try {
          scratch = createAttentionDecodeScratch(gpu, shape);
        } catch (e) {
          console.log(`attention_decode 7b ${keys} keys M=${rows} ${JSON.stringify(v)}: ${(e as Error).message}`);
          continue;
        }
        const ds = attentionDecode(gpu, { ...shape, ctl: pos, q, kCache: kc, vCache: vc, out, scratch });
        report(
          "attention_decode",
          `7b ${keys} keys`,
          rows,
          `${JSON.stringify(v)} (${ds.length} dispatches)`,
          await medianMs(ds, 1, 20),
          2 * (keys + rows - 1) * d * (v.kvDtype === "bf16" ? 2 : 4),
        );
        scratch?.destroy();
      }
    }
  }
}

/**
 * Where the decode attention's time goes (`--attention-probe`): 7B heads, a bf16 cache of 4,112 positions, 3 caches
 * cycled (200 MB: nothing stays in L2); the split pass as built, then with its K loads, V loads or both replaced by
 * constants (each binding still read once, so the pipeline layout stays), at 1 and 4 rows, the default splits and 64.
 * Prints us per call (split pass + merge) and the split pass alone.
 */
async function benchAttentionProbe(): Promise<void> {
  const { nh, hd, d, maxPos, q, out, pos } = attention7b();
  const pool = [0, 1, 2].map((i) => [
    randomWeights(gpu, `k ${i}`, maxPos * d / 2, 101 + 2 * i),
    randomWeights(gpu, `v ${i}`, maxPos * d / 2, 102 + 2 * i),
  ]);
  const keep: [string, string] = ["let row4 = NH * HV;", "let row4 = NH * HV; _ = kc[0]; _ = vc[0];"];
  const noK = Array.from({ length: 8 }, (_, v): [string, string] => [
    `key4(key0, key_col + ${v}u * KEY_LANES, first_pos)`,
    "vec4<f32>(f32(key0 & 7u))",
  ]);
  const noV = [
    ...Array.from({ length: 8 }, (_, u): [string, string] => [
      `value4(k0 + j + ${u}u * SLOTS, col, first_pos)`,
      "vec4<f32>(f32(j & 7u))",
    ]),
    ["value4(k0 + j, col, first_pos)", "vec4<f32>(f32(j & 7u))"] as [string, string],
  ];
  const swaps: Record<string, [string, string][]> = {
    "as built": [],
    "no K reads": [...noK, keep],
    "no V reads": [...noV, keep],
    "no K, no V": [...noK, ...noV, keep],
  };
  for (const keys of [4096, 1024, 256]) {
    gpu.write(pos, Uint32Array.from([keys - 1]));
    for (const rows of [1, 4]) {
      for (const splits of [undefined, 64]) {
        for (const [name, sw] of Object.entries(swaps)) {
          const shape = { rows, nHeads: nh, headDim: hd, maxPos, splits, minKeys: splits ? 16 : undefined };
          const scratch = createAttentionDecodeScratch(gpu, shape);
          const partial = (spec: AttentionDecodeKernelSpec) => {
            const k = attentionDecodeKernelFor(spec);
            // every occurrence: the unrolled loads are several
            const source = sw.reduce((src, [from, to]) => src.split(from).join(to), k.source);
            return { name: `${k.name} (${name})`, source };
          };
          const all = pool.flatMap(([kc, vc]) =>
            attentionDecode(gpu, { ...shape, ctl: pos, q, kCache: kc, vCache: vc, kvDtype: "bf16", out, scratch }, {
              partial,
            })
          );
          const us = await medianMs(all, pool.length, 20) * 1000;
          const usSplit = await medianMs(all.filter((_, i) => i % 2 === 0), pool.length, 20) * 1000;
          console.log(
            `attention_probe 7b ${keys} keys M=${rows} splits ${splits ?? "default"} ${name}: ${us.toFixed(1)} us ` +
              `(split pass ${usSplit.toFixed(1)}), ${(4 * keys * d / us / 1e6).toFixed(2)} TB/s of cache read`,
          );
          scratch?.destroy();
        }
      }
    }
  }
  for (const b of [q, out, pos, ...pool.flat()]) b.destroy();
}

/**
 * Prefill attention tile variants (prefill.ts; labels "q<query tile> k<key tile> t<threads> l<key lanes>", "sg" for
 * subgroup reductions). The default picks its tiles by length: the rows to read are whether a fixed choice beats it.
 */
const PREFILL_VARIANTS: PrefillTiles[] = [
  {},
  { queryTile: 8, keyTile: 16, workgroupSize: 64, keyLanes: 8 }, // 1 row x 2 keys, 4 output vec4 a thread
  { queryTile: 16, keyTile: 8, workgroupSize: 64, keyLanes: 8 }, // 2 rows x 1 key, 8 vec4
  { queryTile: 16, keyTile: 8, workgroupSize: 32, keyLanes: 4 }, // one warp, 2 x 2 scores, 16 vec4: fewest reads
  { queryTile: 16, keyTile: 8, workgroupSize: 128, keyLanes: 8 }, // 1 x 1, 4 vec4: shortest tile, 4 warps
  { queryTile: 8, keyTile: 16, workgroupSize: 128, keyLanes: 16 }, // 1 x 1, 2 vec4
  { queryTile: 8, keyTile: 16, workgroupSize: 32, keyLanes: 4 }, // one warp, 1 x 4, 8 vec4
  { queryTile: 8, keyTile: 8, workgroupSize: 64, keyLanes: 8 },
  { queryTile: 4, keyTile: 16, workgroupSize: 32, keyLanes: 8 }, // 4x the workgroups of query tile 16
  { subgroups: false }, // the default tiles with the tree reductions
];

/**
 * The worst error over the tests' tolerance `tol` (default ATTENTION_TOL, kernels/testing/attention_cases.ts) of `got`
 * ([rows, D]) on 16 sampled (row, head) pairs against the f64 reference, each computed alone over its head's columns.
 */
function prefillError(
  got: Float32Array,
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  rows: number,
  nh: number,
  hd: number,
  tol: { atol: number; rtol: number } = ATTENTION_TOL,
): number {
  const d = nh * hd;
  const head = (src: Float32Array, from: number, count: number, h: number) => {
    const out = new Float32Array(count * hd);
    for (let r = 0; r < count; r++) {
      out.set(src.subarray((from + r) * d + h * hd, (from + r) * d + (h + 1) * hd), r * hd);
    }
    return out;
  };
  let worst = 0;
  for (let j = 0; j < 16; j++) {
    const m = j < 2 ? j * (rows - 1) : (j * 7919) % rows;
    const h = (j * 104729) % nh;
    const want = attentionReference(head(q, m, 1, h), head(k, 0, m + 1, h), head(v, 0, m + 1, h), 1, m, 1, hd);
    for (let i = 0; i < hd; i++) {
      const e = Math.abs(got[m * d + h * hd + i] - want[i]) / (tol.atol + tol.rtol * Math.abs(want[i]));
      worst = Math.max(worst, Number.isNaN(e) ? Infinity : e);
    }
  }
  return worst;
}

/**
 * Prefill attention of 7B heads (32 x 128; `--size 1b`: 16 x 128) at 128, 512 and 2,048 tokens (`--rows`: the listed
 * lengths) from position 0, tile variants.
 */
async function benchPrefillAttention(): Promise<void> {
  const size = sizeArg();
  const nh = size === "7b" ? 32 : 16, hd = 128, d = nh * hd;
  const lengths = args.rows ? args.rows.split(",").map(Number) : args.quick ? [128] : [128, 512, 2048];
  const variants = args.quick ? PREFILL_VARIANTS.slice(0, 3) : PREFILL_VARIANTS;
  const maxRows = lengths.at(-1)!;
  const q = Float32Array.from({ length: maxRows * d }, (_, i) => Math.sin(i * 1.3));
  // Keys and values as the bf16 cache holds them (and the f32 cache, for the one f32 row per length).
  const k = roundBf16Array(Float32Array.from({ length: maxRows * d }, (_, i) => Math.cos(i * 0.7)));
  const v = roundBf16Array(Float32Array.from({ length: maxRows * d }, (_, i) => Math.sin(i * 0.3)));
  const caches: Record<KvDtype, [GPUBuffer, GPUBuffer]> = {
    bf16: [gpu.upload("k bf16", packBf16(k)), gpu.upload("v bf16", packBf16(v))],
    f32: [gpu.upload("k f32", k), gpu.upload("v f32", v)],
  };
  // Queries and output in their own buffers: a buffer bound both read-only and writable in one dispatch is a
  // validation error, and the dispatch would silently not run.
  const qBuf = gpu.upload("q prefill", q);
  const out = gpu.buffer("out prefill", maxRows * d * 4);
  type TensorRun = { tensorSubgroups: number; passes: number };
  const runs: [PrefillTiles | TensorRun, KvDtype][] = [
    ...variants.map((t): [PrefillTiles, KvDtype] => [t, "bf16"]),
    [{}, "f32"],
    // the tensor-core kernel (Dawn with subgroup matrices): 128, 64, 32 and 16 query rows a workgroup, one pass and two
    ...(prefillTensorUnsupported(gpu) ? [] : [[8, 1], [4, 1], [2, 1], [1, 1], [8, 2], [4, 2]].map((
      [n, passes],
    ): [TensorRun, KvDtype] => [{ tensorSubgroups: n, passes }, "bf16"])),
  ];
  for (const rows of lengths) {
    let keys = 0; // sum over rows of the keys each sees
    for (let m = 0; m < rows; m++) keys += m + 1;
    for (const [tiles, kvDtype] of runs) {
      const tensor = "tensorSubgroups" in tiles ? tiles.tensorSubgroups : 0;
      const passes = "passes" in tiles ? tiles.passes : 1;
      const fmaTiles = tensor ? {} : tiles as PrefillTiles;
      const a = { rows, nHeads: nh, headDim: hd, ...fmaTiles };
      const [kCache, vCache] = caches[kvDtype];
      const args = { ...a, ctl, q: qBuf, kCache, vCache, kvDtype, out };
      let label = tensor
        ? `tensor cores, ${16 * tensor} query rows, ${passes} pass${passes > 1 ? "es" : ""}, ${kvDtype} cache`
        : JSON.stringify(tiles);
      let dispatch: Dispatch;
      try {
        if (tensor) {
          dispatch = attentionPrefillTensor(gpu, args, { subgroups: tensor, passes });
        } else {
          const p = planAttentionPrefill(gpu, a);
          label = `q${p.queryTile} k${p.keyTile} t${p.workgroupSize} l${p.keyLanes}${p.subgroups ? " sg" : ""}` +
            `${Object.keys(tiles).length === 0 ? " (default)" : ""}, ${kvDtype} cache`;
          dispatch = attentionPrefill(gpu, args);
        }
      } catch (e) {
        console.log(`attention_prefill ${size} ${rows} tokens ${label}: skipped (${(e as Error).message})`);
        continue;
      }
      const ms = await medianMs([dispatch], 1, 20);
      const err = prefillError(
        await gpu.readF32(out, rows * d),
        q,
        k,
        v,
        rows,
        nh,
        hd,
        tensor ? TENSOR_PREFILL_TOL : undefined,
      );
      const r: Row = {
        kernel: "attention_prefill",
        shape: `${size} ${rows} tokens`,
        rows,
        variant: label,
        us: ms * 1000,
        tflops: (4 * hd * nh * keys) / ms / 1e9,
        err_over_tol: err,
        workgroups: dispatch.workgroups[0] * dispatch.workgroups[1],
      };
      results.push(r);
      console.log(
        `attention_prefill ${r.shape} ${label}: ${r.us.toFixed(1)} us, ${r.tflops!.toFixed(2)} TFLOP/s, ` +
          `${r.workgroups} workgroups${err > 1 ? `, WRONG (err ${err.toFixed(1)} x tol)` : ""}`,
      );
    }
  }
  for (const b of [qBuf, out, ...caches.bf16, ...caches.f32]) b.destroy();
}

/**
 * GEMM tile variants to time (a workgroup computes (threadsM * blockM) x (threadsN * blockN) outputs). With M = 128
 * the number of workgroups is small next to the H100's 132 SMs for N = 4096 (o, down), hence the smaller tiles.
 */
const GEMM_VARIANTS: GemmTiles[] = [
  {}, // the default: 64 x 64, 16 x 16 threads of 4 x 4, tileK 16, prefetch
  { pipeline: "serial" },
  { pipeline: "double" },
  { tileK: 32 },
  { tileK: 32, pipeline: "double" },
  { tileK: 8, pipeline: "double" },
  { blockM: 8 }, // 128 x 64: one M tile at M = 128, each weight tile read once
  { blockN: 8 }, // 64 x 128
  { blockM: 8, blockN: 8 }, // 128 x 128, 64 accumulators per thread
  { threadsM: 32, threadsN: 8 }, // 128 x 32: a warp is 8 columns x 4 rows, the fewest workgroup-memory reads
  { threadsM: 32, threadsN: 8, blockN: 8 }, // 128 x 64
  { threadsM: 16, threadsN: 8 }, // 64 x 32, 128 threads: 2x the workgroups of the default
  { threadsM: 16, threadsN: 8, blockM: 8, blockN: 8 }, // 128 x 64, 128 threads
  { threadsM: 16, threadsN: 8, blockN: 8, tileK: 32 }, // 64 x 64, 128 threads
  { threadsM: 8, threadsN: 16 }, // 32 x 64, 128 threads
  { threadsM: 8, threadsN: 8, blockM: 8, blockN: 8 }, // 64 x 64, 64 threads
  { threadsM: 8, threadsN: 16, blockM: 4, blockN: 2 }, // 32 x 32, 128 threads: 8x the default's workgroups
];

/**
 * Split-K factors timed on the default f32 tile and on linear's tensor tiles (k steps of 64, 32 for SwiGLU).
 * Motivation (ARCHITECTURE.md, "Split-K"): at M = 128 the GEMMs run one wave of few workgroups whose time is k steps
 * x ~1.4 us; S times the workgroups of K / S each should trade that latency for occupancy.
 */
const SPLIT_K_FACTORS = [2, 4, 8];

/** The f32 variants of `--quick`: the default, and linear's tiles for N <= 4096 (o, down). */
const GEMM_QUICK_VARIANTS: GemmTiles[] = [{}, { threadsN: 8 }];

/**
 * The f16-multiply GEMM's variants (math "f16"): staging takes half the bytes of f32, so the 128-row and 128-column
 * tiles fit with room; the first four are `--quick`'s.
 */
const GEMM_F16_VARIANTS: GemmTiles[] = [
  { math: "f16" }, // 64 x 64, partials flushed every 8 k
  { math: "f16", flushK: 4 },
  { math: "f16", blockM: 8 }, // 128 x 64: one M tile at M = 128
  { math: "f16", blockN: 8 }, // 64 x 128
  { math: "f16", threadsN: 8 }, // 64 x 32: linear's tiles for N <= 4096
  { math: "f16", tileK: 32, flushK: 16 },
  { math: "f16", blockM: 8, tileK: 32 }, // 128 x 64, k tiles of 32
  { math: "f16", blockM: 8, blockN: 8 }, // 128 x 128
  { math: "f16", pipeline: "double" },
];

/**
 * A short name of tiles: "<tileM>x<tileN> t<threadsM>x<threadsN> b<blockM>x<blockN> k<tileK> <pipeline>", prefixed
 * "f16 flush<flushK>" for the f16-multiply GEMM.
 */
function tilesLabel(tiles: GemmTiles): string {
  const t = { ...GEMM_DEFAULT_TILES, ...tiles };
  return `${t.math === "f16" ? `f16 flush${t.flushK} ` : ""}${t.threadsM * t.blockM}x${t.threadsN * t.blockN} ` +
    `t${t.threadsM}x${t.threadsN} b${t.blockM}x${t.blockN} k${t.tileK} ${t.pipeline}${splitLabel(t.splitK)}`;
}

/** " split<S>" for a split-K variant, else "". */
function splitLabel(splitK: number | undefined): string {
  return (splitK ?? 1) > 1 ? ` split${splitK}` : "";
}

/** The worst sampled error of a GEMM's output, over its tolerance and relative to its dot products' sum |x w|. */
interface SampledError {
  /** max |got - want| / tolerance (> 1: wrong). */
  overTol: number;
  /** max |got - want| / sum_k |x_k w_k| (SWIGLU: of the gate and up products, propagated). */
  rel: number;
}

/**
 * The worst error of `got` ([rows, n]) on 64 sampled elements against an f64 reference from the weight words. Sampled
 * rows include the first and last, and rows 3, 7, .. holding a 1e5 element (`gemmInputRows`). Tolerance: `tensor`,
 * the tensor-core GEMM's (`tensorGemmTolerance`: f16 rounding of x); `fma16`, the f16-multiply GEMM's
 * (`f16GemmTolerance` with its flushK); else 1e-4 of the sum of |terms| of each dot product (f32 accumulation over
 * K <= 11008 terms errs by ~sqrt(K) * 2^-24 of it, ~1e-5), propagated through silu(g) * u for SWIGLU.
 */
function sampledError(
  got: Float32Array,
  x: Float32Array,
  seed: number,
  rows: number,
  k: number,
  n: number,
  epilogue: number,
  kind: "fma" | "fma16" | "tensor",
  flushK: number,
): SampledError {
  const bits = new Uint32Array(1), value = new Float32Array(bits.buffer);
  const bf16 = (word: number, hi: boolean) => {
    bits[0] = hi ? word & 0xffff0000 : word << 16;
    return value[0];
  };
  const dot = (m: number, row: number) => {
    let s = 0, abs = 0, absX = 0, absW = 0;
    for (let i = 0; i < k; i++) {
      const w = bf16(weightWord(seed, (row * k + i) >> 1), (i & 1) === 1);
      const t = x[m * k + i] * w;
      s += t;
      abs += Math.abs(t);
      absX += Math.abs(x[m * k + i]);
      absW += Math.abs(w);
    }
    const scale = 2 ** (rowScaleExponent(x.subarray(m * k, (m + 1) * k)) + gemmXShift(flushK));
    const tol = kind === "tensor"
      ? tensorGemmTolerance(abs, absX)
      : kind === "fma16"
      ? f16GemmTolerance({ sumAbsProducts: abs, sumAbsX: absX, sumAbsW: absW, scale, k }, flushK)
      : 1e-4 * abs + 1e-30;
    return { s, abs, tol };
  };
  let overTol = 0, rel = 0;
  for (let j = 0; j < 64; j++) {
    const m = j < 2 ? j * (rows - 1) : j < 8 ? (4 * j + 3) % rows : (j * 7919) % rows;
    const col = j < 2 ? j * (n - 1) : (j * 104729) % n;
    const g = dot(m, col);
    let want = g.s, tol = g.tol, scale = g.abs;
    if (epilogue === Epilogue.SWIGLU) {
      const u = dot(m, col + n);
      const sig = 1 / (1 + Math.exp(-g.s));
      want = g.s * sig * u.s;
      tol = 1.1 * Math.abs(u.s) * g.tol + Math.abs(g.s * sig) * u.tol + 1e-30;
      scale = 1.1 * Math.abs(u.s) * g.abs + Math.abs(g.s * sig) * u.abs;
    }
    const err = Math.abs(got[m * n + col] - want);
    overTol = Math.max(overTol, Number.isNaN(err) ? Infinity : err / tol);
    rel = Math.max(rel, Number.isNaN(err) ? Infinity : err / (scale + 1e-30));
  }
  return { overTol, rel };
}

/**
 * Tensor-core GEMM tile variants to time (Dawn with subgroup matrices only): a workgroup computes
 * (16 subgroupsM fragsM) x (16 subgroupsN fragsN) outputs. The first four are linear's 12- and 16-subgroup tiles
 * (`--quick`: 192 x 128 and 192 x 64 past 128 rows, 128 x 128 and 128 x 96 up to 128; SwiGLU has no room for the
 * plain ones), then its 8-subgroup ones (TENSOR_TILES: 128 x 128 k64 for plain products, 128 x 64 k64 for SwiGLU) and
 * 256-row tile; then the 64 x 64 generator default, two buffers and two tiles in flight at 128 x 128 and 128 x 64, and
 * a 256 x 64 tile. Sessions V-AB (docs/PERF.md) measured these and more with `--tensor-tiles`.
 */
const TENSOR_VARIANTS: TensorTiles[] = [
  TENSOR_TILES_192,
  TENSOR_TILES_SWIGLU_192,
  TENSOR_TILES_SMALL_M,
  TENSOR_TILES_SMALL_M_SWIGLU,
  TENSOR_TILES.plain,
  TENSOR_TILES.swiglu,
  TENSOR_TILES_LARGE_M,
  {}, // the generator's default: 64 x 64, 2 x 2 subgroups of 2 x 2 matrices, k steps of 32, 2 buffers
  { subgroupsM: 2, subgroupsN: 4, fragsM: 4, fragsN: 2 }, // 128 x 128, k32, 2 buffers (no room for SwiGLU)
  { subgroupsM: 2, subgroupsN: 4, fragsM: 4, fragsN: 2, ahead: 2 }, // the same, two k tiles in flight
  { subgroupsM: 4, subgroupsN: 2, fragsM: 2, fragsN: 2 }, // 128 x 64, k32, 2 buffers
  { subgroupsM: 4, subgroupsN: 2, fragsM: 4, fragsN: 2, buffers: 1 }, // 256 x 64, k32
];

/** A short name of tensor tiles: "tensor <tileM>x<tileN> s<subgroupsM>x<subgroupsN> f<fragsM>x<fragsN> k<stepK>". */
function tensorLabel(tiles: TensorTiles): string {
  const t = resolveTensorTiles(tiles); // the defaults where tiles leave a knob out or undefined
  const { tileM, tileN } = tensorTileShape(t);
  return `tensor ${tileM}x${tileN} s${t.subgroupsM}x${t.subgroupsN} f${t.fragsM}x${t.fragsN} ` +
    (tiles.stepK === undefined && (tiles.splitK ?? 1) > 1 ? "k64/32" : `k${t.stepK}`) + ` b${t.buffers}` +
    (t.ahead !== 1 ? ` a${t.ahead}` : "") + (t.producers ? ` p${t.producers}` : "") + (t.halfWeights ? " hw" : "") +
    (t.packedWeights ? " pw" : "") + (t.deferLast ? ` dl${t.deferLast}` : "") +
    (t.wideStores ? " ws" : "") + (t.sharedEpilogue ? " se" : "") +
    splitLabel(tiles.splitK);
}

/**
 * The GEMM tile variants at the 7B prefill shapes, in TFLOP/s, each with its sampled error: the f32 GEMM's, and on a
 * device that runs it the tensor-core GEMM's (timed with its row-scale pre-pass, one dispatch pair per weight).
 */
async function benchGemm(): Promise<void> {
  const rows = Number(args.rows ?? 128);
  const f16 = gpu.has("shader-f16");
  const tensorGiven = args["tensor-tiles"] !== undefined;
  const fma: GemmTiles[] = args.tiles
    ? JSON.parse(args.tiles)
    : tensorGiven
    ? []
    : args.quick
    ? [...GEMM_QUICK_VARIANTS, ...(f16 ? GEMM_F16_VARIANTS.slice(0, 4) : [])]
    : [...GEMM_VARIANTS, ...(f16 ? GEMM_F16_VARIANTS : [])];
  if (!f16) console.log("f16-multiply GEMM: not run (the device lacks shader-f16)");
  const unsupported = tensorGemmUnsupported(gpu);
  const tensor: TensorTiles[] = unsupported || (args.tiles && !tensorGiven)
    ? []
    : tensorGiven
    ? JSON.parse(args["tensor-tiles"]!)
    : args.quick
    ? TENSOR_VARIANTS.slice(0, 4)
    : [...TENSOR_VARIANTS];
  // Split-K: at most 3 lines per shape in --quick (f32 S = 4, tensor S = 2 and 4). Tensor stepK is per shape.
  if (!args.tiles && !tensorGiven) {
    fma.push(...(args.quick ? [4] : SPLIT_K_FACTORS).map((splitK) => ({ splitK })));
    if (!unsupported) tensor.push(...(args.quick ? [2, 4] : SPLIT_K_FACTORS).map((splitK) => ({ splitK })));
  }
  console.log(
    unsupported ? `tensor-core GEMM: not run (${unsupported})` : `tensor-core GEMM: ${tensor.length} variants`,
  );
  const variants = [
    ...fma.map((tiles) => ({
      kind: tiles.math === "f16" ? "fma16" as const : "fma" as const,
      tiles,
      label: tilesLabel(tiles),
    })),
    ...tensor.map((tiles) => ({ kind: "tensor" as const, tiles, label: tensorLabel(tiles) })),
  ];
  // --size 1b: the 1B's products instead of the 7B's
  const size = sizeArg();
  const shapes = shapesArg(
    size === "1b" ? DECODE_SHAPES_1B : [
      ...DECODE_SHAPES_7B,
      // The alternative to the SwiGLU epilogue: a plain GEMM over the 2F gate/up rows (+ an elementwise pass, ~8 us);
      // measured 8% slower (linear.ts), so --quick leaves it out.
      ...(args.quick ? [] : [{ name: "7b gate_up plain", n: 22016, k: 4096, epi: Epilogue.PLAIN }]),
    ],
  );
  const totals = new Map<string, { us: number; shapes: number }>(); // variant -> one layer's GEMMs
  const exponents = gpu.buffer("exponents", rows * 4);
  // the tensor-core GEMM's input, the pre-pass's f16 rows, for the longest K of the shapes
  const xHalf = gpu.buffer("f16 rows", rows * Math.max(...shapes.map((s) => s.k)) * 2);
  const splits = variants.map((v) => v.tiles.splitK ?? 1);
  const { maxStorageBufferBindingSize, maxBufferSize } = gpu.device.limits;
  const anyHalf = variants.some((v) => v.kind === "tensor" && (v.tiles as TensorTiles).halfWeights);
  const anyPacked = variants.some((v) => v.kind === "tensor" && (v.tiles as TensorTiles).packedWeights);
  for (const s of shapes) {
    const { nw, pool, weights } = weightPool(s);
    // halfWeights variants read f16 copies of the pool (half_weights.ts), made once per shape
    const halves = anyHalf ? weights.map((w) => gpu.buffer(`${w.label} f16`, w.size)) : [];
    if (anyHalf) {
      gpu.run(weights.map((w, i) => halfWeights(gpu, { ctl, src: w, dst: halves[i], words: w.size / 4 })));
    }
    // packedWeights variants read packed copies (pack_weights.ts), likewise
    const packs = anyPacked ? weights.map((w) => gpu.buffer(`${w.label} packed`, w.size)) : [];
    if (anyPacked) gpu.run(weights.map((w, i) => packWeights(gpu, { ctl, src: w, dst: packs[i], rows: nw, k: s.k })));
    const xs = gemmInputRows(rows, s.k);
    const x = gpu.upload("x", xs);
    const y = gpu.buffer("y", rows * s.n * 4);
    // Split-K's partial sums [S, rows, NW], reduced into y after each GEMM: sized for the largest S that fits a binding.
    const fits = (splitK: number) => splitK * rows * nw * 4 <= Math.min(maxStorageBufferBindingSize, maxBufferSize);
    const maxSplit = Math.max(1, ...splits.filter(fits));
    const partials = maxSplit > 1 ? gpu.buffer("partials", maxSplit * rows * nw * 4) : undefined;
    // Every variant's dispatches first, then `--rounds` rounds over all of them (each variant's time: its least median
    // over the rounds, so that a slow spell of the GPU lasting seconds lands on one round of a variant, not on it alone),
    // the output checked after the last.
    const prepared: {
      kind: "fma" | "fma16" | "tensor";
      tiles: GemmTiles | TensorTiles;
      variant: string;
      ds: Dispatch[];
      per: number;
    }[] = [];
    for (const { kind, tiles: given, label: variant } of variants) {
      let ds: Dispatch[];
      const splitK = given.splitK ?? 1;
      const product = { ctl, x, y: splitK > 1 ? partials! : y, rows, k: s.k, n: s.n, epilogue: s.epi };
      // A split-K tensor variant without a k step takes linear's (64 for plain products, 32 for SwiGLU, smaller where
      // K / S is not a multiple); with no fitting tiles gemmTensor says why, and the variant is skipped.
      const tiles = kind === "tensor" && splitK > 1 && (given as TensorTiles).stepK === undefined
        ? tensorTilesFor(gpu, { ...product, ...given }) ?? given
        : given;
      const reduce = () =>
        splitK > 1 ? [splitKReduce(gpu, { ctl, partials: partials!, y, rows, n: s.n, splitK, epilogue: s.epi })] : [];
      try {
        if (splitK > maxSplit) throw new Error(`${splitK} partial sums of ${rows} x ${nw} exceed a storage binding`);
        ds = kind === "fma"
          ? weights.flatMap((w) => [gemm(gpu, { ...product, weight: w, ...(tiles as GemmTiles) }), ...reduce()])
          : kind === "fma16"
          ? weights.flatMap((w) => [
            rowScale(gpu, { ctl, x, exponents, rows, k: s.k }),
            gemm(gpu, { ...product, weight: w, exponents, ...(tiles as GemmTiles) }),
            ...reduce(),
          ])
          : weights.flatMap((w, i) => [
            rowScale(gpu, { ctl, x, exponents, xHalf, rows, k: s.k }),
            gemmTensor(gpu, {
              ...product,
              x: xHalf,
              weight: (tiles as TensorTiles).halfWeights
                ? halves[i]
                : (tiles as TensorTiles).packedWeights
                ? packs[i]
                : w,
              exponents,
              ...(tiles as TensorTiles),
            }),
            ...reduce(),
          ]);
      } catch (e) {
        console.log(`gemm ${s.name} M=${rows} ${variant}: skipped (${(e as Error).message})`);
        continue;
      }
      prepared.push({ kind, tiles, variant, ds, per: Infinity });
    }
    const rounds = Number(args.rounds ?? 1);
    for (let round = 0; round < rounds; round++) {
      for (const p of prepared) {
        const per = await medianMs(p.ds, weights.length);
        if (rounds > 1) console.log(`  round ${round + 1} ${s.name} ${p.variant}: ${(per * 1000).toFixed(1)} us`);
        p.per = Math.min(p.per, per);
      }
    }
    for (const { kind, tiles, variant, ds, per } of prepared) {
      gpu.run(ds.slice(-(ds.length / weights.length))); // the pool's last weight, for the check below
      // The last dispatch replayed wrote y, with the pool's last weight (seed 17 + pool - 1).
      const got = await gpu.readF32(y, rows * s.n);
      const flushK = (tiles as GemmTiles).flushK ?? GEMM_DEFAULT_TILES.flushK;
      const err = sampledError(got, xs, 17 + pool - 1, rows, s.k, s.n, s.epi, kind, flushK);
      const tflops = (2 * rows * nw * s.k) / per / 1e9;
      const last = ds.filter((d) => d.label.startsWith("gemm")).at(-1)!; // the GEMM, not its reduction
      const r: Row = {
        kernel: kind === "fma" ? "gemm" : kind === "fma16" ? "gemm_f16" : "gemm_tensor",
        shape: `${s.name} [${nw}x${s.k}]`,
        rows,
        variant,
        us: per * 1000,
        tflops,
        err_over_tol: err.overTol,
        max_rel_err: err.rel,
        workgroups: last.workgroups[0] * last.workgroups[1],
      };
      results.push(r);
      if (s.name !== "7b gate_up plain") { // the alternative to the gate_up row, not part of the layer's sum
        const total = totals.get(variant) ?? { us: 0, shapes: 0 };
        totals.set(variant, { us: total.us + r.us, shapes: total.shapes + 1 });
      }
      const bytes = kind !== "tensor"
        ? gemmWorkgroupBytes(tiles as GemmTiles, s.epi)
        : gemmTensorWorkgroupBytes(tiles as TensorTiles, s.epi);
      console.log(
        `gemm ${r.shape} M=${rows} ${variant}: ${r.us.toFixed(1)} us, ${tflops.toFixed(2)} TFLOP/s, ` +
          `max rel err ${err.rel.toExponential(2)} (of sum |x w|), ${r.workgroups} workgroups, ${bytes} B${
            err.overTol > 1 ? `, WRONG (err ${err.overTol.toFixed(1)} x tol)` : ""
          }`,
      );
    }
    x.destroy();
    y.destroy();
    partials?.destroy();
    for (const w of [...weights, ...halves, ...packs]) w.destroy();
  }
  exponents.destroy();
  xHalf.destroy();
  console.log(`one ${size.toUpperCase()} layer's GEMMs at M=${rows} (qkv + gate_up + down + o), fastest first:`);
  const layerShapes = shapes.filter((s) => s.name !== "7b gate_up plain").length;
  const complete = [...totals].filter(([, t]) => t.shapes === layerShapes).sort((a, b) => a[1].us - b[1].us);
  for (const [variant, t] of complete) console.log(`  ${variant}: ${(t.us / 1000).toFixed(3)} ms`);
}

/**
 * Where the tensor-core GEMM's time goes (`--gemm-probe`, Dawn): the 7B products at M = 128 (and `--rows`), with
 * linear's tiles, as built and with parts of the k loop replaced (each binding still read, so the layout stays): no
 * global reads (constants staged), no products (no subgroup-matrix multiply-accumulate, so no matrix loads either),
 * neither, and one workgroup-memory store per staged vec4 instead of 8. Prints us per product; the
 * outputs of the probes are wrong by design.
 */
async function benchGemmProbe(): Promise<void> {
  const unsupported = tensorGemmUnsupported(gpu);
  if (unsupported) {
    console.log(`gemm_probe: not run (${unsupported})`);
    return;
  }
  const noReads: [string | RegExp, string][] = [
    ["return x[s.src + k0 / 8u];", "return vec4<u32>(0x3c003c00u | (k0 & 7u));"],
    ["return w[s.src + k0 / 8u];", "return vec4<u32>(0x3c003c00u | (k0 & 7u));"],
    ["if (gated_off()) { return; }", "if (gated_off()) { return; }\n  _ = x[0]; _ = w[0];"],
  ];
  const noProducts: [string | RegExp, string][] = [[/^\s*\w+ = subgroupMatrixMultiplyAccumulate\([^;]*\);$/gm, ""]];
  const oneStore: [string | RegExp, string][] = [
    [/ {2}xs\[i\] = a\.x;[^}]*/, "  xs[i] = a.x + a.y + b.x + b.y + c.x + c.y + d.x + d.y;\n"],
    [/ {2}ws\[i\] = f16\(bf16_lo\(p\.x\)\);[^}]*/, "  ws[i] = f16(bf16_lo(p.x ^ p.y ^ p.z ^ p.w));\n"],
  ];
  // Staging without its workgroup-memory stores: what is left is the k loop's matrix loads, products and barriers.
  const noStores: [string | RegExp, string][] = [
    [/(fn stage_x\(i: u32, p: vec4<u32>\) \{)[^}]*/, "$1\n  _ = i; _ = p;\n"],
    [/(fn stage_w\(i: u32, p: vec4<u32>\) \{)[^}]*/, "$1\n  _ = i; _ = p;\n"],
  ];
  // stage_w with each bf16 pair v (p.x .. p.w) staged as `pair(v)`, a vec2<f16>.
  const stageW = (pair: (v: string) => string): [string | RegExp, string][] => [[
    / {2}ws\[i\] = f16\(bf16_lo\(p\.x\)\);[^}]*/,
    range(4).map((c) =>
      `  let h${c} = ${pair(`p.${"xyzw"[c]}`)};\n  ws[i + ${2 * c}u] = h${c}.x;\n  ws[i + ${2 * c + 1}u] = h${c}.y;\n`
    ).join(""),
  ]];
  // The weights staged as if already f16 (a copy made at load time): bits copied, no conversion.
  const f16Copy = stageW((v) => `bitcast<vec2<f16>>(${v})`);
  // The conversion two at a time (vec2<f32> to vec2<f16>: a packed convert where the driver has one).
  const packed = stageW((v) => `vec2<f16>(vec2<f32>(bf16_lo(${v}), bf16_hi(${v})))`);
  // The k loop's barriers gone (each commented with the tile it waits for; the epilogue's stay).
  const noBarriers: [string | RegExp, string][] = [[
    /^\s*workgroupBarrier\(\); \/\/ tiles? (k0 |staged|consumed)[^\n]*$/gm,
    "",
  ]];
  const swaps: Record<string, [string | RegExp, string][]> = {
    "as built": [],
    "no k-loop barriers": noBarriers,
    "no global reads": noReads,
    "products only": [...noReads, ...noStores],
    "products only, no barriers": [...noReads, ...noStores, ...noBarriers],
    "no products": noProducts,
    "no reads, no products": [...noReads, ...noProducts],
    "1 store a vec4": oneStore,
    "f16 weights copied": f16Copy,
    "packed convert": packed,
  };
  const rowCounts = [128, ...(args.rows ? [Number(args.rows)] : [])];
  const maxRows = Math.max(...rowCounts);
  const exponents = gpu.buffer("exponents", maxRows * 4);
  const xHalf = gpu.buffer("f16 rows", maxRows * Math.max(...DECODE_SHAPES_7B.map((s) => s.k)) * 2);
  // linear's tiles, or the first of --tensor-tiles unsplit (where a shape's workgroup memory allows it)
  const first = args["tensor-tiles"] ? (JSON.parse(args["tensor-tiles"]) as TensorTiles[])[0] : undefined;
  const given = first && { ...first, splitK: 1 };
  for (const rows of rowCounts) {
    for (const s of DECODE_SHAPES_7B) {
      const { nw, weights } = weightPool(s);
      const x = gpu.upload("x", gemmInputRows(rows, s.k));
      const y = gpu.buffer("y", rows * s.n * 4);
      const product = { ctl, x, y, rows, k: s.k, n: s.n, epilogue: s.epi };
      const tiles = given && gemmTensorWorkgroupBytes(given, s.epi) <= gpu.device.limits.maxComputeWorkgroupStorageSize
        ? given
        : tensorTilesFor(gpu, product)!;
      const k = gemmTensorKernelFor({ ...tiles, epilogue: s.epi, subgroupSize: tensorSubgroupSize(gpu) });
      for (const [name, sw] of Object.entries(swaps)) {
        const source = sw.reduce((src, [from, to]) => src.replace(from, to), k.source);
        if (sw.length && source === k.source) {
          console.log(`gemm_probe ${s.name} M=${rows} ${tensorLabel(tiles)} ${name}: not run (nothing to change)`);
          continue;
        }
        const kernel = { name: `${k.name} (${name})`, source };
        const ds = weights.flatMap((w) => [
          rowScale(gpu, { ctl, x, exponents, xHalf, rows, k: s.k }),
          gemmTensor(gpu, { ...product, x: xHalf, weight: w, exponents, ...tiles }, kernel),
        ]);
        const us = await medianMs(ds, weights.length) * 1000;
        console.log(
          `gemm_probe ${s.name} [${nw}x${s.k}] M=${rows} ${tensorLabel(tiles)} ${name}: ${us.toFixed(1)} us, ` +
            `${((2 * rows * nw * s.k) / us / 1e6).toFixed(1)} TFLOP/s, weights ${
              (nw * s.k * 2 / us / 1e3).toFixed(0)
            } GB/s`,
        );
      }
      for (const b of [x, y, ...weights]) b.destroy();
    }
  }
  exponents.destroy();
  xHalf.destroy();
}

/**
 * How many of a tensor-core GEMM's workgroups an SM runs at once (`--gemm-waves`, Dawn): one row of tiles (M = tileM)
 * over K = 4,096 and N = tileN * SMS * w columns, w = 1..4, at linear's tiles and each of
 * `--tensor-tiles`. A workgroup's k loop waits on global memory most of its time (docs/PERF.md), so if two workgroups
 * share an SM, w = 2 takes well under twice w = 1; if w = 2 takes twice as long, one runs at a time (registers or
 * workgroup memory forbid a second). Prints us per w and the ratio to w = 1.
 */
async function benchGemmWaves(): Promise<void> {
  const unsupported = tensorGemmUnsupported(gpu);
  if (unsupported) {
    console.log(`gemm_waves: not run (${unsupported})`);
    return;
  }
  const sms = SMS, k = 4096, waves = [1, 2, 3, 4];
  const given: TensorTiles[] = args["tensor-tiles"] ? JSON.parse(args["tensor-tiles"]) : [];
  const tileSets = [TENSOR_TILES.plain, ...given];
  const maxN = Math.max(...tileSets.map((t) => tensorTileShape(t).tileN)) * sms * Math.max(...waves);
  const maxM = Math.max(...tileSets.map((t) => tensorTileShape(t).tileM));
  const weight = randomWeights(gpu, "waves weight", (maxN * k) / 2, 5);
  const x = gpu.upload("x", gemmInputRows(maxM, k));
  const y = gpu.buffer("y", maxM * maxN * 4);
  const exponents = gpu.buffer("exponents", maxM * 4);
  const xHalf = gpu.buffer("f16 rows", maxM * k * 2);
  for (const tiles of tileSets) {
    const { tileM, tileN } = tensorTileShape(tiles);
    let first = 0;
    for (const w of waves) {
      const n = tileN * sms * w;
      const product = { ctl, x: xHalf, y, rows: tileM, k, n, weight, exponents, ...tiles, splitK: 1 };
      const ds = [rowScale(gpu, { ctl, x, exponents, xHalf, rows: tileM, k }), gemmTensor(gpu, product)];
      const us = await medianMs(ds, 1) * 1000;
      first ||= us;
      console.log(
        `gemm_waves ${tensorLabel(tiles)} M=${tileM} K=${k} N=${n} (${sms * w} workgroups, ${
          gemmTensorWorkgroupBytes(tiles)
        } B): ${us.toFixed(1)} us, ${(us / first).toFixed(2)} x w=1, ${
          ((2 * tileM * n * k) / us / 1e6).toFixed(1)
        } TFLOP/s`,
      );
    }
  }
  for (const b of [weight, x, y, exponents, xHalf]) b.destroy();
}

/**
 * How many workgroups of a given workgroup memory an SM holds at once (`--occupancy`): a kernel whose invocations each
 * chase a chain of dependent workgroup-memory loads (latency-bound, one load in flight a warp: workgroups sharing an SM
 * overlap completely up to dozens of warps; a chain of FMAs filled the issue slots at 16 warps an SM, session AA) and
 * whose workgroup declares S bytes (all written, so none is dropped), dispatched as w = 1..8 waves of SMS workgroups.
 * Time(w) / time(1) steps up by one each time w passes a multiple of the workgroups an SM holds; printed as "holds N"
 * (the largest w still within 1.3x of w = 1). The GEMM's staging and products add up when an SM holds one of its
 * workgroups (`--gemm-waves`), so this is the budget a tile must fit to share an SM.
 */
async function benchOccupancy(): Promise<void> {
  const sms = SMS, iters = 2000, waves = [1, 2, 3, 4, 5, 6, 7, 8];
  const y = gpu.buffer("occupancy y", sms * 8 * 256 * 4);
  const configs: [number, number][] = [
    ...[1, 8, 16, 20, 24, 28, 32, 40, 48].map((kb): [number, number] => [128, kb * 1024]),
    [256, 1024],
    [256, 24 * 1024],
    [256, 32 * 1024],
    [512, 1024],
  ];
  for (const [threads, bytes] of configs) {
    const words = Math.min(bytes, gpu.device.limits.maxComputeWorkgroupStorageSize) / 4;
    const kernel = {
      name: `occupancy_t${threads}_s${words * 4}`,
      source: `
@group(0) @binding(0) var<storage, read> ctl: array<u32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
var<workgroup> pad: array<u32, ${words}>;
@compute @workgroup_size(${threads})
fn main(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wid: vec3<u32>) {
  if (gated_off()) { return; }
  // pad[i]: the next index of a walk over the words (a stride prime to their count; a warp's 32 loads hit 32 banks)
  for (var i = t; i < ${words}u; i += ${threads}u) { pad[i] = (i + 17u) % ${words}u; }
  workgroupBarrier();
  var a = t % ${words}u;
  for (var it = 0u; it < ${iters}u; it++) { a = pad[a]; }
  y[wid.x * ${threads}u + t] = f32(a);
}
`,
    };
    const times: number[] = [];
    for (const w of waves) {
      const d = gpu.dispatch(kernel, {}, [ctl, y], sms * w);
      times.push(w === 1 ? await medianMs([d], 1) : (await timeDispatches(gpu, [d], 21)).sort((a, b) => a - b)[10]);
    }
    const holds = Math.max(...waves.filter((_, i) => times[i] <= 1.3 * times[0]));
    console.log(
      `occupancy ${threads} invocations, ${words * 4} B of workgroup memory: ${
        times.map((t, i) => `w${waves[i]} ${(t * 1000).toFixed(1)}`).join(", ")
      } us; holds ${holds}`,
    );
  }
  y.destroy();
}

/**
 * One `--mma-peak` variant: `subgroups` subgroups a workgroup, each multiply-accumulating 8 products an iteration into
 * `accs` accumulators with `loads` of its operands reloaded from workgroup memory; `oneAnSm`: the workgroup declares
 * 32 KB or more (all written), so that one runs on an SM at a time (two of 28 KB do not fit, `--occupancy`); `gemm`:
 * the operands loaded as the tensor GEMM's k loop loads them (subgroups of 4 x 2 result matrices, 4 along N; rows of
 * stride 72, four 16-k slices an iteration: 6 loads per 8 products); `barriers`: two workgroup barriers per four
 * 16-k slices, as the GEMM's one-buffer k64 step.
 */
interface MmaPeakVariant {
  subgroups: number;
  accs: number;
  loads: number;
  oneAnSm?: boolean;
  gemm?: boolean;
  barriers?: boolean;
}

/** The `--mma-peak` kernel of variant `v` (null where its workgroup memory exceeds `maxBytes`), and its label. */
function mmaPeakKernel(
  v: MmaPeakVariant,
  sgSize: number,
  iters: number,
  products: number,
  maxBytes: number,
): { kernel: Kernel; label: string } | null {
  const STRIDE = 72; // the GEMM's staged rows at k64: 64 + 8 f16 of padding
  const { subgroups, accs, loads } = v;
  // const: operand o at o * 256, 16 rows of stride 32 (overlapping: the values do not matter), shifted by 16 every
  // other slice so that reloads cannot be hoisted. gemm: left i at rows sm + 16 i, right j at the weight rows
  // sn + 16 j, k slice q, shifted by 8 every other iteration (rows stay 16-byte aligned).
  const tileM = 64 * Math.ceil(subgroups / 4), tileN = 128;
  const gemmHalves = (tileM + tileN) * STRIDE;
  const size = Math.max(v.gemm ? gemmHalves : 5 * 256 + 16 * 32 + 16, v.oneAnSm ? 16384 : 0);
  if (size * 2 > maxBytes) return null;
  const operand = (o: number, q: number) =>
    v.gemm
      ? (o < 4
        ? `subgroupMatrixLoad<Left, row_major>(&tile, (sm + ${o * 16}u) * ${STRIDE}u + ${q * 16}u + sh, ${STRIDE}u)`
        : `subgroupMatrixLoad<Right, col_major>(&tile, ${tileM * STRIDE}u + (sn + ${(o - 4) * 16}u) * ${STRIDE}u + ${
          q * 16
        }u + sh, ${STRIDE}u)`)
      : `subgroupMatrixLoad<${o < 4 ? "Left, row_major" : "Right, col_major"}>(&tile, ${
        o * 256
      }u + ((it >> ${q}u) & 1u) * 16u, 32u)`;
  const name = (o: number) => (o < 4 ? `a${o}` : `b${o - 4}`);
  const slice = (q: number) =>
    [
      ...range(loads).map((l) => `    ${name(l % 6)} = ${operand(l % 6, q)};`),
      ...range(products).map((m) =>
        `    acc${m % accs} = subgroupMatrixMultiplyAccumulate(a${m % 4}, b${m >> 2}, acc${m % accs});`
      ),
    ].join("\n");
  const label = `${subgroups} subgroups, ${accs} accumulators, ${loads} operand loads per ${products} products` +
    `${v.gemm ? " at the GEMM's offsets" : ""}${v.barriers ? ", 2 barriers per 4 slices" : ""}${
      v.oneAnSm ? ", one workgroup an SM" : ""
    }`;
  const kernel = {
    name: `mma_peak_s${subgroups}_acc${accs}_loads${loads}${v.gemm ? "_gemm" : ""}${v.barriers ? "_bar" : ""}${
      v.oneAnSm ? "_one" : ""
    }`,
    source: `
alias Left = subgroup_matrix_left<f16, 16, 16>;
alias Right = subgroup_matrix_right<f16, 16, 16>;
alias Result = subgroup_matrix_result<f32, 16, 16>;
@group(0) @binding(0) var<storage, read> ctl: array<u32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
var<workgroup> tile: array<f16, ${size}>;
@compute @workgroup_size(${sgSize * subgroups})
fn main(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wid: vec3<u32>) {
if (gated_off()) { return; }
for (var i = t; i < ${size}u; i += ${sgSize * subgroups}u) { tile[i] = f16(f32(i % 7u) * 0.0009765625); }
workgroupBarrier();
let sg = t / ${sgSize}u;
let sm = (sg / 4u) * 64u;
let sn = (sg % 4u) * 32u;
var it = 0u;
var sh = 0u;
${range(6).map((o) => `  var ${name(o)} = ${operand(o, 0)};`).join("\n")}
${range(accs).map((c) => `  var acc${c} = Result();`).join("\n")}
for (it = 0u; it < ${iters}u; it += 4u) {
  sh = ((it >> 2u) & 1u) * 8u;
${range(4).map(slice).join("\n")}
${v.barriers ? "    workgroupBarrier();\n    workgroupBarrier();" : ""}
}
${
      range(accs).map((c) =>
        `  subgroupMatrixStore<row_major>(&y, ((wid.x * ${subgroups}u + sg) * ${products}u + ${c}u) * 256u, acc${c}, 16u);`
      ).join("\n")
    }
}
`,
  };
  return { kernel, label };
}

/**
 * The subgroup-matrix multiply-accumulate rate this device and driver sustain (`--mma-peak`, Dawn): every subgroup
 * multiply-accumulates 16x16x16 f16 -> f32, 8 products an iteration, ITERS iterations, from matrices in workgroup
 * memory (MmaPeakVariant says how). The first rows are the ceiling any GEMM written with these builtins can reach
 * here (several workgroups an SM); the one-an-SM rows are what a GEMM whose staged tiles fill an SM's workgroup memory
 * can reach, with the GEMM's loads and barriers added one at a time.
 */
async function benchMmaPeak(): Promise<void> {
  const unsupported = tensorGemmUnsupported(gpu);
  if (unsupported) {
    console.log(`mma_peak: not run (${unsupported})`);
    return;
  }
  const sgSize = tensorSubgroupSize(gpu), iters = 1024, workgroups = SMS * 8, products = 8;
  const variants: MmaPeakVariant[] = [
    { subgroups: 8, accs: 8, loads: 0 },
    { subgroups: 8, accs: 8, loads: 6 },
    { subgroups: 8, accs: 8, loads: 0, oneAnSm: true },
    { subgroups: 8, accs: 8, loads: 6, oneAnSm: true },
    { subgroups: 12, accs: 8, loads: 6, oneAnSm: true },
    { subgroups: 16, accs: 8, loads: 6, oneAnSm: true },
    { subgroups: 8, accs: 8, loads: 6, oneAnSm: true, barriers: true },
    { subgroups: 8, accs: 8, loads: 6, oneAnSm: true, gemm: true },
    { subgroups: 8, accs: 8, loads: 6, oneAnSm: true, gemm: true, barriers: true },
    { subgroups: 12, accs: 8, loads: 6, oneAnSm: true, gemm: true, barriers: true },
  ];
  const maxSubgroups = Math.max(...variants.map((v) => v.subgroups));
  const y = gpu.buffer("mma peak y", workgroups * maxSubgroups * products * 256 * 4);
  for (const v of variants) {
    const built = mmaPeakKernel(v, sgSize, iters, products, gpu.device.limits.maxComputeWorkgroupStorageSize);
    if (!built) continue;
    const { kernel, label } = built;
    const d = gpu.dispatch(kernel, {}, [ctl, y], workgroups);
    const us = await medianMs([d], 1) * 1000;
    const flops = workgroups * v.subgroups * iters * products * 2 * 16 ** 3;
    console.log(`mma_peak ${label}: ${us.toFixed(1)} us, ${(flops / us / 1e6).toFixed(1)} TFLOP/s`);
  }
  y.destroy();
}

const bw = await measureCopyBandwidth(gpu);
console.log(
  `copy: kernel ${bw.kernel_copy_gbps.toFixed(0)} GB/s, DMA ${bw.dma_copy_gbps.toFixed(0)} GB/s (read+write)`,
);
// a bad flag (--size, --shapes, ...) found once a benchmark reads it: its one sentence, exit 2
const code = await runEntryPoint(async () => {
  if (args.matvec) await benchMatvec();
  if (args.chain) await benchMatvecChain();
  if (args.overhead) await benchOverhead();
  if (args.attention) await benchAttention();
  if (args["attention-probe"]) await benchAttentionProbe();
  if ((args.attention && !args.variants) || args.prefill) await benchPrefillAttention();
  if (args.gemm) await benchGemm();
  if (args["gemm-probe"]) await benchGemmProbe();
  if (args["mma-peak"]) await benchMmaPeak();
  if (args["gemm-waves"]) await benchGemmWaves();
  if (args.occupancy) await benchOccupancy();
  return 0;
});
if (code !== 0) Deno.exit(code);
const bandwidth = bw;
if (args.json) {
  await Deno.writeTextFile(args.json, JSON.stringify({ device: gpu.description, bandwidth, results }, null, 1));
}
