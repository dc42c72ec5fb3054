/**
 * Reductions across the threads of a workgroup, as WGSL generated for a kernel: by subgroup shuffles where the device
 * has `subgroups` (no barrier, no workgroup memory), else by a tree in workgroup memory (a barrier per level). One
 * generator serves every kernel that reduces (attention, norms), so the two paths are written once.
 *
 * The generated functions (every thread of the workgroup must call them, in uniform control flow: the tree path has
 * barriers):
 *   lanes_sum4(v: vec4<f32>, t, lanes), lanes_sum(v: f32, t, lanes), lanes_max(v: f32, t, lanes):
 *     the sum (max) over the `lanes` consecutive threads t = group * lanes + lane, returned to each of them; `lanes`
 *     a power of two, at most SG_LANES on the subgroup path.
 *   workgroup_sum(v: f32, t) -> f32: the sum over all WG threads, returned to each of them.
 * They need the kernel's override WG (threads, a power of two) and declare `red_tree` (WG vec4 of workgroup memory on
 * the tree path) and the override SG_LANES (the narrowest subgroup the device runs, from `subgroupWidth`).
 *
 * Measured on an H200: an RMSNorm of one 4096-wide row took 16.7 us as a 256-thread tree (8 barriers, 16 loads a
 * thread); see docs/PERF.md for what the subgroup path brings.
 * @module
 */

import type { Gpu } from "./runtime.ts";

/**
 * The narrowest subgroup the device may run (the most lanes a shuffle reduction can span), or 0 without `subgroups`
 * or when the adapter does not say (subgroupMinSize): 32 on NVIDIA, 8 on lavapipe.
 */
export function subgroupWidth(gpu: Gpu): number {
  const min = (gpu.adapter.info as unknown as { subgroupMinSize?: number }).subgroupMinSize ?? 0;
  return gpu.has("subgroups") && min >= 4 ? Math.min(min, 32) : 0;
}

/**
 * WGSL statements that raise the workgroup atomic `target` (an `atomic<u32>`) to the largest `value` (a u32) of the
 * workgroup's threads: with `subgroups` each subgroup's maximum first (`subgroupMax`) and one atomic a subgroup, from
 * its invocation 0 (the kernel names `@builtin(subgroup_invocation_id)` `lane`), else one atomic a thread. The caller
 * zeroes `target` before (behind a barrier) and reads it after a barrier. `pad` indents the second line.
 */
export function atomicMaxWgsl(target: string, value: string, subgroups: boolean, pad = "  "): string {
  return subgroups
    ? `let sg_max = subgroupMax(${value}); // one atomic a subgroup, not one a thread\n${pad}if (lane == 0u) { atomicMax(${target}, sg_max); }`
    : `atomicMax(${target}, ${value});`;
}

/** Bytes of workgroup memory the reductions declare for `wg` threads. */
export function reductionBytes(subgroups: boolean, wg: number): number {
  return 16 * (subgroups ? Math.max(1, wg / 4) : wg);
}

/** The WGSL reductions (see the module comment); `subgroups` picks the shuffle path. */
export function reductionsWgsl(subgroups: boolean): string {
  const lanes = (name: string, type: string, op: (a: string, b: string) => string) =>
    subgroups
      ? `
fn ${name}(v: ${type}, t: u32, lanes: u32) -> ${type} {
  var x = v;
  for (var st = 1u; st < lanes; st *= 2u) { x = ${op("x", "subgroupShuffleXor(x, st)")}; }
  return x;
}`
      : `
fn ${name}(v: ${type}, t: u32, lanes: u32) -> ${type} {
  let lane = t % lanes;
  red_tree[t] = vec4<f32>(v);
  workgroupBarrier();
  for (var st = lanes / 2u; st > 0u; st /= 2u) {
    if (lane < st) { red_tree[t] = ${op("red_tree[t]", "red_tree[t + st]")}; }
    workgroupBarrier();
  }
  let total = red_tree[t - lane];
  workgroupBarrier();
  return total${type === "f32" ? ".x" : ""};
}`;
  const whole = subgroups
    ? `
fn workgroup_sum(v: f32, t: u32) -> f32 {
  let lanes = min(WG, SG_LANES);
  let part = lanes_sum(v, t, lanes);
  if (t % lanes == 0u) { red_tree[t / lanes / 4u][(t / lanes) % 4u] = part; }
  workgroupBarrier();
  var s = 0.0;
  for (var i = 0u; i < WG / lanes; i++) { s += red_tree[i / 4u][i % 4u]; }
  workgroupBarrier();
  return s;
}`
    : `
fn workgroup_sum(v: f32, t: u32) -> f32 { return lanes_sum(v, t, WG); }`;
  return `
// ---- reductions (kernels/reduce.ts), ${subgroups ? "subgroup shuffles" : "tree in workgroup memory"} ----
override SG_LANES: u32 = 32u;
var<workgroup> red_tree: array<vec4<f32>, ${subgroups ? "max(1u, WG / 4u)" : "WG"}>;
${lanes("lanes_sum4", "vec4<f32>", (a, b) => `${a} + ${b}`)}
${lanes("lanes_sum", "f32", (a, b) => `${a} + ${b}`)}
${lanes("lanes_max", "f32", (a, b) => `max(${a}, ${b})`)}
${whole}
// ---- end of reductions ----
`;
}
