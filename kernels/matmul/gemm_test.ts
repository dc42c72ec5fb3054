/**
 * Tests of the generated tiled GEMM (`gemm.ts`) against the reference: awkward M, N and K, both epilogues, every
 * k-loop pipeline and tuning knob, the 2-D grid, gating, rejected shapes and mutants that break it deterministically.
 * @module
 */

import { packBf16, roundBf16Array } from "../bf16.ts";
import {
  gemm,
  GEMM_DEFAULT_TILES,
  GEMM_PIPELINES,
  gemmKernelFor,
  gemmReference,
  type GemmTiles,
  gemmWorkgroupBytes,
} from "./gemm.ts";
import { Epilogue } from "./matvec.ts";
import type { Gpu, Kernel } from "../runtime.ts";
import { assertCaught, assertClose, ctlBuffer, gpuTest, mutate, poisoned, Rng } from "../testing/harness.ts";
import type { ErrorReport } from "../testing/harness.ts";

// As in matvec_test.ts: the weights are exactly bf16 on both sides and the only difference is f32 (one fused
// multiply-add chain per output, in k order) vs f64 accumulation over K products of O(1) terms, whose error grows like
// sqrt(K) * 2^-24 * |term|: below 1e-4 even at K = 4096, below 1e-5 at the K <= 264 used here. atol 2e-4 + rtol 1e-4
// leaves a wide margin; a wrong index, a dropped k tile or a stale tile moves outputs by O(1).
const TOL = { atol: 2e-4, rtol: 1e-4 };

// Tiles every WebGPU adapter can run: this CPU adapter grants more than the default 16384 bytes of workgroup memory.
const PORTABLE_BYTES = 16384;

interface CheckOptions extends GemmTiles {
  epilogue?: number;
  kernel?: Kernel;
  gated?: boolean;
  /** Control block ACTIVE slot (with `gated`). */
  active?: number;
}

/** Runs the GEMM on seeded inputs into a NaN-poisoned output and returns what it wrote and the reference. */
async function runGemm(gpu: Gpu, rows: number, k: number, n: number, opts: CheckOptions = {}) {
  const rng = new Rng(rows * 1_000_003 + k * 1009 + n + (opts.epilogue ?? 0) * 7);
  const nw = opts.epilogue === Epilogue.SWIGLU ? 2 * n : n;
  const w = roundBf16Array(rng.normals(nw * k, 1 / Math.sqrt(k)));
  const x = rng.normals(rows * k);
  const { kernel, active, ...args } = opts;
  if (gemmWorkgroupBytes(args, args.epilogue) > PORTABLE_BYTES) throw new Error(`${JSON.stringify(args)} not portable`);
  const ctl = ctlBuffer(gpu, { ACTIVE: active ?? 1 });
  const wb = gpu.upload("w", packBf16(w, k)), xb = gpu.upload("x", x), y = poisoned(gpu, rows * n);
  gpu.run([gemm(gpu, { ctl, weight: wb, x: xb, y, rows, k, n, ...args }, kernel)]);
  const got = await gpu.readF32(y, rows * n);
  for (const b of [ctl, wb, xb, y]) b.destroy();
  return { got, want: gemmReference(w, x, rows, k, n, opts.epilogue) };
}

async function checkGemm(gpu: Gpu, rows: number, k: number, n: number, opts: CheckOptions = {}): Promise<ErrorReport> {
  const { got, want } = await runGemm(gpu, rows, k, n, opts);
  const { kernel: _, ...shown } = opts;
  return assertClose(got, want, TOL, `gemm rows=${rows} K=${k} N=${n} ${JSON.stringify(shown)}`);
}

const ROWS = [17, 33, 64, 130];
const COLS = [1, 7, 65, 300];
const KS = [8, 24, 264];

gpuTest("gemm matches the reference for every M x N of the awkward sizes", async (gpu) => {
  // Every (M, N) pair, K cycling through 8 (one partial k tile), 24 (a full and a partial one) and 264 (16.5 tiles).
  let i = 0;
  for (const rows of ROWS) for (const n of COLS) await checkGemm(gpu, rows, KS[i++ % KS.length], n);
});

gpuTest("gemm accumulates over the 7B's d_model (K = 4096)", async (gpu) => {
  await checkGemm(gpu, 33, 4096, 65);
  await checkGemm(gpu, 33, 4096, 65, { pipeline: "serial" });
});

gpuTest("gemm SwiGLU epilogue computes silu(gate) * up", async (gpu) => {
  // Every M, N and K at least once (each shape is a pipeline to compile, slow on a CPU adapter).
  for (const [rows, k, n] of [[17, 8, 1], [33, 24, 7], [64, 264, 65], [130, 8, 300], [17, 264, 300], [130, 24, 65]]) {
    await checkGemm(gpu, rows, k, n, { epilogue: Epilogue.SWIGLU });
  }
});

gpuTest("gemm also handles 1..16 rows", async (gpu) => {
  for (const rows of [1, 5, 16]) await checkGemm(gpu, rows, 24, 65);
});

gpuTest("gemm k-loop pipelines (serial, prefetch, double buffer) agree with the reference", async (gpu) => {
  // 32 x 32 tiles, so the double buffer fits 16 KiB with SWIGLU; K = 264 is 33 k tiles of 8 and 16.5 tiles of 16,
  // K = 8 a single one (the prefetch of the next tile reads nothing), K = 24 a full and a partial tile of 16.
  for (const pipeline of GEMM_PIPELINES) {
    for (const tileK of [8, 16]) {
      const tiles: GemmTiles = { pipeline, tileK, threadsM: 8, threadsN: 8, blockM: 4, blockN: 4 };
      await checkGemm(gpu, 130, 264, 65, tiles);
      await checkGemm(gpu, 33, tileK === 8 ? 8 : 24, 300, tiles);
      await checkGemm(gpu, 64, 264, 33, { ...tiles, epilogue: Epilogue.SWIGLU });
    }
  }
});

gpuTest("gemm tuning knobs keep it correct", async (gpu) => {
  const variants: GemmTiles[] = [
    { tileK: 8, threadsM: 8, threadsN: 8, blockM: 1, blockN: 1 },
    { tileK: 24, threadsM: 4, threadsN: 16, blockM: 8, blockN: 2 },
    { tileK: 16, threadsM: 8, threadsN: 8, blockM: 8, blockN: 8 },
    { tileK: 32, threadsM: 16, threadsN: 4, blockM: 3, blockN: 5, pipeline: "serial" },
    { tileK: 8, threadsM: 1, threadsN: 64, blockM: 2, blockN: 1 },
    { tileK: 32, threadsM: 16, threadsN: 8, blockM: 2, blockN: 4 },
    { tileK: 16, threadsM: 16, threadsN: 8, blockM: 2, blockN: 2, pipeline: "double" },
    { tileK: 8, threadsM: 8, threadsN: 16, blockM: 4, blockN: 2, pipeline: "double" },
  ];
  for (const tiles of variants) {
    await checkGemm(gpu, 33, 264, 65, tiles);
    await checkGemm(gpu, 130, 24, 7, { ...tiles, epilogue: Epilogue.SWIGLU });
  }
});

Deno.test("gemm default tiles fit the WebGPU default of 16384 bytes of workgroup memory", () => {
  for (const epilogue of [Epilogue.PLAIN, Epilogue.SWIGLU]) {
    const bytes = gemmWorkgroupBytes(GEMM_DEFAULT_TILES, epilogue);
    if (bytes > PORTABLE_BYTES) throw new Error(`default tiles need ${bytes} bytes with epilogue ${epilogue}`);
  }
});

Deno.test("gemm kernels keep accumulators and staged operands out of function-scope arrays", () => {
  // A function-scope array indexed in a loop can be placed in local memory (10x slower on an H100): the only arrays
  // are the bindings and the workgroup staging buffers.
  for (const pipeline of GEMM_PIPELINES) {
    for (const epilogue of [Epilogue.PLAIN, Epilogue.SWIGLU]) {
      const { name, source } = gemmKernelFor({ pipeline, epilogue, blockM: 8, blockN: 8 });
      const arrays = source.split("\n").filter((l) => l.includes("array<"));
      const stray = arrays.filter((l) => !/^(@group\(0\) @binding\(\d\) var<storage|var<workgroup>)/.test(l));
      if (arrays.length !== 6 || stray.length > 0) throw new Error(`${name} declares arrays: ${stray.join(" | ")}`);
    }
  }
});

gpuTest("gemm covers more than 65535 workgroups (2-D grid)", async (gpu) => {
  // 1 x 1 tiles: 17 x 3900 = 66300 workgroups, more than one grid dimension holds.
  const tiles = { threadsM: 1, threadsN: 1, blockM: 1, blockN: 1, tileK: 8 };
  await checkGemm(gpu, 17, 8, 3900, tiles);
});

gpuTest("gemm built GATED writes nothing while ACTIVE is 0 and computes while it is 1", async (gpu) => {
  const { got } = await runGemm(gpu, 17, 24, 7, { gated: true, active: 0 });
  if (!got.every(Number.isNaN)) throw new Error("a gated-off gemm wrote its output");
  await checkGemm(gpu, 17, 24, 7, { gated: true, active: 1 });
});

gpuTest("gemm rejects shapes and tiles it cannot handle", (gpu) => {
  const ctl = ctlBuffer(gpu);
  const bad: [string, Partial<Parameters<typeof gemm>[1]>, Kernel?][] = [
    ["K not a multiple of 8", { k: 12 }],
    ["no rows", { rows: 0 }],
    ["tileK not a multiple of 8", { tileK: 12 }],
    ["block too large", { blockN: 9 }],
    ["too many threads", { threadsM: 64, threadsN: 64 }],
    ["too much workgroup memory", { tileK: 512, blockM: 8, blockN: 8 }],
    ["an unknown pipeline", { pipeline: "async" as GemmTiles["pipeline"] }],
    ["a kernel generated for other tiles", {}, gemmKernelFor({ blockM: 2 })],
    ["a kernel generated for the other epilogue", { epilogue: Epilogue.SWIGLU }, gemmKernelFor()],
  ];
  for (const [what, change, kernel] of bad) {
    let threw = false;
    try {
      gemm(gpu, { ctl, weight: ctl, x: ctl, y: ctl, rows: 17, k: 16, n: 4, ...change }, kernel);
    } catch {
      threw = true;
    }
    if (!threw) throw new Error(`gemm accepted ${what}`);
  }
  ctl.destroy();
  return Promise.resolve();
});

gpuTest("gemm checks catch broken kernels", async (gpu) => {
  // [tiles, from, to]: each mutation applies to the plain and SwiGLU kernels of the tiles where `from` occurs. Every
  // mutant computes a wrong result in every schedule, with no data race: a dropped barrier is a race that a GPU may
  // not expose (an H200 ran the serial pipeline without its "tiles consumed" barrier correctly), so it proves nothing.
  const small: GemmTiles = { threadsM: 8, threadsN: 8 }; // 32 x 32: the double buffer fits 16 KiB
  const cases: [GemmTiles, string, string][] = [
    [{}, "k0 < K; k0 += TILE_K", "k0 + TILE_K < K; k0 += TILE_K"], // last (partial) k tile dropped
    [{}, "bf16_lo(a), bf16_hi(a)", "bf16_hi(a), bf16_lo(a)"], // swapped bf16 halves
    [{}, "return x[s.src + k0 / 4u]", "return x[s.src + k0 / 8u]"], // x tiles read at the weights' k offset
    [{}, "select(n, n + N, r >= TILE_N)", "select(n, n + TILE_N, r >= TILE_N)"], // up rows read from the wrong place
    [{}, "a1_2 = fma4(xv, w2, a1_2)", "a1_2 = fma4(xv, w1, a1_2)"], // one register of the block takes a wrong column
    [{}, "put(m + 16u, n + 32u, a1_2", "put(m + 16u, n + 16u, a1_2"], // one register stored to a wrong column
    [{}, "px0 = load_x(sx0, k0 + TILE_K)", "px0 = load_x(sx0, k0)"], // prefetches the current x tile again
    [{ pipeline: "serial" }, "pw0 = load_w(sw0, k0);", "pw0 = load_w(sw0, k0 + TILE_K);"], // weights a k tile ahead
    [{ ...small, pipeline: "double" }, "stage_w(sw0.dst, pw0)", "stage_w(WS_LEN + sw0.dst, pw0)"], // first tile, wrong buffer
    [{ ...small, pipeline: "double" }, "cur = next;", "cur = 0u;"], // buffers never swapped: the first k tile every step
  ];
  for (const [tiles, from, to] of cases) {
    const kernels = [Epilogue.PLAIN, Epilogue.SWIGLU]
      .map((epilogue) => ({ epilogue, kernel: gemmKernelFor({ ...tiles, epilogue }) }))
      .filter(({ kernel }) => kernel.source.includes(from));
    if (kernels.length === 0) throw new Error(`"${from}" occurs in no kernel of ${JSON.stringify(tiles)}`);
    await assertCaught(async () => {
      for (const { epilogue, kernel } of kernels) {
        const mutant = mutate(kernel, from, to);
        await checkGemm(gpu, 33, 264, 65, { ...tiles, epilogue, kernel: mutant });
      }
    }, `${JSON.stringify(tiles)}: ${from} -> ${to}`);
  }
});
