import { swiglu, swigluKernel, swigluReference } from "../../kernels/matmul/swiglu.ts";
import type { Gpu, Kernel } from "../../kernels/runtime.ts";
import { assertCaught, assertClose, ctlBuffer, gpuTest, mutate, poisoned, Rng } from "../harness.ts";

// f32 silu(g) * u against f64: exp and one division, a few ulp of relative error.
const TOL = { atol: 1e-6, rtol: 1e-5 };

async function check(gpu: Gpu, rows: number, n: number, kernel?: Kernel) {
  const h = new Rng(rows * 31 + n).normals(rows * 2 * n, 3);
  const ctl = ctlBuffer(gpu), hb = gpu.upload("h", h), y = poisoned(gpu, rows * n);
  gpu.run([swiglu(gpu, { ctl, h: hb, y, rows, n }, kernel)]);
  const got = await gpu.readF32(y, rows * n);
  for (const b of [ctl, hb, y]) b.destroy();
  assertClose(got, swigluReference(h, rows, n), TOL, `swiglu rows=${rows} n=${n}`);
}

gpuTest("swiglu matches the reference at awkward sizes", async (gpu) => {
  for (const [rows, n] of [[1, 1], [1, 7], [3, 255], [17, 300], [130, 64]]) await check(gpu, rows, n);
});

gpuTest("swiglu checks catch broken kernels", async (gpu) => {
  for (const [from, to] of [["h[m * 2u * N + N + j]", "h[m * 2u * N + j]"], ["1.0 + exp(-g)", "1.0 + exp(g)"]]) {
    await assertCaught(() => check(gpu, 3, 255, mutate(swigluKernel, from, to)), `${from} -> ${to}`);
  }
});
