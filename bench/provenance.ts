/**
 * Where a run came from, for results.json: the commit of the suite's own checkout and whether its tracked files were
 * edited, the CPU, and the WebGPU backend and driver as far as this process can tell (Deno's adapter info names
 * neither: it gives vendor, device and description only).
 * @module
 */

import { dirname, fromFileUrl, join } from "@std/path";
import { pathExists } from "../common/files.ts";
import { ATTENTION_TUNING_ENV } from "../kernels/attention/decode.ts";
import { MATVEC_INTERLEAVE_ENV } from "../kernels/matmul/matvec.ts";
import { PREFILL_GEMM_ENV, SPLIT_K_ENV, TAIL_SPLIT_ENV } from "../kernels/matmul/linear.ts";
import { PREFILL_ATTENTION_ENV } from "../kernels/attention/prefill_tensor.ts";
import {
  LOCKSTEP_ROWS_ENV,
  OVERLAP_HEADS_ENV,
  PREFETCH_ENV,
  PREFILL_ATT_ROWS_ENV,
  PREFILL_TAIL_ENV,
} from "../model/hydra.ts";
import { POE_PIPELINE_ENV } from "../poe/poe.ts";
import { DAWN_ENABLE_ENV } from "../kernels/runtime.ts";

/** The project's root folder (the one holding bench/). */
export const PROJECT_ROOT: string = fromFileUrl(new URL("../", import.meta.url));

/** stdout of `cmd args` (trimmed), or null when the command is missing, fails or takes over `timeoutMs`. */
async function output(
  cmd: string,
  args: string[],
  opts: { cwd?: string; env?: Record<string, string>; timeoutMs?: number } = {},
): Promise<string | null> {
  try {
    const out = await new Deno.Command(cmd, {
      args,
      cwd: opts.cwd,
      env: opts.env,
      stdout: "piped",
      stderr: "null",
      signal: AbortSignal.timeout(opts.timeoutMs ?? 5000),
    }).output();
    return out.success ? new TextDecoder().decode(out.stdout).trim() : null;
  } catch {
    return null;
  }
}

/** git in checkout `root` only: the ceiling stops git from using a repository that merely encloses `root`. */
function git(root: string, args: string[]): Promise<string | null> {
  return output("git", ["-C", root, ...args], { env: { GIT_CEILING_DIRECTORIES: dirname(root.replace(/\/+$/, "")) } });
}

/**
 * The commit of the suite's own checkout: `HYDRA_BENCH_COMMIT` when set (a copy without .git, e.g. on the GPU
 * machine), else git HEAD when `root` holds a `.git` of its own (a folder, or a worktree's file), else null. Never
 * the commit of a repository that encloses the project folder.
 */
export async function ownCommit(root: string = PROJECT_ROOT): Promise<string | null> {
  const fromEnv = Deno.env.get("HYDRA_BENCH_COMMIT");
  if (fromEnv) return fromEnv;
  if (!(await pathExists(join(root, ".git")))) return null;
  return await git(root, ["rev-parse", "HEAD"]);
}

/**
 * Whether tracked files of the suite's own checkout differ from its HEAD (files git does not track, such as new run
 * folders, do not count); null when `root` has no `.git` of its own or git cannot tell.
 */
export async function dirtyTree(root: string = PROJECT_ROOT): Promise<boolean | null> {
  if (!(await pathExists(join(root, ".git")))) return null;
  const status = await git(root, ["status", "--porcelain", "--untracked-files=no"]);
  return status === null ? null : status !== "";
}

/** The adapter facts the backend and driver are told from (Deno's GPUAdapterInfo). */
export interface AdapterFacts {
  vendor: string;
  description: string;
}

/** One GPU of `vulkaninfo --summary`. */
export interface VulkanDevice {
  deviceName: string;
  driverName: string;
  driverInfo: string;
}

/** The GPUs listed by `vulkaninfo --summary` output `text` (its "GPUn:" blocks of `key = value` lines). */
export function parseVulkanSummary(text: string): VulkanDevice[] {
  const out: VulkanDevice[] = [];
  for (const block of text.split(/^GPU\d+:\s*$/m).slice(1)) {
    const field = (k: string) => new RegExp(`^\\s*${k}\\s*=\\s*(.*)$`, "m").exec(block)?.[1]?.trim() ?? "";
    out.push({ deviceName: field("deviceName"), driverName: field("driverName"), driverInfo: field("driverInfo") });
  }
  return out;
}

/** The GPUs `vulkaninfo --summary` lists, or null when vulkaninfo is not installed (it is optional). */
export async function vulkanDevices(): Promise<VulkanDevice[] | null> {
  const text = await output("vulkaninfo", ["--summary"]);
  return text === null ? null : parseVulkanSummary(text);
}

/**
 * Vendor ids that only Vulkan reports: Khronos-registered ids above the PCI range (0x10005 is Mesa's, which lavapipe
 * reports; wgpu's GL backend reports PCI ids or 0).
 */
const KHRONOS_VENDOR_MIN = 0x10000;

/**
 * The wgpu backend Deno runs on: `DENO_WEBGPU_BACKEND` when set (Deno passes it to wgpu as the list of backends to
 * try); else "vulkan" when the adapter is a Vulkan device (a Khronos vendor id such as lavapipe's, or a device
 * vulkaninfo lists); else "metal" on macOS; else "unknown" (Deno then tries every backend and does not say which won).
 */
export function wgpuBackend(
  adapter: AdapterFacts,
  env: string | undefined,
  os: string,
  vulkan: readonly VulkanDevice[] | null,
): string {
  if (env && env.trim() !== "") return env.trim().toLowerCase();
  const vendor = Number(adapter.vendor);
  if (Number.isInteger(vendor) && vendor >= KHRONOS_VENDOR_MIN) return "vulkan";
  if (/vulkan|lavapipe|swiftshader/i.test(adapter.description)) return "vulkan";
  if (vulkan?.some((d) => d.deviceName === adapter.description)) return "vulkan";
  return os === "darwin" ? "metal" : "unknown";
}

/**
 * The driver behind the adapter: vulkaninfo's driverName and driverInfo for the device when vulkaninfo is installed;
 * else on an NVIDIA adapter (PCI vendor 0x10de) the kernel module version from /proc/driver/nvidia/version; else the
 * adapter's own description (for lavapipe "llvmpipe (LLVM 15.0.6, 256 bits)").
 */
export async function adapterDriver(adapter: AdapterFacts, vulkan: readonly VulkanDevice[] | null): Promise<string> {
  const device = vulkan?.find((d) => d.deviceName === adapter.description);
  if (device && device.driverName !== "") return `${device.driverName} ${device.driverInfo}`.trim();
  if (Number(adapter.vendor) === 0x10de) {
    const version = await Deno.readTextFile("/proc/driver/nvidia/version").catch(() => "");
    const m = /Kernel Module\s+(?:for\s+\S+\s+)?([\d.]+)/.exec(version);
    if (m) return `NVIDIA ${m[1]}`;
  }
  return adapter.description;
}

/** The CPU's model name (/proc/cpuinfo on Linux, sysctl on macOS, PROCESSOR_IDENTIFIER on Windows), or null. */
export async function cpuModel(): Promise<string | null> {
  if (Deno.build.os === "linux") {
    const info = await Deno.readTextFile("/proc/cpuinfo").catch(() => "");
    return /^(?:model name|Model|Hardware|cpu model)\s*:\s*(.+)$/m.exec(info)?.[1]?.trim() ?? null;
  }
  if (Deno.build.os === "darwin") return await output("sysctl", ["-n", "machdep.cpu.brand_string"]);
  return Deno.env.get("PROCESSOR_IDENTIFIER") ?? null;
}

/**
 * The environment variables that change which kernels a model records (the GPU's A/B switches, each documented where it
 * is read): a run with any of them set does not measure the defaults, so results.json names them.
 */
export const ENGINE_ENV: readonly string[] = [
  ATTENTION_TUNING_ENV,
  MATVEC_INTERLEAVE_ENV,
  OVERLAP_HEADS_ENV,
  LOCKSTEP_ROWS_ENV,
  PREFETCH_ENV,
  PREFILL_TAIL_ENV,
  PREFILL_ATT_ROWS_ENV,
  PREFILL_GEMM_ENV,
  PREFILL_ATTENTION_ENV,
  SPLIT_K_ENV,
  TAIL_SPLIT_ENV,
  POE_PIPELINE_ENV,
  DAWN_ENABLE_ENV,
];

/** The `ENGINE_ENV` variables set in `env` (default: this process's), by name. */
export function engineOverrides(env: (name: string) => string | undefined = (n) => Deno.env.get(n)): Record<
  string,
  string
> {
  return Object.fromEntries(ENGINE_ENV.flatMap((n) => {
    const v = env(n);
    return v === undefined || v === "" ? [] : [[n, v]];
  }));
}
