/**
 * The kernel test harness: a shared GPU, seeded random inputs, the control block, and `assertClose`, which compares a
 * kernel's output with its CPU reference under a stated tolerance and reports the worst error when it fails.
 * @module
 */

import { getGpu, type Gpu, type Kernel, WEBGPU_ENV } from "../runtime.ts";
import { CTL, CTL_SLOTS } from "../control/ctl.ts";

/** WebGPU errors nobody captured (invalid WGSL, a bad bind group, ...), in the order reported. */
const uncaptured: string[] = [];
let listening = false;

/** Waits for the GPU and lets pending uncaptured-error events arrive. */
async function flushErrors(gpu: Gpu): Promise<void> {
  await gpu.device.queue.onSubmittedWorkDone();
  await new Promise((r) => setTimeout(r, 0));
}

/**
 * Registers a test that needs the GPU (resource sanitizers off: the device outlives each test). The test fails when
 * WebGPU reports an uncaptured error during it: an invalid kernel must never pass as a numeric mismatch.
 */
export function gpuTest(name: string, fn: (gpu: Gpu) => Promise<void>): void {
  Deno.test({
    name,
    sanitizeOps: false,
    sanitizeResources: false,
    fn: async () => {
      const gpu = await getGpu();
      if (!listening) {
        gpu.device.addEventListener("uncapturederror", (e) => {
          uncaptured.push((e as GPUUncapturedErrorEvent).error.message);
        });
        listening = true;
      }
      const before = uncaptured.length;
      await fn(gpu);
      await flushErrors(gpu);
      if (uncaptured.length > before) {
        throw new Error(`WebGPU reported errors during the test: ${uncaptured.slice(before).join(" | ")}`);
      }
    },
  });
}

/**
 * The registrar of GPU tests that need Dawn and what `unsupported` checks (tensor cores: subgroup matrices): in a
 * process on Dawn (HYDRA_WEBGPU=dawn) where `unsupported(gpu)` is null, `gpuTest`; elsewhere each test is registered as
 * ignored, the reason in its name.
 */
export async function dawnGpuTest(
  unsupported: (gpu: Gpu) => string | null,
): Promise<(name: string, fn: (gpu: Gpu) => Promise<void>) => void> {
  const skip = Deno.env.get(WEBGPU_ENV) === "dawn"
    ? unsupported(await getGpu())
    : `needs ${WEBGPU_ENV}=dawn and a GPU with subgroup matrices`;
  return (name, fn) => {
    if (skip) Deno.test({ name: `${name} [ignored: ${skip}]`, ignore: true, fn: () => {} });
    else gpuTest(name, fn);
  };
}

export { Rng } from "../../bench/rng.ts";

/** Tolerance: an element passes when |actual - expected| <= atol + rtol * |expected|. */
export interface Tolerance {
  atol: number;
  rtol?: number;
}

/** The worst error of `actual` against `expected`. */
export interface ErrorReport {
  maxAbs: number;
  maxRel: number;
  worst: number;
  failures: number;
  nonFinite: number;
}

/** Measures `actual` against `expected` under `tol` (NaN or infinity in `actual` always fails). */
export function compare(actual: ArrayLike<number>, expected: ArrayLike<number>, tol: Tolerance): ErrorReport {
  if (actual.length !== expected.length) {
    throw new Error(`length ${actual.length} differs from the reference's ${expected.length}`);
  }
  const r: ErrorReport = { maxAbs: 0, maxRel: 0, worst: -1, failures: 0, nonFinite: 0 };
  let worstExcess = -Infinity;
  for (let i = 0; i < actual.length; i++) {
    const a = actual[i], e = expected[i];
    const err = Math.abs(a - e);
    const bound = tol.atol + (tol.rtol ?? 0) * Math.abs(e);
    if (!Number.isFinite(a)) r.nonFinite++;
    if (!(err <= bound)) r.failures++;
    if (err > r.maxAbs || Number.isNaN(err)) r.maxAbs = Number.isNaN(err) ? NaN : Math.max(r.maxAbs, err);
    const rel = err / Math.max(Math.abs(e), 1e-30);
    if (rel > r.maxRel) r.maxRel = rel;
    const excess = Number.isNaN(err) ? Infinity : err - bound;
    if (excess > worstExcess) {
      worstExcess = excess;
      r.worst = i;
    }
  }
  return r;
}

/** Throws, naming `what` and the worst element, unless every element of `actual` is within `tol` of `expected`. */
export function assertClose(
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  tol: Tolerance,
  what: string,
): ErrorReport {
  const r = compare(actual, expected, tol);
  if (r.failures > 0) {
    const i = r.worst;
    throw new Error(
      `${what}: ${r.failures}/${actual.length} elements outside atol=${tol.atol} rtol=${tol.rtol ?? 0}` +
        ` (max abs err ${r.maxAbs.toExponential(3)}, max rel err ${r.maxRel.toExponential(3)},` +
        ` non-finite ${r.nonFinite}; worst at [${i}]: got ${actual[i]}, want ${expected[i]})`,
    );
  }
  return r;
}

/** A control block buffer with the given slots set (others zero). */
export function ctlBuffer(gpu: Gpu, slots: Partial<Record<keyof typeof CTL, number>> = {}): GPUBuffer {
  const data = new Uint32Array(CTL_SLOTS);
  for (const [name, value] of Object.entries(slots)) data[CTL[name as keyof typeof CTL]] = value;
  return gpu.upload("ctl", data);
}

/** A buffer of `n` f32 filled with NaN, so an element the kernel forgets to write fails the comparison. */
export function poisoned(gpu: Gpu, n: number, label = "out"): GPUBuffer {
  return gpu.upload(label, new Float32Array(n).fill(NaN));
}

/**
 * A copy of `kernel` with `from` replaced by `to` (which must occur), for tests that prove a check can fail. The bug
 * must break the result in every schedule (a wrong index, offset or bound): a dropped barrier or another data race
 * may go unseen on one GPU and be caught on another.
 */
export function mutate(kernel: Kernel, from: string, to: string): Kernel {
  if (!kernel.source.includes(from)) throw new Error(`mutate: "${from}" does not occur in ${kernel.name}`);
  return { name: `${kernel.name}[mutant ${from} -> ${to}]`, source: kernel.source.replace(from, to) };
}

/**
 * Asserts that `check` rejects a deliberately broken kernel because of what it computes: a mutant that WebGPU rejects
 * (invalid WGSL, a binding it no longer uses) proves nothing about the check, so it fails this assertion.
 */
export async function assertCaught(check: () => Promise<unknown>, what: string): Promise<void> {
  const gpu = await getGpu();
  const before = uncaptured.length;
  let caught = false;
  try {
    await check();
  } catch (e) {
    // a mutation that no longer applies (the kernel changed) is a broken test, not a caught mutant
    if (e instanceof Error && e.message.startsWith("mutate:")) throw e;
    caught = true;
  }
  await flushErrors(gpu);
  if (uncaptured.length > before) {
    const errors = uncaptured.splice(before).join(" | ");
    throw new Error(`${what}: the mutant is not a valid kernel (${errors.slice(0, 300)}), so it proves nothing`);
  }
  if (!caught) throw new Error(`${what}: the check passed a deliberately broken kernel`);
}

/** Bytes of the WGSL scalar types a workgroup array may hold. */
const WGSL_SCALAR_BYTES: Record<string, number> = { f16: 2, f32: 4, u32: 4, i32: 4 };

/**
 * The workgroup variables of `kernel` ([name, bytes]): `var<workgroup> name: array<T, N>` of a scalar T, a lone scalar,
 * or a `buffer<N>`. Throws on a declaration it cannot size.
 */
export function workgroupVariables(kernel: Kernel): [string, number][] {
  const found: [string, number][] = [];
  for (const m of kernel.source.matchAll(/var<workgroup>\s+(\w+)\s*:\s*([^;]+);/g)) {
    const [, name, declared] = m;
    const type = declared.replace(/atomic<\s*(\w+)\s*>/, "$1"); // an atomic takes its scalar's bytes
    const array = type.match(/^array<\s*(\w+)\s*,\s*(\d+)u?\s*>$/);
    const buffer = type.match(/^buffer<\s*(\d+)u?\s*>$/);
    const bytes = array && WGSL_SCALAR_BYTES[array[1]]
      ? WGSL_SCALAR_BYTES[array[1]] * Number(array[2])
      : buffer
      ? Number(buffer[1])
      : WGSL_SCALAR_BYTES[type.trim()];
    if (!bytes) throw new Error(`workgroupVariables: cannot size ${name}: ${type} in ${kernel.name}`);
    found.push([name, bytes]);
  }
  return found;
}

/**
 * Asserts that every workgroup variable of `kernel` takes a multiple of 16 bytes. Subgroup-matrix loads need 16-byte
 * aligned rows, and the driver may lay the variables out in any order: one lone u32 flag made a kernel's matrix loads
 * read garbage on the H200 (prefill_tensor.ts, session Z).
 */
export function assertWorkgroupVariablesAligned(kernel: Kernel): void {
  const odd = workgroupVariables(kernel).filter(([, bytes]) => bytes % 16 !== 0);
  if (odd.length > 0) {
    throw new Error(
      `${kernel.name}: workgroup variables not a multiple of 16 bytes: ${
        odd.map(([n, b]) => `${n} (${b})`).join(", ")
      }`,
    );
  }
}
