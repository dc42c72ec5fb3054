/**
 * Tests of the tensor-core GEMM's row-scale pre-pass (`row_scale.ts`): exact exponents against the CPU rule for rows
 * of every magnitude (zero, subnormal, huge, holding inf or NaN), K not a multiple of the workgroup's stride, the gate,
 * the half pass's f16 rows, and mutants. Plain WGSL: runs on every adapter, the CPU one included.
 * @module
 */

import {
  f16Bits,
  f16Value,
  ROW_SCALE_HALF_KERNEL,
  ROW_SCALE_KERNEL,
  rowScale,
  rowScaleExponent,
  rowScaleHalfReference,
  rowScaleKernelFor,
  rowScaleReference,
} from "./row_scale.ts";
import type { Gpu, Kernel } from "../runtime.ts";
import { assertCaught, ctlBuffer, gpuTest, mutate, Rng } from "../testing/harness.ts";

/** Rows of different magnitudes: normals times a scale (0 to 1e30), or holding one inf or NaN. */
function inputs(rows: number, k: number): Float32Array {
  const rng = new Rng(rows * 31 + k);
  const x = rng.normals(rows * k);
  const kinds = [0, 1e-40, 1e-30, 1, 3e4, 1e5, 1e30, Infinity, NaN, -2.5e-3];
  for (let m = 0; m < rows; m++) {
    const kind = kinds[m % kinds.length];
    for (let i = 0; i < k; i++) {
      const v = x[m * k + i];
      x[m * k + i] = kind === 0 ? 0 : Number.isFinite(kind) ? v * kind : v;
    }
    if (!Number.isFinite(kind)) x[m * k + ((m * 7919) % k)] = kind; // one inf or NaN in the row
    else if (m % 2 === 0) x[m * k + k - 1] = 50 * kind; // the maximum in the last vec4, the last a thread reads
  }
  return x;
}

async function runRowScale(
  gpu: Gpu,
  rows: number,
  k: number,
  o: { kernel?: Kernel; gated?: boolean; active?: number },
) {
  const x = inputs(rows, k);
  const ctl = ctlBuffer(gpu, { ACTIVE: o.active ?? 1 });
  const xb = gpu.upload("x", x);
  const poison = new Int32Array(rows).fill(-12345);
  const eb = gpu.upload("e", poison);
  gpu.run([rowScale(gpu, { ctl, x: xb, exponents: eb, rows, k, gated: o.gated }, o.kernel)]);
  const got = new Int32Array(await gpu.read(eb, 0, rows * 4));
  for (const b of [ctl, xb, eb]) b.destroy();
  return { got, want: rowScaleReference(x, rows, k) };
}

async function checkRowScale(gpu: Gpu, rows: number, k: number, o: { kernel?: Kernel } = {}): Promise<void> {
  const { got, want } = await runRowScale(gpu, rows, k, o);
  for (let m = 0; m < rows; m++) {
    if (got[m] !== want[m]) throw new Error(`row_scale rows=${rows} K=${k}: row ${m} got ${got[m]}, want ${want[m]}`);
  }
}

Deno.test("rowScaleExponent brings a row's maximum into [2^14, 2^15) and keeps non-finite rows unscaled", () => {
  for (const max of [1, 1.5, 1e-3, 3e4, 65504, 1e5, 1e30, 6e-39]) {
    const e = rowScaleExponent([max / 3, -max]);
    const scaled = max * 2 ** -e;
    if (max >= 2 ** -86 && !(scaled >= 2 ** 14 && scaled < 2 ** 15)) throw new Error(`max ${max}: e = ${e}`);
    if (!(scaled < 65504)) throw new Error(`max ${max} scaled to ${scaled}, past f16`);
  }
  if (rowScaleExponent([0, 0]) !== 0 || rowScaleExponent([1, Infinity]) !== 0 || rowScaleExponent([NaN]) !== 0) {
    throw new Error("zero or non-finite rows are scaled");
  }
});

gpuTest("row_scale matches the CPU rule for rows of every magnitude", async (gpu) => {
  await checkRowScale(gpu, 10, 4); // one vec4 per row: most threads see nothing
  await checkRowScale(gpu, 23, 4100); // K / 4 = 1025: past 4 strides of 256 threads
  await checkRowScale(gpu, 10, 4096);
});

gpuTest("row_scale built GATED writes nothing while ACTIVE is 0", async (gpu) => {
  const { got } = await runRowScale(gpu, 10, 64, { gated: true, active: 0 });
  if (!got.every((v) => v === -12345)) throw new Error("a gated-off row_scale wrote its output");
  const on = await runRowScale(gpu, 10, 64, { gated: true, active: 1 });
  if (on.got.some((v, i) => v !== on.want[i])) throw new Error("a gated row_scale with ACTIVE 1 is wrong");
});

gpuTest("row_scale checks catch broken kernels", async (gpu) => {
  const cases: [string, string][] = [
    ["- 127i - 14i", "- 127i - 15i"], // scales into [2^15, 2^16): f16 would round near-max values to 65536 = inf
    ["red[t] = max(red[t], red[t + s])", "red[t] = red[t + s]"], // drops half the candidates at each level
    ["top == 0u || biased == 255u", "top == 0u"], // a row holding inf or NaN scaled by 2^-(127 + 14)
    ["c < K / 4u", "c < K / 4u - 1u"], // the last vec4 of each row ignored
  ];
  for (const [from, to] of cases) {
    await assertCaught(() => checkRowScale(gpu, 23, 4100, { kernel: mutate(ROW_SCALE_KERNEL, from, to) }), from);
  }
  if (!gpu.has("subgroups")) return;
  const subgroupCases: [string, string][] = [
    ["atomicMax(&row_max, sg_max)", "atomicMin(&row_max, sg_max)"], // the smallest subgroup maximum taken
    ["let sg_max = subgroupMax(best);", "let sg_max = best;"], // only the elected invocation's maximum counts
  ];
  for (const [from, to] of subgroupCases) {
    const kernel = mutate(rowScaleKernelFor(false, true), from, to);
    await assertCaught(() => checkRowScale(gpu, 23, 4100, { kernel }), `subgroups: ${from}`);
  }
});

gpuTest(
  "row_scale and row_scale_half by subgroup maxima (where the device has them) match the CPU rule",
  async (gpu) => {
    if (!gpu.has("subgroups")) return;
    for (const [rows, k] of [[10, 4], [23, 4100], [10, 4096], [3, 11008]]) {
      await checkRowScale(gpu, rows, k, { kernel: rowScaleKernelFor(false, true) });
      await checkHalf(gpu, rows, k, { kernel: rowScaleKernelFor(true, true) });
    }
  },
);

/** Runs the half pass; returns the exponents and f16 rows with their references. */
async function runHalf(gpu: Gpu, rows: number, k: number, o: { kernel?: Kernel; gated?: boolean; active?: number }) {
  const x = inputs(rows, k);
  const ctl = ctlBuffer(gpu, { ACTIVE: o.active ?? 1 });
  const xb = gpu.upload("x", x);
  const eb = gpu.upload("e", new Int32Array(rows).fill(-12345));
  const hb = gpu.upload("xh", new Uint32Array((rows * k) / 2).fill(0x7e017e01)); // a NaN pattern no conversion makes
  gpu.run([rowScale(gpu, { ctl, x: xb, exponents: eb, xHalf: hb, rows, k, gated: o.gated }, o.kernel)]);
  const e = new Int32Array(await gpu.read(eb, 0, rows * 4));
  const h = new Uint16Array(await gpu.read(hb, 0, rows * k * 2));
  for (const b of [ctl, xb, eb, hb]) b.destroy();
  return { x, e, h, wantE: rowScaleReference(x, rows, k), wantH: rowScaleHalfReference(x, rows, k) };
}

/**
 * Fails unless the exponents are exact and every finite element's f16 is one of the two f16 nearest x * 2^-e (WGSL
 * lets a conversion round either way; the nearest-even pattern or its neighbour towards the exact value). Elements
 * that are inf or NaN in x are left out: WGSL leaves their conversion indeterminate (the logits' check reports them).
 */
async function checkHalf(gpu: Gpu, rows: number, k: number, o: { kernel?: Kernel } = {}): Promise<void> {
  const { x, e, h, wantE, wantH } = await runHalf(gpu, rows, k, o);
  for (let m = 0; m < rows; m++) {
    if (e[m] !== wantE[m]) throw new Error(`row_scale_half rows=${rows} K=${k}: row ${m} e ${e[m]}, want ${wantE[m]}`);
    for (let i = 0; i < k; i++) {
      const v = x[m * k + i];
      if (!Number.isFinite(v)) continue;
      const got = h[m * k + i], want = wantH[m * k + i];
      const exact = v * 2 ** -wantE[m];
      const ok = got === want ||
        (Math.abs(got - want) === 1 && Math.abs(f16Value(got) - exact) <= Math.abs(f16Value(want) - f16Value(got)));
      if (!ok) {
        throw new Error(
          `row_scale_half rows=${rows} K=${k}: [${m}, ${i}] = ${v} gave f16 ${f16Value(got)}, want ${f16Value(want)}`,
        );
      }
    }
  }
}

Deno.test("f16Bits rounds to the nearest f16, ties to even, and overflows to infinity", () => {
  const cases: [number, number][] = [
    [1, 0x3c00],
    [1 + 2 ** -11, 0x3c00],
    [1 + 3 * 2 ** -11, 0x3c02],
    [65504, 0x7bff],
    [
      65520,
      0x7c00,
    ],
    [-2, 0xc000],
    [2 ** -24, 0x0001],
    [2 ** -26, 0],
  ];
  for (const [v, bits] of cases) {
    if (f16Bits(v) !== bits) throw new Error(`f16Bits(${v}) = ${f16Bits(v).toString(16)}, want ${bits.toString(16)}`);
  }
});

gpuTest("row_scale_half writes the exponents and the rows scaled into f16", async (gpu) => {
  await checkHalf(gpu, 10, 4); // one vec4 per row
  await checkHalf(gpu, 23, 4100); // K / 4 = 1025: past 4 strides of 256 threads
});

gpuTest("row_scale_half built GATED writes nothing while ACTIVE is 0", async (gpu) => {
  const { e, h } = await runHalf(gpu, 10, 64, { gated: true, active: 0 });
  if (!e.every((v) => v === -12345) || !h.every((v) => v === 0x7e01)) {
    throw new Error("a gated-off row_scale_half wrote its output");
  }
});

gpuTest("row_scale_half checks catch broken kernels", async (gpu) => {
  const cases: [string, string][] = [
    ["let f = ldexp(1.0, -exponent);", "let f = 1.0;"], // rows left unscaled: 1e5 overflows, 1e-30 underflows
    ["pack2x16float(s.zw)", "pack2x16float(s.xy)"], // the upper two of every 4 elements replaced
    // the first vec4 of each row is never written (each thread starts one vec4 late)
    ["for (var c = t; c < K / 4u; c += WG) {\n    xh", "for (var c = t + 1u; c < K / 4u; c += WG) {\n    xh"],
  ];
  for (const [from, to] of cases) {
    await assertCaught(() => checkHalf(gpu, 23, 4100, { kernel: mutate(ROW_SCALE_HALF_KERNEL, from, to) }), from);
  }
});
