/**
 * The WebGPU runtime every kernel runs on: one device per process, requested with the adapter's maximum limits,
 * a pipeline cache keyed by kernel + override constants, buffer helpers, bind groups, readback (each one counted as a
 * sync point) and error scopes turned into clear errors.
 *
 * Design rules (see ARCHITECTURE.md): shapes are WGSL override constants fixed when a pipeline is built; everything
 * data-dependent (positions, lengths, token ids) lives in GPU buffers; every GPU object is made at load time.
 *
 * With `HYDRA_WGSL_DUMP=DIR` in the environment, every pipeline the process builds also writes the WGSL it was built
 * from (prelude + source, its override constants in a header comment) to `DIR/<kernel>-<variant>.wgsl`, so generated
 * kernels can be read and diffed.
 * @module
 */

import { createHash } from "node:crypto";
import { join } from "@std/path";
import { UserError } from "../common/errors.ts";
import { preludeFor } from "./prelude.ts";

/** A kernel: a name (for errors and the pipeline cache) and its WGSL source, without the shared prelude. */
export interface Kernel {
  readonly name: string;
  readonly source: string;
}

/** Override constants of one pipeline. */
export type Constants = Record<string, number | boolean>;

/** One recorded dispatch, made at load time and replayed into any compute pass. */
export interface Dispatch {
  readonly label: string;
  readonly pipeline: GPUComputePipeline;
  readonly bindGroup: GPUBindGroup;
  readonly workgroups: readonly [number, number, number];
  /** The override constants the pipeline was built with (the profiler reads shapes from them). */
  readonly constants: Constants;
}

/** A buffer region for a bind group entry. */
export interface BufferSlice {
  buffer: GPUBuffer;
  offset?: number;
  size?: number;
}

/** What was asked of the adapter and what it granted, for the results' environment block. */
export interface GpuDescription {
  /** The WebGPU implementation: `deno` (built-in wgpu) or `dawn` (npm `webgpu`). */
  runtime: WebgpuRuntime;
  /** Its version: Deno's for `deno`, the npm package for `dawn`. */
  runtimeVersion: string;
  /** Instance toggles the runtime was created with (empty for `deno`). */
  toggles: string[];
  vendor: string;
  architecture: string;
  device: string;
  description: string;
  isFallbackAdapter: boolean;
  backend: string;
  featuresGranted: string[];
  limitsGranted: Record<string, number>;
}

/** Optional features this suite uses when the adapter has them. */
export const OPTIONAL_FEATURES = [
  "shader-f16",
  "timestamp-query",
  "subgroups",
  // Dawn only: tensor cores from WGSL (kernels/matmul/subgroup_matrix.ts).
  "chromium-experimental-subgroup-matrix",
] as const;

/**
 * The WebGPU implementations a Gpu can be made on: Deno's built-in (wgpu, the default and what the suite is specified
 * on) and Dawn through the npm package `webgpu` (opt-in; see ARCHITECTURE.md "Two WebGPU runtimes").
 */
export const WEBGPU_RUNTIMES = ["deno", "dawn"] as const;
/** One of WEBGPU_RUNTIMES. */
export type WebgpuRuntime = typeof WEBGPU_RUNTIMES[number];

/** The npm package that carries Dawn's Node-API addon, as the import map pins it. */
export const DAWN_PACKAGE = "webgpu@0.6.2";

/**
 * Dawn's instance toggles. Vulkan is the backend measured on the H200; `vulkan_enable_f16_on_nvidia` is what makes the
 * NVIDIA adapter list `shader-f16` (and the f16 subgroup-matrix configurations); `allow_unsafe_apis` exposes the
 * experimental subgroup matrices and `chromium_disable_uniformity_analysis` (kernels/prelude.ts). Dawn quantizes
 * timestamp queries by default (a browser's defence against timing attacks): on the H200 every Dawn kernel time of
 * 2026-11-30 came in steps of 16.4 us, so `timestamp_quantization` is turned off.
 *
 * `disable_robustness`: Dawn clamps every buffer access of every shader to its binding (a browser's defence against
 * untrusted shaders). These kernels bound their own accesses (each is tested at sizes that are not multiples of its
 * tiles), so a run on Dawn drops the clamps, as a native engine runs. Measured on the H200 (7B, two calls, docs/PERF.md
 * session U): TTFT 387 -> 301 ms at 2,048 tokens and 32.9 -> 27.1 ms at 128, decode 5.111 -> 4.907 ms; the whole kernel,
 * model and PoE suite passes on Dawn without them. Deno's wgpu offers no such switch.
 * `HYDRA_DAWN_ENABLE=-disable_robustness` puts the clamps back for an A/B.
 */
export const DAWN_TOGGLES = [
  "backend=vulkan",
  "enable-dawn-features=allow_unsafe_apis,vulkan_enable_f16_on_nvidia,disable_robustness",
  "disable-dawn-features=timestamp_quantization",
] as const;

/**
 * `HYDRA_DAWN_ENABLE=<toggle>[,<toggle>]`: Dawn toggles to enable besides DAWN_TOGGLES' own, for an A/B on the GPU; a
 * name with a leading `-` takes one of DAWN_TOGGLES' enabled toggles away (`-disable_robustness`). results.json records
 * the toggles a run used (`runtime_toggles`, and the variable in `provenance.engine_overrides`).
 */
export const DAWN_ENABLE_ENV = "HYDRA_DAWN_ENABLE";

/** DAWN_TOGGLES changed by `value` (default: HYDRA_DAWN_ENABLE's): its names enabled, its `-` names no longer. */
export function dawnToggles(value: string | undefined = Deno.env.get(DAWN_ENABLE_ENV)): string[] {
  const names = (value ?? "").split(",").map((t) => t.trim()).filter((t) => t !== "");
  for (const t of names) {
    if (!/^-?[a-z0-9_]+$/.test(t)) {
      throw new UserError(
        `${DAWN_ENABLE_ENV}: "${t}" is not a Dawn toggle name (lower case and underscores, "-" in front to remove one).`,
      );
    }
  }
  const drop = new Set(names.filter((t) => t.startsWith("-")).map((t) => t.slice(1)));
  const add = names.filter((t) => !t.startsWith("-"));
  const prefix = "enable-dawn-features=";
  return DAWN_TOGGLES.map((t) => {
    if (!t.startsWith(prefix)) return t;
    const enabled = t.slice(prefix.length).split(",").filter((n) => !drop.has(n));
    return prefix + [...new Set([...enabled, ...add])].join(",");
  });
}

/** The environment variable that picks the runtime of `getGpu()` (tests and tools): `deno` (default) or `dawn`. */
export const WEBGPU_ENV = "HYDRA_WEBGPU";

/** Limits requested at the adapter's maximum (the WebGPU defaults are far below what an H100 allows). */
const MAX_LIMITS = [
  "maxStorageBufferBindingSize",
  "maxBufferSize",
  "maxComputeWorkgroupStorageSize",
  "maxComputeInvocationsPerWorkgroup",
  "maxComputeWorkgroupSizeX",
  "maxComputeWorkgroupSizeY",
  "maxComputeWorkgroupSizeZ",
  "maxComputeWorkgroupsPerDimension",
  "maxStorageBuffersPerShaderStage",
  "maxBindGroups",
] as const;

const STORAGE_USAGE = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;

/** The environment variable naming the folder that receives the WGSL of every pipeline built (see `dumpWgsl`). */
const WGSL_DUMP_ENV = "HYDRA_WGSL_DUMP";

const NO_ADAPTER = "No WebGPU adapter was found: install a GPU driver with Vulkan support, or on a machine without " +
  "a GPU Mesa's software Vulkan driver (Debian/Ubuntu: `sudo apt-get install libvulkan1 mesa-vulkan-drivers`), " +
  "then run again.";

/** The process's GPU: device, granted features and limits, pipeline cache, and the sync-point counter. */
export class Gpu {
  /** Number of CPU waits on the GPU (readbacks and onSubmittedWorkDone) since the device was made. */
  syncPoints = 0;
  readonly #modules = new Map<string, GPUShaderModule>();
  readonly #pipelines = new Map<string, GPUComputePipeline>();
  #lost: string | null = null;
  /** Where the WGSL of each pipeline built is written (`HYDRA_WGSL_DUMP`), or null. */
  readonly #wgslDump = Deno.env.get(WGSL_DUMP_ENV) || null;

  private constructor(
    /**
     * The runtime's entry point, held for the device's life: Dawn's instance lives in this object, and once the
     * garbage collector finalizes it every pending map or work-done promise hangs (measured on the H200).
     */
    readonly entry: GPU,
    readonly adapter: GPUAdapter,
    readonly device: GPUDevice,
    readonly description: GpuDescription,
  ) {
    device.lost.then((info) => {
      this.#lost = info.message || info.reason || "unknown reason";
    });
  }

  /**
   * Requests a high-performance adapter of `runtime` (default `deno`) and a device at the adapter's limits. Throws
   * UserError when there is none.
   */
  static async create(runtime: WebgpuRuntime = "deno"): Promise<Gpu> {
    const toggles = runtime === "dawn" ? dawnToggles() : []; // read once: what the instance uses is what is recorded
    const entry = runtime === "dawn" ? await dawnEntry(toggles) : navigator.gpu;
    if (!entry) throw new UserError(NO_ADAPTER);
    let adapter: GPUAdapter | null = null;
    try {
      adapter = await entry.requestAdapter({ powerPreference: "high-performance" });
    } catch {
      adapter = null;
    }
    if (!adapter) throw new UserError(runtime === "dawn" ? NO_DAWN_ADAPTER : NO_ADAPTER);
    const requiredLimits: Record<string, number> = {};
    for (const name of MAX_LIMITS) {
      const v = (adapter.limits as unknown as Record<string, number>)[name];
      if (typeof v === "number") requiredLimits[name] = v;
    }
    // `subgroups` works on some adapters that do not list it, so it is requested and dropped if refused.
    const listed = OPTIONAL_FEATURES.filter((f) => f === "subgroups" || adapter.features.has(f as GPUFeatureName));
    let device: GPUDevice | null = null;
    for (const features of [listed, listed.filter((f) => f !== "subgroups")]) {
      try {
        device = await adapter.requestDevice({
          requiredFeatures: features as unknown as GPUFeatureName[],
          requiredLimits,
        });
        break;
      } catch {
        device = null;
      }
    }
    if (!device) {
      throw new UserError(
        `The WebGPU adapter "${adapter.info.description}" refused a device with its own advertised limits; ` +
          "update the GPU driver (or Mesa) and run again.",
      );
    }
    const limitsGranted: Record<string, number> = {};
    for (const name of MAX_LIMITS) limitsGranted[name] = (device.limits as unknown as Record<string, number>)[name];
    const info = adapter.info;
    const description: GpuDescription = {
      runtime,
      runtimeVersion: runtime === "dawn" ? DAWN_PACKAGE : `deno ${Deno.version.deno}`,
      toggles,
      vendor: info.vendor,
      architecture: info.architecture,
      device: info.device,
      description: info.description,
      isFallbackAdapter: (info as unknown as { isFallbackAdapter?: boolean }).isFallbackAdapter ?? false,
      backend: runtime === "dawn" ? "vulkan" : Deno.env.get("DENO_WEBGPU_BACKEND") ?? "default",
      featuresGranted: [...device.features].sort(),
      limitsGranted,
    };
    return new Gpu(entry, adapter, device, description);
  }

  /** The prelude of `kernel` on this device (kernels/prelude.ts): enable directives differ by runtime and kernel. */
  preludeOf(kernel: Kernel): string {
    return preludeFor(this.description.runtime, [...this.device.features], kernel.source);
  }

  /** True when the device was granted the feature. */
  has(feature: string): boolean {
    return this.device.features.has(feature as GPUFeatureName);
  }

  /** True for a CPU (software) adapter such as llvmpipe/lavapipe or SwiftShader. */
  get isSoftware(): boolean {
    const d = this.description.description.toLowerCase();
    return this.description.isFallbackAdapter || /llvmpipe|lavapipe|swiftshader|softpipe/.test(d);
  }

  /** The compute pipeline of `kernel` with `constants`, built once and cached. */
  pipeline(kernel: Kernel, constants: Constants = {}): GPUComputePipeline {
    const sorted = JSON.stringify(Object.fromEntries(Object.entries(constants).sort(([a], [b]) => a.localeCompare(b))));
    const key = kernel.name + sorted;
    let pipeline = this.#pipelines.get(key);
    if (pipeline) return pipeline;
    if (this.#wgslDump) dumpWgsl(this.#wgslDump, this.preludeOf(kernel), kernel, sorted);
    let module = this.#modules.get(kernel.name);
    if (!module) {
      module = this.device.createShaderModule({ label: kernel.name, code: this.preludeOf(kernel) + kernel.source });
      this.#modules.set(kernel.name, module);
    }
    const numeric: Record<string, number> = {};
    for (const [k, v] of Object.entries(constants)) numeric[k] = typeof v === "boolean" ? (v ? 1 : 0) : v;
    pipeline = this.device.createComputePipeline({
      label: `${kernel.name}${JSON.stringify(constants)}`,
      layout: "auto",
      compute: { module, entryPoint: "main", constants: numeric },
    });
    this.#pipelines.set(key, pipeline);
    return pipeline;
  }

  /** Checks a storage buffer size against the device's limits and says which knob to change when it is too big. */
  checkBindingSize(label: string, byteSize: number): void {
    const max = this.device.limits.maxStorageBufferBindingSize;
    if (byteSize > max) {
      throw new UserError(
        `The buffer "${label}" needs ${formatBytes(byteSize)} but this GPU binds at most ${formatBytes(max)} per ` +
          "buffer; use a smaller model size or prompt/generation length.",
      );
    }
  }

  /** A storage buffer (also copy source and destination), zero-filled. */
  buffer(label: string, byteSize: number, usage = STORAGE_USAGE): GPUBuffer {
    this.checkBindingSize(label, byteSize);
    const size = Math.max(16, Math.ceil(byteSize / 4) * 4);
    return this.device.createBuffer({ label, size, usage });
  }

  /** A storage buffer holding `data`. */
  upload(label: string, data: Float32Array | Uint32Array | Int32Array, usage = STORAGE_USAGE): GPUBuffer {
    const buffer = this.buffer(label, data.byteLength, usage);
    this.write(buffer, data);
    return buffer;
  }

  /** Writes `data` into `buffer` at byte `offset` (queued; no sync). */
  write(buffer: GPUBuffer, data: Float32Array | Uint32Array | Int32Array, offset = 0): void {
    this.device.queue.writeBuffer(buffer, offset, data.buffer as ArrayBuffer, data.byteOffset, data.byteLength);
  }

  /** Copies `size` bytes of `buffer` from `offset` to the CPU. One sync point. */
  async read(buffer: GPUBuffer, offset = 0, size = buffer.size - offset): Promise<ArrayBuffer> {
    const staging = this.device.createBuffer({
      label: `read ${buffer.label}`,
      size: Math.ceil(size / 4) * 4,
      usage: GPUBufferUsage.COPY_DST | GPUBufferUsage.MAP_READ,
    });
    const encoder = this.device.createCommandEncoder();
    encoder.copyBufferToBuffer(buffer, offset, staging, 0, staging.size);
    this.device.queue.submit([encoder.finish()]);
    this.syncPoints++;
    await staging.mapAsync(GPUMapMode.READ);
    this.assertAlive();
    const copy = staging.getMappedRange().slice(0, size);
    staging.unmap();
    staging.destroy();
    return copy;
  }

  /** Copies several buffer regions to the CPU with one staging buffer and one wait. One sync point. */
  async readRegions(regions: readonly BufferSlice[]): Promise<ArrayBuffer[]> {
    const sizes = regions.map((r) => Math.ceil((r.size ?? r.buffer.size - (r.offset ?? 0)) / 4) * 4);
    const offsets = sizes.map((_, i) => sizes.slice(0, i).reduce((a, b) => a + b, 0));
    const total = sizes.reduce((a, b) => a + b, 0);
    const staging = this.device.createBuffer({
      label: "readRegions",
      size: Math.max(4, total),
      usage: GPUBufferUsage.COPY_DST | GPUBufferUsage.MAP_READ,
    });
    const encoder = this.device.createCommandEncoder();
    regions.forEach((r, i) => encoder.copyBufferToBuffer(r.buffer, r.offset ?? 0, staging, offsets[i], sizes[i]));
    this.device.queue.submit([encoder.finish()]);
    this.syncPoints++;
    await staging.mapAsync(GPUMapMode.READ);
    this.assertAlive();
    const mapped = staging.getMappedRange();
    const out = regions.map((_, i) => mapped.slice(offsets[i], offsets[i] + sizes[i]));
    staging.unmap();
    staging.destroy();
    return out;
  }

  /** Reads `count` f32 values of `buffer` starting at element `first`. One sync point. */
  async readF32(buffer: GPUBuffer, count?: number, first = 0): Promise<Float32Array> {
    const size = count === undefined ? buffer.size - first * 4 : count * 4;
    return new Float32Array(await this.read(buffer, first * 4, size));
  }

  /** Reads `count` u32 values of `buffer` starting at element `first`. One sync point. */
  async readU32(buffer: GPUBuffer, count?: number, first = 0): Promise<Uint32Array> {
    const size = count === undefined ? buffer.size - first * 4 : count * 4;
    return new Uint32Array(await this.read(buffer, first * 4, size));
  }

  /** Waits until the GPU has finished everything submitted. One sync point. */
  async finish(): Promise<void> {
    this.syncPoints++;
    await this.device.queue.onSubmittedWorkDone();
    this.assertAlive();
  }

  /** A bind group for group 0 of `pipeline`, binding i = entries[i]. */
  bindGroup(label: string, pipeline: GPUComputePipeline, entries: readonly (GPUBuffer | BufferSlice)[]): GPUBindGroup {
    return this.device.createBindGroup({
      label,
      layout: pipeline.getBindGroupLayout(0),
      entries: entries.map((e, binding) => ({
        binding,
        // Not `instanceof GPUBuffer`: Dawn's buffers are not instances of Deno's class.
        resource: "buffer" in e ? { buffer: e.buffer, offset: e.offset ?? 0, size: e.size } : { buffer: e },
      })),
    });
  }

  /** A dispatch of `kernel` (built with `constants`) over `workgroups`, binding i = buffers[i]. */
  dispatch(
    kernel: Kernel,
    constants: Constants,
    buffers: readonly (GPUBuffer | BufferSlice)[],
    workgroups: number | readonly [number, number, number],
  ): Dispatch {
    const pipeline = this.pipeline(kernel, constants);
    const grid = typeof workgroups === "number" ? this.grid(workgroups) : workgroups;
    return {
      label: kernel.name,
      pipeline,
      bindGroup: this.bindGroup(kernel.name, pipeline, buffers),
      workgroups: grid,
      constants,
    };
  }

  /**
   * A 2-D grid of at least `count` workgroups within maxComputeWorkgroupsPerDimension. Kernels recover the flat index
   * with the prelude's `flat_workgroup` and return when it is >= their count.
   */
  grid(count: number): [number, number, number] {
    const max = this.device.limits.maxComputeWorkgroupsPerDimension;
    if (count <= max) return [Math.max(1, count), 1, 1];
    const y = Math.ceil(count / max);
    return [Math.ceil(count / y), y, 1];
  }

  /** Encodes `dispatches` into one compute pass and submits them (no wait). */
  run(dispatches: readonly Dispatch[], label = "run"): void {
    const encoder = this.device.createCommandEncoder({ label });
    const pass = encoder.beginComputePass({ label });
    encodeDispatches(pass, dispatches);
    pass.end();
    this.device.queue.submit([encoder.finish()]);
  }

  /**
   * Runs `fn` inside validation and out-of-memory error scopes and turns a captured error into a UserError that says
   * what was being done (`what`) and what to try.
   */
  async scoped<T>(what: string, fn: () => T | Promise<T>): Promise<T> {
    this.device.pushErrorScope("out-of-memory");
    this.device.pushErrorScope("validation");
    let result: T;
    try {
      result = await fn();
    } finally {
      const validation = await this.device.popErrorScope();
      const oom = await this.device.popErrorScope();
      if (oom) {
        // deno-lint-ignore no-unsafe-finally
        throw new UserError(
          `The GPU ran out of memory while ${what}; use a smaller model size, fewer heads or shorter lengths.`,
        );
      }
      if (validation) {
        // deno-lint-ignore no-unsafe-finally
        throw new Error(`WebGPU rejected a call while ${what}: ${validation.message}`);
      }
    }
    this.assertAlive();
    return result;
  }

  /** Throws a UserError when the device has been lost. */
  assertAlive(): void {
    if (this.#lost !== null) {
      throw new UserError(
        `The GPU device was lost (${this.#lost}); the driver may have reset it: run again, with a smaller size if ` +
          "it was out of memory.",
      );
    }
  }

  /** Destroys the device; the Gpu must not be used afterwards. */
  destroy(): void {
    this.#pipelines.clear();
    this.#modules.clear();
    this.device.destroy();
  }
}

/** Recorded dispatch lists by key, each made once (the model's and decoders' load-time programs). */
export class DispatchCache {
  readonly #lists = new Map<string, Dispatch[]>();

  /** The list recorded under `key`, made by `make` the first time. */
  get(key: string, make: () => Dispatch[]): Dispatch[] {
    let d = this.#lists.get(key);
    if (!d) {
      d = make();
      this.#lists.set(key, d);
    }
    return d;
  }

  /** Forgets every list. */
  clear(): void {
    this.#lists.clear();
  }
}

/** True when `gpu`'s runtime offers the WGSL language feature `name` (what `requires name;` needs). */
export function hasWgslFeature(gpu: Pick<Gpu, "entry">, name: string): boolean {
  const entry = gpu.entry as unknown as { wgslLanguageFeatures?: ReadonlySet<string> } | undefined;
  return entry?.wgslLanguageFeatures?.has(name) ?? false;
}

/** Replays recorded dispatches into a compute pass. */
export function encodeDispatches(pass: GPUComputePassEncoder, dispatches: readonly Dispatch[]): void {
  for (const d of dispatches) {
    pass.setPipeline(d.pipeline);
    pass.setBindGroup(0, d.bindGroup);
    pass.dispatchWorkgroups(d.workgroups[0], d.workgroups[1], d.workgroups[2]);
  }
}

/**
 * Writes the WGSL one pipeline is built from to `dir/<kernel>-<variant>.wgsl`: a header comment with the kernel's name
 * and its override constants (`constants`: a JSON object, keys sorted, as the pipeline cache keys them), then the
 * prelude and the kernel's source. `<kernel>` is the name with every character outside [A-Za-z0-9_.-] replaced (the
 * mutants of the tests have long names with quotes); `<variant>` is the first 8 hex digits of the SHA-256 of the name
 * and the constants, the same in every run. Throws UserError when the file cannot be written.
 */
function dumpWgsl(dir: string, prelude: string, kernel: Kernel, constants: string): void {
  const variant = createHash("sha256").update(`${kernel.name}\n${constants}`).digest("hex").slice(0, 8);
  const path = join(dir, `${kernel.name.replace(/[^A-Za-z0-9_.-]+/g, "_").slice(0, 120)}-${variant}.wgsl`);
  const header = `// kernel: ${kernel.name.replace(/\s+/g, " ")}\n// override constants: ${constants}\n`;
  try {
    Deno.mkdirSync(dir, { recursive: true });
    Deno.writeTextFileSync(path, header + prelude + kernel.source);
  } catch (e) {
    throw new UserError(
      `${WGSL_DUMP_ENV}=${dir}: cannot write ${path} (${e instanceof Error ? e.message : e}); set it to a writable ` +
        "folder or unset it.",
    );
  }
}

/** Human-readable byte count ("1.50 GiB"). */
export function formatBytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${n.toFixed(i === 0 ? 0 : 2)} ${units[i]}`;
}

let shared: Promise<Gpu> | null = null;

/**
 * The Gpu of this isolate (the process, or under `deno test` one test module), created on first use, on the runtime
 * `HYDRA_WEBGPU` names (default `deno`). On the built-in runtime its device is destroyed when the isolate unloads
 * (`DESTROYED_AT_UNLOAD`). Why: `deno test` runs each test module in an isolate of its own, so every module made a
 * device that nothing destroyed. On lavapipe the process now and then crashed at exit after every test had passed,
 * glibc "corrupted size vs. prev_size" (docs/PERF.md); some 36 devices torn down at once at exit were the suspect, and
 * six runs since were clean. Dawn's devices are not: destroying one at a test module's unload crashed Deno (SIGSEGV)
 * right after the module's tests on the H200 (session Z), so a Dawn test process keeps its devices to its end (one
 * found no adapter for its 36th module in session Y: docs/DEVICE.md runs the Dawn suite in two processes).
 */
export function getGpu(): Promise<Gpu> {
  if (!shared) {
    const runtime = runtimeFromEnv();
    shared = Gpu.create(runtime);
    if (DESTROYED_AT_UNLOAD.includes(runtime)) {
      let made: Gpu | null = null;
      shared.then((gpu) => made = gpu, () => {});
      globalThis.addEventListener("unload", () => made?.destroy());
    }
  }
  return shared;
}

/** The runtimes whose shared device `getGpu` destroys when the isolate unloads (Dawn's crashed: `getGpu`). */
export const DESTROYED_AT_UNLOAD: readonly WebgpuRuntime[] = ["deno"];

/** The runtime `HYDRA_WEBGPU` names; UserError for anything but `deno` or `dawn`. */
export function runtimeFromEnv(): WebgpuRuntime {
  const v = Deno.env.get(WEBGPU_ENV) || "deno";
  if (!(WEBGPU_RUNTIMES as readonly string[]).includes(v)) {
    throw new UserError(`${WEBGPU_ENV}=${v} is not a WebGPU runtime: set it to ${WEBGPU_RUNTIMES.join(" or ")}.`);
  }
  return v as WebgpuRuntime;
}

/**
 * The runtime a tool's `--webgpu` flag names (`flag`: its value, undefined when not given), else `HYDRA_WEBGPU`'s;
 * UserError for anything but `deno` or `dawn`.
 */
export function runtimeFromFlag(flag: string | undefined): WebgpuRuntime {
  if (flag === undefined) return runtimeFromEnv();
  if (!(WEBGPU_RUNTIMES as readonly string[]).includes(flag)) {
    throw new UserError(`--webgpu ${flag} is not a WebGPU runtime: pass ${WEBGPU_RUNTIMES.join(" or ")}.`);
  }
  return flag as WebgpuRuntime;
}

const NO_DAWN_ADAPTER = "Dawn (npm " + DAWN_PACKAGE + ") found no WebGPU adapter on its Vulkan backend: it needs a " +
  "GPU driver (Mesa's software lavapipe lacks features Dawn requires); use the built-in runtime (--webgpu deno).";

/** Dawn's `GPU` entry point, made with `toggles` (`dawnToggles()`); UserError when its addon cannot be loaded. */
async function dawnEntry(toggles: string[]): Promise<GPU> {
  try {
    const dawn = await import("webgpu");
    return dawn.create(toggles) as unknown as GPU;
  } catch (e) {
    throw new UserError(
      `The Dawn runtime (npm ${DAWN_PACKAGE}) could not be loaded (${e instanceof Error ? e.message : e}); run ` +
        "`deno install` with network access (or stage it for the GPU machine with tools/stage_device_modules.sh), " +
        "or use the built-in runtime (--webgpu deno).",
    );
  }
}

/** Records `dispatches` into one compute pass of `encoder` (`descriptor`: e.g. a label or timestamp writes). */
export function encodePass(
  encoder: GPUCommandEncoder,
  dispatches: readonly Dispatch[],
  descriptor?: GPUComputePassDescriptor,
): void {
  const pass = encoder.beginComputePass(descriptor);
  encodeDispatches(pass, dispatches);
  pass.end();
}
