/**
 * tools/vk_stats: the layer builds, the Vulkan loader puts it in front of the driver, and WebGPU still works through
 * it. A child Deno computes on the adapter with the layer enabled and prints what it read back; the layer's lines
 * appear on its stderr (a line a pipeline on a driver with VK_KHR_pipeline_executable_properties, such as NVIDIA's;
 * without it, as on lavapipe, the sentence saying so). Ignored, with the reason in its name, where no C compiler, no
 * Vulkan headers (Debian's libvulkan-dev; `VULKAN_INCLUDE` points elsewhere) or no adapter is here.
 */

import { assert, assertEquals, assertStringIncludes } from "@std/assert";
import { fromFileUrl } from "@std/path";

const BUILD = fromFileUrl(new URL("../../tools/vk_stats/build.sh", import.meta.url));
const INCLUDE = Deno.env.get("VULKAN_INCLUDE") ?? "/usr/include";

/** A compute pass writing 42, read back: what the child prints is "read 42" (or "no adapter"). */
const CHILD = `
const adapter = await navigator.gpu.requestAdapter();
if (!adapter) {
  console.log("no adapter");
  Deno.exit(0);
}
const device = await adapter.requestDevice();
const module = device.createShaderModule({
  code: "@group(0) @binding(0) var<storage, read_write> y: array<u32>;\\n" +
    "@compute @workgroup_size(1) fn main() { y[0] = 42u; }",
});
const pipeline = device.createComputePipeline({ layout: "auto", compute: { module, entryPoint: "main" } });
const y = device.createBuffer({ size: 4, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC });
const read = device.createBuffer({ size: 4, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
const encoder = device.createCommandEncoder();
const pass = encoder.beginComputePass();
pass.setPipeline(pipeline);
pass.setBindGroup(0, device.createBindGroup({
  layout: pipeline.getBindGroupLayout(0),
  entries: [{ binding: 0, resource: { buffer: y } }],
}));
pass.dispatchWorkgroups(1);
pass.end();
encoder.copyBufferToBuffer(y, 0, read, 0, 4);
device.queue.submit([encoder.finish()]);
await read.mapAsync(GPUMapMode.READ);
console.log("read " + new Uint32Array(read.getMappedRange())[0]);
`;

/** Runs CHILD with `env` added to this process's environment. */
async function child(env: Record<string, string>): Promise<{ stdout: string; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", CHILD],
    env,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = (b: Uint8Array) => new TextDecoder().decode(b);
  return { stdout: text(out.stdout), stderr: text(out.stderr) };
}

/** Why the test cannot run here (or null), and CHILD's output without the layer where it ran. */
async function missing(): Promise<{ why: string | null; plain?: { stdout: string; stderr: string } }> {
  try {
    await Deno.stat(`${INCLUDE}/vulkan/vk_layer.h`);
  } catch {
    return { why: `no Vulkan headers in ${INCLUDE} (Debian: libvulkan-dev)` };
  }
  const cc = await new Deno.Command("sh", { args: ["-c", "command -v cc"], stdout: "null" }).output();
  if (!cc.success) return { why: "no C compiler (cc)" };
  const plain = await child({});
  return { why: plain.stdout.includes("no adapter") ? "no WebGPU adapter" : null, plain };
}

const { why, plain } = await missing();

Deno.test({
  name: "tools/vk_stats: the layer builds, loads in front of the driver, and leaves WebGPU working" +
    (why ? ` (skipped: ${why})` : ""),
  ignore: why !== null,
  fn: async () => {
    const dir = await Deno.makeTempDir();
    try {
      const build = await new Deno.Command("sh", {
        args: [BUILD, dir],
        env: { VULKAN_INCLUDE: INCLUDE },
        stdout: "piped",
        stderr: "piped",
      }).output();
      assert(build.success, `build.sh failed: ${new TextDecoder().decode(build.stderr)}`);
      // without the layer (the run that found the adapter): the kernel's value, and no line of the layer's
      assertEquals(plain!.stdout.trim(), "read 42");
      assert(!plain!.stderr.includes("[vk_stats]"), plain!.stderr);
      // with it: the same value, and the layer's word on the device it saw created
      // (and VK_STATS_IR: each internal representation the driver gives, written to a file the layer names)
      const irs = await Deno.makeTempDir({ dir });
      const layered = await child({
        VK_LAYER_PATH: dir,
        VK_INSTANCE_LAYERS: "VK_LAYER_HYDRA_pipeline_stats",
        VK_STATS_IR: irs,
      });
      assertEquals(layered.stdout.trim(), "read 42", layered.stderr);
      assert(/\[vk_stats\] (device created, statistics|the driver lacks)/.test(layered.stderr), layered.stderr);
      if (layered.stderr.includes("statistics on")) {
        assertStringIncludes(layered.stderr, "[vk_stats] pipeline 0");
        const written = [...layered.stderr.matchAll(/-> (\S+\.txt)$/gm)].map((m) => m[1]);
        assert(written.length > 0 || layered.stderr.includes("no internal representations"), layered.stderr);
        for (const path of written) assert((await Deno.stat(path)).isFile, path);
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
