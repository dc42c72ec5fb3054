/**
 * A dispatch that only binds buffers read-only: it lets independent dispatches overlap on the GPU.
 *
 * A WebGPU runtime puts a barrier before a dispatch that reads a buffer an earlier dispatch of the pass wrote, and
 * on Vulkan that barrier waits for every dispatch before it, dependent or not. So five independent chains of
 * dependent dispatches (the heads of a Hydra after the trunk) still run one dispatch at a time when their dispatches
 * are interleaved: every dispatch reads its own chain's last output and gets a barrier of its own. Placed after a
 * group of independent dispatches that each wrote their own buffers (buffers written once in the pass),
 * `readBarrier` binds all those outputs at once. The runtime moves them to the read state in one barrier, and the
 * next group's dispatches find nothing to wait for, so they run together.
 *
 * Measured on an H200 (Deno's wgpu, `tools/bench_kernels.ts --overhead`, five chains of six dispatches): one-row
 * RMSNorms 164.8 us one at a time, 163.9 us interleaved, 45.1 us interleaved with a read barrier after each group
 * (one chain alone: 39.2 us). 7B `o` matvecs 346.5 us (69% of copy) against 263.9 us (91%). With two buffers a chain,
 * each written three times a pass, the barrier gained little (145.7 us): every buffer must be written once a pass.
 * @module
 */

import type { Dispatch, Gpu, Kernel } from "../runtime.ts";
import { range } from "../codegen.ts";

/** The kernel binding `count` buffers (after ctl) read-only. Its one invocation returns at once. */
export function readBarrierKernelFor(count: number): Kernel {
  if (!(Number.isInteger(count) && count >= 1)) throw new Error(`readBarrier: ${count} buffers`);
  return {
    name: `read_barrier_${count}`,
    source: /* wgsl */ `
// bindings: 0 ctl [CTL_SLOTS] u32, read; 1..${count} buffers, read (bound, never loaded)
@group(0) @binding(0) var<storage, read> ctl: array<u32>;
${range(count).map((i) => `@group(0) @binding(${i + 1}) var<storage, read> b${i}: array<u32>;`).join("\n")}

@compute @workgroup_size(1)
fn main() {
  // uses every binding (so that the pipeline's layout has them), reads none
  if (gated_off() || ${range(count).map((i) => `arrayLength(&b${i})`).join(" + ")} == 0u) { return; }
}
`,
  };
}

/**
 * Most buffers one read barrier dispatch binds (a generated binding each): the heads' outputs of one op are a handful.
 * The device's limit can be far larger (an H200 grants about a million storage buffers a stage, and a test that
 * generated a kernel with that many bindings hung there), so it is capped.
 */
export const READ_BARRIER_MAX_WIDTH = 16;

/** Buffers one read barrier dispatch binds: the device's storage buffers per stage less ctl, at most 16. */
export function readBarrierWidth(gpu: Gpu): number {
  return Math.min(READ_BARRIER_MAX_WIDTH, gpu.device.limits.maxStorageBuffersPerShaderStage - 1);
}

/**
 * Records the read barrier of `buffers` (distinct; load time): one dispatch, or one per `readBarrierWidth` buffers.
 */
export function readBarrier(
  gpu: Gpu,
  a: { ctl: GPUBuffer; buffers: readonly GPUBuffer[]; gated?: boolean },
): Dispatch[] {
  if (new Set(a.buffers).size !== a.buffers.length) throw new Error("readBarrier: a buffer is listed twice");
  const width = readBarrierWidth(gpu), out: Dispatch[] = [];
  for (let i = 0; i < a.buffers.length; i += width) {
    const chunk = a.buffers.slice(i, i + width);
    out.push(gpu.dispatch(readBarrierKernelFor(chunk.length), { GATED: a.gated ?? false }, [a.ctl, ...chunk], 1));
  }
  return out;
}
