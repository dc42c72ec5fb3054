/**
 * The isolate's shared Gpu (`getGpu`) releases its device when the isolate unloads on the built-in runtime: under `deno
 * test` every test module runs in an isolate of its own (Dawn's are kept: destroying them crashed, `getGpu`). A module
 * of its own, since the test ends the device.
 */

import { DESTROYED_AT_UNLOAD, getGpu, runtimeFromEnv } from "./runtime.ts";

const runtime = runtimeFromEnv();

Deno.test({
  name: `getGpu's device is destroyed when the isolate unloads${
    DESTROYED_AT_UNLOAD.includes(runtime) ? "" : ` [ignored: ${runtime}'s devices are kept to the process's end]`
  }`,
  ignore: !DESTROYED_AT_UNLOAD.includes(runtime),
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
