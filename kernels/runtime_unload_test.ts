/**
 * The isolate's shared Gpu (`getGpu`) releases its device when the isolate unloads: under `deno test` every test
 * module runs in an isolate of its own, and devices kept to the process's end ran Dawn out of adapters (session Y).
 * A module of its own, since the test ends the device.
 */

import { getGpu } from "./runtime.ts";

Deno.test({
  name: "getGpu's device is destroyed when the isolate unloads",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const gpu = await getGpu();
    let lost: GPUDeviceLostInfo | null = null;
    gpu.device.lost.then((info) => lost = info);
    await new Promise((r) => setTimeout(r, 50));
    if (lost !== null) throw new Error("the device was lost before the isolate unloaded");
    globalThis.dispatchEvent(new Event("unload"));
    const info = await Promise.race([gpu.device.lost, new Promise((r) => setTimeout(() => r(null), 5000))]);
    if (info === null) throw new Error("the device outlived the isolate's unload");
    if ((info as GPUDeviceLostInfo).reason !== "destroyed") {
      throw new Error(`the device was lost for another reason: ${(info as GPUDeviceLostInfo).reason}`);
    }
  },
});
