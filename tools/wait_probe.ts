/**
 * How long the CPU waits for the GPU on a WebGPU runtime, against how long the GPU works: a loop submits timed passes
 * of copies (8 passes of 40 copies of 256 MiB, ~42 ms of GPU time on an H200; then 8 x 400 tiny copies; then both
 * mixed), awaits the timestamp readback, and prints each wait's wall time beside the passes' GPU time, 20 times a
 * workload, then the median and worst excess. On Dawn every major garbage collection that fell inside a wait stretched
 * it by 0.15-1.6 s (H200, session W, docs/PERF.md: run it with `--v8-flags=--trace-gc` to see the collections between
 * the lines); Deno's waits are the GPU time plus its fixed ~11.6 ms.
 *
 *   HYDRA_WEBGPU=dawn deno run -A tools/wait_probe.ts [--keep-alive] [--bytes N]
 *
 * `--keep-alive` holds a 1 ms interval timer during each wait (it changed nothing on the H200); `--bytes` sizes the big
 * copies (default 256 MiB; on the CPU adapter use e.g. 65536).
 * @module
 */

import { parseArgs } from "@std/cli/parse-args";
import { type Dispatch, encodeDispatches, getGpu } from "../kernels/runtime.ts";
import { copyVec4 } from "../kernels/memory/copy.ts";
import { PassTimer } from "../kernels/timing.ts";
import { CTL_SLOTS } from "../kernels/control/ctl.ts";

const args = parseArgs(Deno.args, { boolean: ["keep-alive"], string: ["bytes"] });
const gpu = await getGpu();
const big = Number(args.bytes ?? 256 << 20), tiny = 1 << 14;
const src = gpu.buffer("probe src", big), dst = gpu.buffer("probe dst", big);
const ctl = gpu.buffer("probe ctl", CTL_SLOTS * 4);
const bigCopy = copyVec4(gpu, { ctl, src, dst, vec4Count: big / 16 });
const tinyCopy = copyVec4(gpu, { ctl, src, dst, vec4Count: tiny / 16 });
const PASSES = 8, WAITS = 20;
const workloads: [string, Dispatch[]][] = [
  ["8 passes x 40 big copies", new Array(40).fill(bigCopy)],
  ["8 passes x 400 tiny copies", new Array(400).fill(tinyCopy)],
  ["8 passes x (40 big + 360 tiny copies)", [...new Array(40).fill(bigCopy), ...new Array(360).fill(tinyCopy)]],
];
const runtime = `${gpu.description.runtime}${args["keep-alive"] ? " (keep-alive)" : ""}`;
for (const [name, pass] of workloads) {
  const excess: number[] = [];
  for (let i = 0; i < WAITS; i++) {
    const timer = new PassTimer(gpu, PASSES);
    const t0 = performance.now();
    const encoder = gpu.device.createCommandEncoder({ label: "wait probe" });
    for (let p = 0; p < PASSES; p++) {
      const compute = encoder.beginComputePass(timer.pass("wait probe"));
      encodeDispatches(compute, pass);
      compute.end();
    }
    timer.resolve(encoder);
    gpu.device.queue.submit([encoder.finish()]);
    const t1 = performance.now();
    const keep = args["keep-alive"] ? setInterval(() => {}, 1) : undefined;
    const gpuMs = (await timer.readMs()).reduce((a, b) => a + b, 0);
    if (keep !== undefined) clearInterval(keep);
    const t2 = performance.now();
    timer.destroy();
    excess.push(t2 - t1 - gpuMs);
    console.log(
      `${runtime} ${name}, wait ${i} at ${t2.toFixed(0)} ms: encode ${(t1 - t0).toFixed(1)} ms, wait ${
        (t2 - t1).toFixed(1)
      } ms, GPU ${gpuMs.toFixed(1)} ms`,
    );
  }
  excess.sort((a, b) => a - b);
  console.log(
    `${runtime} ${name}: wait - GPU time median ${excess[WAITS / 2].toFixed(1)} ms, worst ${
      excess[WAITS - 1].toFixed(1)
    } ms`,
  );
}
for (const b of [src, dst, ctl]) b.destroy();
