/**
 * Dawn (npm `webgpu`, the opt-in second runtime: ARCHITECTURE.md "Two WebGPU runtimes") whatever `HYDRA_WEBGPU` the
 * rest of the suite runs on: a device is made with the toggles, the description records it, a kernel through Tint's
 * prelude (enable directives, the gate's early return before a barrier: the uniformity decision) builds and computes,
 * and readback works. Where Dawn finds no adapter (the CPU adapter of CI: lavapipe lacks features Dawn requires) or
 * its addon is missing, every test is registered as ignored with the reason in its name, so the run reports
 * "Dawn tests skipped: <reason>". The probe costs about 0.1 s. On the GPU machine: docs/DEVICE.md.
 * @module
 */

import { assert, assertEquals, assertStringIncludes } from "@std/assert";
import { UserError } from "../common/errors.ts";
import { DAWN_PACKAGE, DAWN_TOGGLES, Gpu, hasWgslFeature, type Kernel } from "./runtime.ts";
import { ctlBuffer } from "./testing/harness.ts";

/** Dawn's Gpu, or the UserError's sentence saying why there is none here. */
async function dawn(): Promise<Gpu | string> {
  try {
    return await Gpu.create("dawn");
  } catch (e) {
    if (e instanceof UserError) return e.message;
    throw e;
  }
}

const made = await dawn();

/** Registers a test on Dawn's Gpu, ignored (the reason in its name) where Dawn cannot run. */
function dawnTest(name: string, fn: (gpu: Gpu) => Promise<void>): void {
  const gpu = typeof made === "string" ? null : made;
  Deno.test({
    name: gpu ? `dawn: ${name}` : `dawn: ${name} (Dawn tests skipped: ${made})`,
    ignore: gpu === null,
    sanitizeOps: false,
    sanitizeResources: false,
    fn: async () => {
      const errors: string[] = [];
      gpu!.device.addEventListener("uncapturederror", (e) => errors.push((e as GPUUncapturedErrorEvent).error.message));
      await fn(gpu!);
      await gpu!.device.queue.onSubmittedWorkDone();
      await new Promise((r) => setTimeout(r, 0));
      assertEquals(errors, [], "WebGPU reported errors");
    },
  });
}

dawnTest("a device on the adapter, its description recording runtime, version and toggles", async (gpu) => {
  const d = gpu.description;
  assertEquals([d.runtime, d.runtimeVersion, d.toggles], ["dawn", DAWN_PACKAGE, [...DAWN_TOGGLES]]);
  assertEquals(d.backend, "vulkan");
  assert(d.limitsGranted.maxStorageBufferBindingSize >= 128 << 20, "the adapter's limits were requested");
  const prelude = gpu.preludeOf({ name: "any", source: "" });
  assertStringIncludes(prelude, "enable chromium_disable_uniformity_analysis;");
  if (gpu.has("shader-f16")) assertStringIncludes(prelude, "enable f16;");
  if (gpu.has("subgroups")) assertStringIncludes(prelude, "enable subgroups;");
  // the tensor GEMM's tiles that stage through one workgroup buffer (all of linear's 12- and 16-subgroup tiles) are
  // taken only where the runtime offers buffer views (tensorTilesFor)
  assert(hasWgslFeature(gpu, "buffer_view"), "Dawn's WGSL lacks buffer_view: linear falls back to unviewed tiles");
  await gpu.finish();
});

/**
 * The prelude's gate and bf16 unpacking, then a workgroup barrier after the gate's early return (Tint rejects that
 * without the uniformity directive): out[i] = bf16_lo(w[i]) + bf16_hi(w[i]) summed over the workgroup, in f16 where
 * the device has it. Gated: with ctl ACTIVE = 0 the output stays as it was.
 */
function gateKernel(f16: boolean): Kernel {
  const t = f16 ? "f16" : "f32";
  return {
    name: `dawn_gate_${t}`,
    source: /* wgsl */ `
override GROUP: u32 = 64u;
@group(0) @binding(0) var<storage, read> ctl: array<u32>;
@group(0) @binding(1) var<storage, read> w: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
var<workgroup> partial: array<${t}, 64>;

@compute @workgroup_size(GROUP)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  if (gated_off()) { return; }
  let i = wid.x * GROUP + t;
  partial[t] = ${t}(bf16_lo(w[i]) + bf16_hi(w[i]));
  workgroupBarrier();
  if (t == 0u) {
    var s = ${t}(0);
    for (var j = 0u; j < GROUP; j++) { s += partial[j]; }
    out[wid.x] = f32(s);
  }
}
`,
  };
}

dawnTest("a kernel through the prelude builds, computes and reads back; the gate turns it off", async (gpu) => {
  const groups = 3, n = 64 * groups;
  // bf16 halves: low = 1 + (i % 4) / 4, high = 0.5 (exact in f16 and f32, and so are the sums)
  const bf16 = (x: number) => new Uint32Array(new Float32Array([x]).buffer)[0] >>> 16;
  const words = Uint32Array.from({ length: n }, (_, i) => (bf16(0.5) << 16) | bf16(1 + (i % 4) / 4));
  const expected = Array.from({ length: groups }, () => 64 * 1.875); // 16 x (1 + 1.25 + 1.5 + 1.75) + 64 x 0.5
  for (const f16 of gpu.has("shader-f16") ? [false, true] : [false]) {
    const w = gpu.upload("w", words);
    const out = gpu.upload("out", new Float32Array(groups).fill(-1));
    const on = ctlBuffer(gpu, { ACTIVE: 1 }), off = ctlBuffer(gpu, { ACTIVE: 0 });
    gpu.run([gpu.dispatch(gateKernel(f16), { GATED: true }, [off, w, out], [groups, 1, 1])]);
    assertEquals([...await gpu.readF32(out, groups)], [-1, -1, -1], "gated off: nothing written");
    gpu.run([gpu.dispatch(gateKernel(f16), { GATED: true }, [on, w, out], [groups, 1, 1])]);
    assertEquals([...await gpu.readF32(out, groups)], expected, f16 ? "f16" : "f32");
    const [a, b] = await gpu.readRegions([{ buffer: out, offset: 4, size: 4 }, { buffer: w, size: 8 }]);
    assertEquals([new Float32Array(a)[0], ...new Uint32Array(b)], [expected[1], words[0], words[1]]);
    for (const b of [w, out, on, off]) b.destroy();
  }
});

dawnTest("subgroups through the prelude's enable directive (where the device has them)", async (gpu) => {
  if (!gpu.has("subgroups")) return;
  const kernel: Kernel = {
    name: "dawn_subgroup_sum",
    source: /* wgsl */ `
@group(0) @binding(0) var<storage, read> ctl: array<u32>;
@group(0) @binding(1) var<storage, read_write> out: array<u32>;
@compute @workgroup_size(64)
fn main(@builtin(local_invocation_index) t: u32, @builtin(subgroup_size) sg: u32) {
  if (gated_off()) { return; }
  let s = subgroupAdd(1u);
  if (t == 0u) { out[0] = s; out[1] = sg; }
}
`,
  };
  const out = gpu.buffer("out", 8);
  gpu.run([gpu.dispatch(kernel, {}, [ctlBuffer(gpu), out], [1, 1, 1])]);
  const [sum, size] = await gpu.readU32(out);
  assertEquals(sum, size, "subgroupAdd(1) is the subgroup size");
  assert(size >= 4 && size <= 64, `subgroup size ${size}`);
});
