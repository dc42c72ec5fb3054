/**
 * Tests of the generated matvec (`matvec.ts`) against the reference: every row count and rows per thread, awkward
 * K and N, both epilogues, the post-norm prologue (recomputed and staged), the QK statistics, the row sums by subgroup
 * shuffles against the tree, and mutants.
 * @module
 */

import { packBf16, roundBf16Array } from "../bf16.ts";
import {
  Epilogue,
  matvec,
  MATVEC_INTERLEAVE_ENV,
  matvecGroupRows,
  matvecKernelFor,
  matvecPostNormReference,
  type MatvecPrologue,
  matvecReference,
  qkStatsLayout,
  qkStatsReference,
} from "./matvec.ts";
import type { Gpu, Kernel } from "../runtime.ts";
import { subgroupWidth } from "../reduce.ts";
import { assertUserError } from "../../tests/model/util.ts";
import { assertCaught, assertClose, ctlBuffer, gpuTest, mutate, poisoned, Rng } from "../testing/harness.ts";
import type { ErrorReport } from "../testing/harness.ts";

// The weights are exactly bf16 on both sides; the only difference is f32 vs f64 accumulation over K products of
// O(1) terms, whose error grows like sqrt(K) * 2^-24 * |term|: below 1e-4 at K = 4096. atol 2e-4 + rtol 1e-4 leaves
// a 2x margin; a wrong index or a dropped chunk moves outputs by O(1).
const TOL = { atol: 2e-4, rtol: 1e-4 };

async function checkMatvec(
  gpu: Gpu,
  rows: number,
  k: number,
  n: number,
  opts: {
    epilogue?: number;
    kernel?: Kernel;
    rowsPerWorkgroup?: number;
    workgroupSize?: number;
    rowsPerThread?: number;
    maxWorkgroups?: number;
    subgroups?: boolean;
    interleave?: number;
  } = {},
): Promise<ErrorReport> {
  const rng = new Rng(rows * 1_000_003 + k * 1009 + n);
  const nw = opts.epilogue === Epilogue.SWIGLU ? 2 * n : n;
  const w = roundBf16Array(rng.normals(nw * k, 1 / Math.sqrt(k)));
  const x = rng.normals(rows * k);
  const ctl = ctlBuffer(gpu);
  const wb = gpu.upload("w", packBf16(w, k)), xb = gpu.upload("x", x), y = poisoned(gpu, rows * n);
  gpu.run([matvec(gpu, { ctl, weight: wb, x: xb, y, rows, k, n, ...opts }, opts.kernel)]);
  const got = await gpu.readF32(y, rows * n);
  for (const b of [ctl, wb, xb, y]) b.destroy();
  const want = matvecReference(w, x, rows, k, n, opts.epilogue);
  return assertClose(got, want, TOL, `matvec rows=${rows} K=${k} N=${n} ${JSON.stringify(opts)}`);
}

gpuTest("matvec matches the reference for one row at awkward sizes", async (gpu) => {
  for (const [k, n] of [[8, 1], [8, 7], [24, 9], [296, 301], [2056, 13], [4096, 33]]) await checkMatvec(gpu, 1, k, n);
});

gpuTest("matvec handles 2..16 input rows (speculative verification)", async (gpu) => {
  for (const rows of [2, 3, 5, 16]) await checkMatvec(gpu, rows, 264, 37);
  for (const rows of [4, 7]) await checkMatvec(gpu, rows, 2056, 9, { epilogue: Epilogue.SWIGLU });
});

gpuTest("matvec SwiGLU epilogue computes silu(gate) * up", async (gpu) => {
  for (const [rows, k, n] of [[1, 8, 1], [1, 296, 41], [4, 520, 19]]) {
    await checkMatvec(gpu, rows, k, n, { epilogue: Epilogue.SWIGLU });
  }
});

gpuTest("matvec with 2 and 4 output rows per thread handles N not a multiple of them", async (gpu) => {
  for (const rowsPerThread of [2, 4]) {
    for (const [rows, k, n] of [[1, 8, 1], [1, 1064, 37], [3, 264, 6], [4, 520, 19]]) {
      await checkMatvec(gpu, rows, k, n, { rowsPerThread });
      await checkMatvec(gpu, rows, k, n, { rowsPerThread, epilogue: Epilogue.SWIGLU });
    }
  }
});

gpuTest("matvec tuning knobs keep it correct", async (gpu) => {
  for (const [rowsPerWorkgroup, workgroupSize] of [[1, 64], [4, 128], [16, 256], [2, 512]]) {
    await checkMatvec(gpu, 2, 1032, 35, { rowsPerWorkgroup, workgroupSize });
  }
});

gpuTest("matvec with fewer workgroups than row groups strides over them", async (gpu) => {
  for (const maxWorkgroups of [1, 3, 7]) {
    await checkMatvec(gpu, 1, 264, 301, { maxWorkgroups });
    await checkMatvec(gpu, 3, 1064, 37, { maxWorkgroups, rowsPerThread: 2, epilogue: Epilogue.SWIGLU });
  }
});

gpuTest("matvec rejects K not a multiple of 8 and too many rows", (gpu) => {
  const ctl = ctlBuffer(gpu);
  let thrown = 0;
  for (const [rows, k] of [[1, 12], [17, 16]]) {
    try {
      matvec(gpu, { ctl, weight: ctl, x: ctl, y: ctl, rows, k, n: 4 });
    } catch {
      thrown++;
    }
  }
  ctl.destroy();
  if (thrown !== 2) throw new Error("matvec accepted a shape it cannot handle");
  return Promise.resolve();
});

gpuTest("matvec checks catch broken kernels", async (gpu) => {
  const cases: [string, string][] = [
    ["bf16_lo(p.w), bf16_hi(p.w)", "bf16_hi(p.w), bf16_lo(p.w)"], // swapped halves
    ["for (; c < k8; c += tpr)", "for (; c + 1u < k8; c += tpr)"], // a row's last chunk dropped when K/8 % 4 != 0
    ["a0_0 = a0_0 / (1.0 + exp(-a0_0)) * u0_0", "a0_0 = a0_0 * u0_0"], // no SiLU
    ["a0_1 += dot(wl0, xa)", "a0_0 += dot(wl0, xa)"], // input rows mixed
    ["u1_0 += dot(ul1, xa) + dot(uh1, xb)", "u1_0 += dot(ul0, xa) + dot(uh1, xb)"], // up rows of a thread mixed
    ["y[1u * N + n0 + 1u] = a1_1", "y[1u * N + n0 + 1u] = a0_1"], // output rows of a thread mixed
    ["s > 0u; s /= 2u", "s > 1u; s /= 2u"], // last level of the reduction tree dropped
    ["g += nwg.x * nwg.y", "g += 2u * nwg.x * nwg.y"], // grid stride skips row groups
  ];
  for (const [from, to] of cases) {
    const kernel = mutate(matvecKernelFor(2, 2), from, to);
    await assertCaught(async () => {
      // K = 1064: 133 chunks per row, so both the unrolled loop and the tail loop run.
      await checkMatvec(gpu, 2, 1064, 37, { kernel, rowsPerThread: 2, maxWorkgroups: 3 });
      await checkMatvec(gpu, 2, 1064, 19, { kernel, rowsPerThread: 2, epilogue: Epilogue.SWIGLU });
    }, `${from} -> ${to}`);
  }
});

gpuTest(
  "matvec row sums by subgroup shuffles match the tree's, narrower and wider row groups than a subgroup",
  async (gpu) => {
    const width = subgroupWidth(gpu);
    if (width === 0) return; // no subgroups: the tree is the only path (tested above)
    // Threads per row group (WG / ROWS) below, at and above the shuffle width: one shuffle tree, or several and the
    // partials through workgroup memory.
    for (const [rowsPerWorkgroup, workgroupSize] of [[8, 8 * Math.max(1, width / 2)], [4, 4 * width], [1, 4 * width]]) {
      for (const [rows, epilogue] of [[1, Epilogue.PLAIN], [4, Epilogue.SWIGLU], [3, Epilogue.PLAIN]]) {
        const knobs = { rowsPerWorkgroup, workgroupSize, rowsPerThread: 2, epilogue };
        await checkMatvec(gpu, rows, 1064, 37, { ...knobs, subgroups: true });
        await checkMatvec(gpu, rows, 1064, 37, { ...knobs, subgroups: false });
      }
    }
    const cases: [string, string][] = [
      ["st < min(span, SG_LANES); st *= 2u", "st < min(span, SG_LANES) / 2u; st *= 2u"], // a shuffle level dropped
      ["i < span / SG_LANES; i++", "i + 1u < span / SG_LANES; i++"], // a subgroup's partial dropped
    ];
    for (const [from, to] of cases) {
      const kernel = mutate(matvecKernelFor(2, 2, "none", false, width), from, to);
      await assertCaught(async () => {
        // 4 * width threads per row group: every shuffle level and several partials.
        await checkMatvec(gpu, 2, 1064, 37, {
          kernel,
          rowsPerThread: 2,
          rowsPerWorkgroup: 1,
          workgroupSize: 4 * width,
        });
      }, `${from} -> ${to}`);
    }
  },
);

gpuTest(
  "matvec with interleaved row groups matches the reference, both reductions, and its checks catch mutants",
  async (gpu) => {
    const width = subgroupWidth(gpu);
    const modes = width > 0 ? [true, false] : [false];
    // (row groups, threads): a row group's lanes within one subgroup, and spread over several subgroups
    for (const subgroups of modes) {
      for (const [interleave, rowsPerWorkgroup, workgroupSize] of [[2, 4, 32], [4, 4, 128], [8, 8, 256], [4, 8, 64]]) {
        for (const [rows, epilogue, rowsPerThread] of [[1, Epilogue.PLAIN, 4], [4, Epilogue.SWIGLU, 2], [3, 0, 1]]) {
          const knobs = { interleave, rowsPerWorkgroup, workgroupSize, rowsPerThread, epilogue, subgroups };
          await checkMatvec(gpu, rows, 1064, 37, knobs);
          await checkMatvec(gpu, rows, 1064, 37, { ...knobs, maxWorkgroups: 2 });
        }
      }
    }
    const cases: [string, string][] = [
      ["let rg = (t / (IL * tpr)) * IL + t % IL;", "let rg = t / tpr;"], // threads dealt as if not interleaved
      ["let lane = (t / IL) % tpr;", "let lane = t % tpr;"],
      ["red[t] += red[t + s * IL]", "red[t] += red[t + s]"], // the tree sums another row group's lanes
    ];
    for (const [from, to] of cases) {
      const kernel = mutate(matvecKernelFor(2, 2, "none", false, 0, 4), from, to);
      await assertCaught(
        () => checkMatvec(gpu, 2, 1064, 37, { kernel, rowsPerThread: 2, rowsPerWorkgroup: 4, workgroupSize: 128 }),
        `${from} -> ${to}`,
      );
    }
    if (width >= 8) {
      const kernel = mutate(matvecKernelFor(2, 2, "none", false, width, 4), "var st = IL; st <", "var st = 1u; st <");
      await assertCaught(
        () => checkMatvec(gpu, 2, 1064, 37, { kernel, rowsPerThread: 2, rowsPerWorkgroup: 4, workgroupSize: 128 }),
        "shuffles across row groups",
      );
    }
    // the defaults: interleaved from 2 rows where N <= K (o, down: measured faster in a verify pass), else not
    const ctl = ctlBuffer(gpu);
    const label = (rows: number, n: number, k: number) =>
      matvec(gpu, { ctl, weight: ctl, x: ctl, y: ctl, rows, k, n }).label;
    const labels = [label(4, 4096, 11008), label(1, 4096, 11008), label(4, 12288, 4096)];
    ctl.destroy();
    if (!labels[0].includes("_i4") || labels.slice(1).some((l) => l.includes("_i"))) {
      throw new Error(`default interleave: ${labels}`);
    }
    Deno.env.set(MATVEC_INTERLEAVE_ENV, "3");
    const bad = ctlBuffer(gpu);
    try {
      await assertUserError(() => matvec(gpu, { ctl: bad, weight: bad, x: bad, y: bad, rows: 1, k: 8, n: 4 }), [
        `${MATVEC_INTERLEAVE_ENV}=3 is not`,
      ]);
    } finally {
      Deno.env.delete(MATVEC_INTERLEAVE_ENV);
      bad.destroy();
    }
  },
);

/** The matvec with the post-norm prologue against the composed reference: y, and x_eff stored to `out`. */
async function checkPostNorm(
  gpu: Gpu,
  rows: number,
  k: number,
  n: number,
  opts: {
    staged?: boolean;
    epilogue?: number;
    kernel?: Kernel;
    maxWorkgroups?: number;
    rowsPerThread?: number;
    workgroupSize?: number;
  } = {},
): Promise<void> {
  const rng = new Rng(rows * 7_000_003 + k * 3 + n);
  const nw = opts.epilogue === Epilogue.SWIGLU ? 2 * n : n;
  const w = roundBf16Array(rng.normals(nw * k, 1 / Math.sqrt(k)));
  const x = rng.normals(rows * k), proj = rng.normals(rows * k, 3), normW = rng.normals(k, 0.5, 1);
  const ctl = ctlBuffer(gpu);
  const b = {
    w: gpu.upload("w", packBf16(w, k)),
    x: gpu.upload("x", x),
    proj: gpu.upload("proj", proj),
    normW: gpu.upload("norm w", normW),
    out: poisoned(gpu, rows * k, "x out"),
    y: poisoned(gpu, rows * n),
  };
  const postNorm = { proj: b.proj, weight: b.normW, out: b.out, eps: 1e-6 };
  try {
    gpu.run([matvec(gpu, { ctl, weight: b.w, x: b.x, y: b.y, rows, k, n, postNorm, ...opts }, opts.kernel)]);
    const want = matvecPostNormReference(w, x, proj, normW, 1e-6, rows, k, n, opts.epilogue);
    const what = `matvec+postnorm rows=${rows} K=${k} N=${n} ${JSON.stringify({ ...opts, kernel: opts.kernel?.name })}`;
    // x_eff: an RMSNorm (rmsnorm_test.ts's tolerance) added to the residual
    assertClose(await gpu.readF32(b.out, rows * k), want.xOut, { atol: 1e-6, rtol: 1e-5 }, `${what} x_out`);
    assertClose(await gpu.readF32(b.y, rows * n), want.y, TOL, `${what} y`);
  } finally {
    for (const buf of [ctl, ...Object.values(b)]) buf.destroy();
  }
}

gpuTest("matvec with the post-norm prologue matches RMSNorm + residual then the product", async (gpu) => {
  for (const staged of [false, true]) {
    for (const [rows, k, n] of [[1, 8, 1], [1, 296, 301], [1, 2056, 13], [3, 264, 37], [5, 520, 19], [16, 64, 9]]) {
      await checkPostNorm(gpu, rows, k, n, { staged });
      if (rows < 5) await checkPostNorm(gpu, rows, k, n, { staged, epilogue: Epilogue.SWIGLU });
    }
  }
});

gpuTest("matvec post-norm prologue with grid caps and knobs (x_out written once, by workgroup 0)", async (gpu) => {
  for (const maxWorkgroups of [1, 3, 1000]) {
    await checkPostNorm(gpu, 2, 1064, 37, { maxWorkgroups, rowsPerThread: 2 });
    await checkPostNorm(gpu, 1, 264, 301, { maxWorkgroups, staged: true, workgroupSize: 64 });
  }
});

gpuTest("matvec post-norm checks catch broken kernels", async (gpu) => {
  const cases: [MatvecPrologue, string, string][] = [
    ["recompute", "inv1 = inverseSqrt(total[1] / f32(K) + EPS)", "inv1 = inverseSqrt(total[0] / f32(K) + EPS)"],
    ["staged", "for (var s = WG / 2u; s > 0u; s /= 2u)", "for (var s = WG / 4u; s > 0u; s /= 2u)"],
    ["staged", "xs[1u * k4 + c] = v;", "xs[1u * k4 + c] = v * 0.5;"],
    [
      "recompute",
      "proj[0u * k4 + 2u * c0 + 1u] * inv0 * nw[2u * c0 + 1u]",
      "proj[0u * k4 + 2u * c0] * inv0 * nw[2u * c0]",
    ],
    ["staged", "if (writer) { x_out[1u * k4 + c] = v; }", ""],
  ];
  for (const [prologue, from, to] of cases) {
    const kernel = mutate(matvecKernelFor(2, 2, prologue), from, to);
    await assertCaught(async () => {
      await checkPostNorm(gpu, 2, 1064, 37, { kernel, rowsPerThread: 2, maxWorkgroups: 3 });
    }, `${prologue}: ${from} -> ${to}`);
  }
});

// QK statistics: each partial is a sum of squares of up to groupRows f32 outputs y (each within TOL of the f64
// product), added in f32 in another order than the reference's f64 sum: |y^2 error| <= 2 |y| (2e-4 + 1e-4 |y|) per
// term, so atol 2e-3 (about 8 outputs of unit size, the test's scale) + rtol 2e-4 on the partial. A wrong slot, a
// missing group or a k partial added to q moves a partial by O(1) (or leaves the NaN poison).
const STATS_TOL = { atol: 2e-3, rtol: 2e-4 };

/**
 * The matvec with `qkStats` over q and k of width d (n = 3d plus `extra` outputs): y as without it, every slot of the
 * layout against the reference, and every other slot of the partials untouched (NaN poison).
 */
async function checkQkStats(
  gpu: Gpu,
  rows: number,
  k: number,
  d: number,
  opts: {
    extra?: number;
    kernel?: Kernel;
    rowsPerWorkgroup?: number;
    workgroupSize?: number;
    rowsPerThread?: number;
    maxWorkgroups?: number;
    postNorm?: boolean;
  } = {},
): Promise<void> {
  const { extra, postNorm, ...knobs } = opts;
  const n = 3 * d + (extra ?? 0);
  const rng = new Rng(rows * 3_000_017 + k * 31 + d);
  const w = roundBf16Array(rng.normals(n * k, 1 / Math.sqrt(k)));
  const x = rng.normals(rows * k);
  const groupRows = matvecGroupRows({ rows, k, n, ...knobs });
  const layout = qkStatsLayout(d, groupRows);
  const slots = rows * layout.bytesPerRow / 4;
  const ctl = ctlBuffer(gpu);
  const b = {
    w: gpu.upload("w", packBf16(w, k)),
    x: gpu.upload("x", x),
    y: poisoned(gpu, rows * n),
    partials: poisoned(gpu, slots + 3, "partials"), // 3 slots past the layout: a write beyond it shows
    proj: gpu.upload("proj", new Float32Array(rows * k)),
    normW: gpu.upload("norm w", new Float32Array(k)),
    xOut: poisoned(gpu, rows * k, "x out"),
  };
  const what = `matvec qkStats rows=${rows} K=${k} d=${d} N=${n} groupRows=${groupRows} ${
    JSON.stringify({ ...opts, kernel: opts.kernel?.name })
  }`;
  try {
    // The post-norm of a zero proj adds nothing: y is the plain product either way.
    const pn = postNorm ? { postNorm: { proj: b.proj, weight: b.normW, out: b.xOut, eps: 1e-6 } } : {};
    gpu.run([matvec(gpu, {
      ctl,
      weight: b.w,
      x: b.x,
      y: b.y,
      rows,
      k,
      n,
      ...knobs,
      ...pn,
      qkStats: { partials: b.partials, d },
    }, opts.kernel)]);
    const want = matvecReference(w, x, rows, k, n);
    assertClose(await gpu.readF32(b.y, rows * n), want, TOL, `${what} y`);
    const got = await gpu.readF32(b.partials, slots + 3);
    const ref = qkStatsReference(want, rows, n, d, groupRows);
    const unwritten = [...got.keys()].find((i) => Number.isNaN(ref[i] ?? NaN) !== Number.isNaN(got[i]));
    if (unwritten !== undefined) {
      throw new Error(`${what}: partial slot ${unwritten} is ${got[unwritten]}, reference ${ref[unwritten]}`);
    }
    const written = [...ref.keys()].filter((i) => !Number.isNaN(ref[i]));
    assertClose(written.map((i) => got[i]), written.map((i) => ref[i]), STATS_TOL, `${what} partials`);
    // What the attention relies on: a row's partials add up to its sum(q^2) and sum(k^2).
    for (let m = 0; m < rows; m++) {
      for (const [part, [g0, g1]] of [layout.q, layout.k].entries()) {
        let sum = 0, direct = 0;
        for (let g = g0; g < g1; g++) sum += got[(2 * m + part) * layout.groups + g];
        for (let i = part * d; i < (part + 1) * d; i++) direct += want[m * n + i] ** 2;
        assertClose([sum], [direct], { atol: 1e-3, rtol: 1e-4 }, `${what} row ${m} part ${part} total`);
      }
    }
  } finally {
    for (const buf of [ctl, ...Object.values(b)]) buf.destroy();
  }
}

gpuTest("matvec QK statistics match the reference (rows 1..16, groups straddling q / k / v)", async (gpu) => {
  // d = 37 with 8-output groups (one row): groups 4 and 9 straddle q|k and k|v; d = 20 with 16-output groups.
  for (const [rows, k, d] of [[1, 264, 37], [1, 8, 4], [2, 1064, 20], [3, 104, 33], [5, 264, 21], [16, 64, 13]]) {
    await checkQkStats(gpu, rows, k, d);
  }
  await checkQkStats(gpu, 1, 264, 37, { extra: 5 }); // N > 3d: outputs past v add nothing
  await checkQkStats(gpu, 4, 264, 19, { rowsPerThread: 1, rowsPerWorkgroup: 16, workgroupSize: 64 });
  await checkQkStats(gpu, 2, 264, 19, { rowsPerThread: 2, rowsPerWorkgroup: 1, workgroupSize: 32 });
  await checkQkStats(gpu, 2, 264, 30, { postNorm: true });
});

gpuTest("matvec QK statistics with fewer workgroups than row groups (grid stride)", async (gpu) => {
  for (const maxWorkgroups of [1, 3, 7]) {
    await checkQkStats(gpu, 1, 264, 37, { maxWorkgroups });
    await checkQkStats(gpu, 3, 520, 21, { maxWorkgroups, rowsPerThread: 2 });
  }
});

gpuTest("matvec QK statistics reject other epilogues, N < 2d and short buffers", (gpu) => {
  const ctl = ctlBuffer(gpu);
  const base = { ctl, weight: ctl, x: ctl, y: ctl, rows: 1, k: 8, n: 12 };
  const bad: [() => unknown, string][] = [
    [() => matvec(gpu, { ...base, epilogue: Epilogue.SWIGLU, qkStats: { partials: ctl, d: 4 } }), "PLAIN"],
    [() => matvec(gpu, { ...base, qkStats: { partials: ctl, d: 7 } }), "N >= 14"],
    [() => matvec(gpu, { ...base, qkStats: { partials: { buffer: ctl, size: 4 }, d: 4 } }), "must hold"],
  ];
  try {
    for (const [call, says] of bad) {
      let message = "no error";
      try {
        call();
      } catch (e) {
        message = String(e);
      }
      if (!message.includes(says)) throw new Error(`expected "${says}", got "${message}"`);
    }
  } finally {
    ctl.destroy();
  }
  return Promise.resolve();
});

gpuTest("matvec QK statistics checks catch broken kernels", async (gpu) => {
  const cases: [string, string, string][] = [
    ["wrong partial index", "(j * 2u + part) * qk_groups + g]", "(j * 2u + part) * qk_groups + g / 2u]"],
    ["the last row group's partials missing", "first < 2u * QK_D && last > QK_D", "last < 2u * QK_D && last > QK_D"],
    ["k partials summed into q", "if (n < QK_D) { sq += v; } else if", "if (n < 2u * QK_D) { sq += v; } else if"],
    ["v rows counted as k", "else if (n < 2u * QK_D && n < N)", "else if (n < N)"],
    ["one row group of the workgroup left out", "for (var r = 0u; r < ROWS; r++)", "for (var r = 1u; r < ROWS; r++)"],
    ["rows mixed", "qk_red[1u * ROWS + rg]", "qk_red[0u * ROWS + rg]"],
  ];
  for (const [what, from, to] of cases) {
    const kernel = mutate(matvecKernelFor(2, 2, "none", true), from, to);
    await assertCaught(async () => {
      await checkQkStats(gpu, 2, 264, 37, { kernel, rowsPerThread: 2, rowsPerWorkgroup: 4 });
      await checkQkStats(gpu, 2, 264, 37, { kernel, rowsPerThread: 2, rowsPerWorkgroup: 4, maxWorkgroups: 3 });
    }, what);
  }
});
