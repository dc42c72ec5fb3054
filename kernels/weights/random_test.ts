/**
 * Tests of the random-fill kernel (`random.ts`): bit-exact against its CPU reference at any offset and count,
 * its distribution, and mutants.
 * @module
 */

import { assertEquals, assertThrows } from "@std/assert";
import { unpackBf16 } from "../bf16.ts";
import type { Gpu, Kernel } from "../runtime.ts";
import {
  randomFill,
  randomFillChunked,
  randomFillKernel,
  randomFillReference,
  randomScale,
  type RandomSpec,
} from "./random.ts";
import { assertCaught, assertClose, ctlBuffer, gpuTest, mutate, poisoned } from "../testing/harness.ts";

// The fill is exact by construction (integer hash, an exact product, one rounded f32 add, RNE to bf16), so the GPU's
// words must equal the reference's bit for bit: tolerance zero, compared as u32 words.
const EXACT = { atol: 0 };

/** Fills `count` values starting at tensor element `start` on the GPU and returns the words written. */
async function fill(
  gpu: Gpu,
  spec: RandomSpec,
  count: number,
  start = 0,
  opts: { kernel?: Kernel; workgroupSize?: number } = {},
): Promise<Uint32Array> {
  const words = spec.bf16 ? count / 2 : count;
  const ctl = ctlBuffer(gpu), out = poisoned(gpu, words);
  const dispatch = randomFill(gpu, { ctl, out, count, start, ...spec, workgroupSize: opts.workgroupSize }, opts.kernel);
  gpu.run([dispatch]);
  const got = await gpu.readU32(out, words);
  for (const b of [ctl, out]) b.destroy();
  return got;
}

/** Fills on the GPU and asserts the words equal the reference's. */
async function checkFill(
  gpu: Gpu,
  spec: RandomSpec,
  count: number,
  start = 0,
  opts: { kernel?: Kernel; workgroupSize?: number } = {},
): Promise<Uint32Array> {
  const got = await fill(gpu, spec, count, start, opts);
  const want = randomFillReference(spec, count, start);
  assertClose(got, want, EXACT, `random fill ${JSON.stringify({ ...spec, count, start })} words`);
  return got;
}

gpuTest("random fill matches the reference bit for bit (f32 at odd counts, bf16 at odd word counts)", async (gpu) => {
  for (const count of [1, 7, 1001]) {
    await checkFill(gpu, { seed: 1, std: 0.02, bf16: false }, count);
    await checkFill(gpu, { seed: 2, std: 0.5, mean: 1, bf16: false }, count, 12345);
  }
  for (const count of [2, 14, 1002]) {
    await checkFill(gpu, { seed: 3, std: 0.02, bf16: true }, count);
    await checkFill(gpu, { seed: 4, std: 1 / 64, mean: -0.25, bf16: true }, count, 2 ** 31 + 6);
  }
  await checkFill(gpu, { seed: 5, std: 0, mean: 1, bf16: false }, 9); // norm weights at their init: all ones
});

gpuTest("random fill over more than 65535 workgroups uses a 2-D grid", async (gpu) => {
  const ctl = ctlBuffer(gpu);
  const grid =
    randomFill(gpu, { ctl, out: ctl, count: 70001, seed: 6, std: 1, bf16: false, workgroupSize: 1 }).workgroups;
  ctl.destroy();
  if (grid[1] < 2) throw new Error(`expected a 2-D grid for 70001 workgroups, got ${grid}`);
  await checkFill(gpu, { seed: 6, std: 1, bf16: false }, 70001, 0, { workgroupSize: 1 });
  await checkFill(gpu, { seed: 7, std: 1, bf16: true }, 2 * 70001, 0, { workgroupSize: 1 });
});

gpuTest("random fill split into chunks writes the same tensor, and nothing outside it", async (gpu) => {
  for (const bf16 of [true, false]) {
    const spec = { seed: 8, std: 0.02, bf16 };
    const count = 5000, before = 64, after = 16; // u32 words of sentinel around the tensor (256 bytes before)
    const words = bf16 ? count / 2 : count;
    const sentinel = new Uint32Array(before + words + after).fill(0xdeadbeef);
    const ctl = ctlBuffer(gpu), buffer = gpu.upload("tensor", sentinel);
    const dispatches = randomFillChunked(gpu, {
      ctl,
      buffer,
      byteOffset: 4 * before,
      count,
      maxBindingBytes: 1000,
      ...spec,
    });
    assertEquals(dispatches.length, Math.ceil(4 * words / 768)); // 1000 bytes rounded down to 768
    gpu.run(dispatches);
    const got = await gpu.readU32(buffer, sentinel.length);
    for (const b of [ctl, buffer]) b.destroy();
    const want = Uint32Array.from(sentinel);
    want.set(randomFillReference(spec, count), before);
    assertClose(got, want, EXACT, `chunked random fill bf16=${bf16}`);
  }
});

gpuTest("random fill: the same seed reproduces, different seeds differ", async (gpu) => {
  const n = 20000;
  const a = await fill(gpu, { seed: 9, std: 1, bf16: true }, n);
  const again = await fill(gpu, { seed: 9, std: 1, bf16: true }, n);
  const other = await fill(gpu, { seed: 10, std: 1, bf16: true }, n);
  assertEquals(again, a);
  // Two independent bf16 N(0, 1) draws are equal with probability ~ 1/300 (about 2^7 values per binade), so equal
  // values in more than 1% of places, or a correlation beyond 5 / sqrt(n), would mean the streams are related.
  const x = unpackBf16(a), y = unpackBf16(other);
  let equal = 0, xy = 0, xx = 0, yy = 0;
  for (let i = 0; i < n; i++) {
    if (x[i] === y[i]) equal++;
    xy += x[i] * y[i];
    xx += x[i] * x[i];
    yy += y[i] * y[i];
  }
  if (equal > n / 100) throw new Error(`seeds 9 and 10 agree on ${equal} of ${n} values`);
  const r = xy / Math.sqrt(xx * yy);
  if (Math.abs(r) > 5 / Math.sqrt(n)) throw new Error(`seeds 9 and 10 are correlated: r = ${r}`);
});

gpuTest("random fill has the requested mean and std and the Irwin-Hall(4) shape", async (gpu) => {
  const n = 100002;
  for (const spec of [{ seed: 11, std: 0.02, mean: 0, bf16: true }, { seed: 12, std: 0.5, mean: 1, bf16: false }]) {
    const words = await fill(gpu, spec, n);
    const v = spec.bf16 ? unpackBf16(words) : new Float32Array(words.buffer);
    let s = 0, s2 = 0, s4 = 0, within1 = 0, maxZ = 0;
    for (const x of v) s += x;
    const mean = s / n;
    for (const x of v) {
      const d = x - mean, z = Math.abs(x - spec.mean) / spec.std;
      s2 += d * d;
      s4 += d ** 4;
      if (z < 1) within1++;
      maxZ = Math.max(maxZ, z);
    }
    const std = Math.sqrt(s2 / n), kurtosis = s4 / n / (s2 / n) ** 2, p1 = within1 / n;
    // 5-sigma bounds for n draws of Irwin-Hall(4) (kurtosis 2.7): the mean's standard error is std / sqrt(n); the
    // sample std's relative standard error is sqrt((kurtosis - 1) / (4n)) = 0.0021; the kurtosis estimate's is ~0.01;
    // P(|z| < 1) is 0.6693 (a normal's is 0.6827), standard error sqrt(p(1 - p) / n) = 0.0015. The std is also off by
    // at most 2^-11 (scale rounding) and bf16 rounding adds ~1e-5 of relative variance: both far inside the bounds.
    const what = `random fill ${JSON.stringify(spec)}`;
    if (Math.abs(mean - spec.mean) > 5 * spec.std / Math.sqrt(n)) throw new Error(`${what}: mean ${mean}`);
    if (Math.abs(std / spec.std - 1) > 5 * 0.0021) throw new Error(`${what}: std ${std}`);
    if (Math.abs(kurtosis - 2.7) > 0.05) throw new Error(`${what}: kurtosis ${kurtosis}, want 2.7`);
    if (Math.abs(p1 - 0.6693) > 5 * 0.0015) throw new Error(`${what}: P(|z| < 1) = ${p1}, want 0.6693`);
    if (maxZ > 2 * Math.sqrt(3) * (1 + 2 ** -8)) throw new Error(`${what}: |z| = ${maxZ} beyond the 2 sqrt(3) bound`);
  }
});

gpuTest("randomScale keeps 11 significant bits within 2^-11 of std * sqrt(3) / 4096", () => {
  for (const std of [1, 0.02, 1 / 3, 1e-30, 1e30, 0.7071]) {
    const want = std * Math.sqrt(3) / 4096, got = randomScale(std);
    const e = Math.floor(Math.log2(got));
    if (!Number.isInteger(got / 2 ** (e - 10)) || Math.fround(got) !== got) throw new Error(`scale ${got} of ${std}`);
    if (Math.abs(got / want - 1) > 2 ** -11) throw new Error(`scale ${got} is not within 2^-11 of ${want}`);
  }
  assertEquals(randomScale(0), 0);
  return Promise.resolve();
});

gpuTest("random fill rejects arguments it cannot honour", (gpu) => {
  const ctl = ctlBuffer(gpu);
  const base = { ctl, out: ctl, seed: 1, std: 1, bf16: true, count: 4 };
  assertThrows(() => randomFill(gpu, { ...base, count: 5 }), Error, "must be even");
  assertThrows(() => randomFill(gpu, { ...base, start: 3 }), Error, "must be even");
  assertThrows(() => randomFill(gpu, { ...base, std: -1 }), Error, "std");
  assertThrows(() => randomFill(gpu, { ...base, seed: 1.5 }), Error, "seed");
  assertThrows(() => randomFill(gpu, { ...base, start: 2 ** 32 - 2 }), Error, "u32");
  ctl.destroy();
  return Promise.resolve();
});

gpuTest("random fill checks catch broken kernels", async (gpu) => {
  const cases: [string, string][] = [
    ["return (u + 0x7fffu + ((u >> 16u) & 1u)) >> 16u;", "return u >> 16u;"], // truncation instead of RNE
    ["let i = params[P_START] + 2u * w;", "let i = 2u * w;"], // start offset ignored
    ["vec2<f32>(value(i), value(i + 1u))", "vec2<f32>(value(i + 1u), value(i))"], // bf16 halves swapped
    ["let c = f32(i32(b) - 8190);", "let c = f32(i32(b) - 8192);"], // off-centre sum: mean shifted by 2 * SCALE
  ];
  for (const [from, to] of cases) {
    const kernel = mutate(randomFillKernel, from, to);
    await assertCaught(
      () => checkFill(gpu, { seed: 13, std: 0.02, bf16: true }, 1002, 4096, { kernel }),
      `${from} -> ${to}`,
    );
  }
});
