/**
 * The element type of the K/V caches and the WGSL that reads and writes them, so that every attention kernel and the
 * QK-norm + RoPE kernel that appends to the caches stay one source for both types.
 *
 * - `bf16` (the default, as the PyTorch peers and the original benchmark keep the cache): two values per u32, the
 *   lower index in the low half, rounded to nearest even (`bf16_bits`, the GPU twin of kernels/bf16.ts). Half the
 *   bytes a decode step's attention reads.
 * - `f32`: exact; the cache the HF fixture tests were first written against.
 *
 * Caches are position-major [maxPos, D] in elements either way. The read side gives kernels `load_k(i)` and
 * `load_v(i)`, the vec4 of f32 at vec4 index i (elements 4i .. 4i + 3), over bindings `kc` and `vc`, and the same
 * split in two for kernels that keep reads in flight in registers: `raw_k(i)` / `raw_v(i)` return them as the cache
 * holds them (`KvRaw`: vec2<u32> of four bf16, or vec4<f32>; half the registers for bf16), `kv_f32(r)` converts; the write side
 * gives `store_k2(e, a, b)` and `store_v2(e, a, b)`, elements e (even) and e + 1, over bindings `k_cache`, `v_cache`.
 * The measured error of each type against the f64 reference is in ARCHITECTURE.md.
 * @module
 */

import { BF16_ROUND_WGSL } from "../weights/bf16_round.ts";

/** Element type of the K/V caches. */
export type KvDtype = "bf16" | "f32";

/** The cache types, the default first. */
export const KV_DTYPES: readonly KvDtype[] = ["bf16", "f32"];

/** Bytes of one cached element. */
export function kvElementBytes(dtype: KvDtype): number {
  return dtype === "bf16" ? 2 : 4;
}

/**
 * WGSL bindings `kc` and `vc` (at the given binding numbers) and `load_k` / `load_v`. With `writable` (a kernel that
 * both reads the caches and appends to them, the fused decode attention) the bindings are read_write and also give
 * `store_k4(i, v)` / `store_v4(i, v)` (the vec4 at vec4 index i) and `as_kv4(v)`: v as the cache will hold it (bf16:
 * rounded to nearest even, so fresh keys are used exactly as a later read of the cache would see them).
 */
export function kvReadWgsl(dtype: KvDtype, kBinding: number, vBinding: number, writable = false): string {
  const access = writable ? "read_write" : "read";
  if (dtype === "f32") {
    return `
@group(0) @binding(${kBinding}) var<storage, ${access}> kc: array<vec4<f32>>;
@group(0) @binding(${vBinding}) var<storage, ${access}> vc: array<vec4<f32>>;
alias KvRaw = vec4<f32>;
fn raw_k(i: u32) -> KvRaw { return kc[i]; }
fn raw_v(i: u32) -> KvRaw { return vc[i]; }
fn kv_f32(r: KvRaw) -> vec4<f32> { return r; }
fn load_k(i: u32) -> vec4<f32> { return kc[i]; }
fn load_v(i: u32) -> vec4<f32> { return vc[i]; }${
      writable
        ? `
fn as_kv4(v: vec4<f32>) -> vec4<f32> { return v; }
fn store_k4(i: u32, v: vec4<f32>) { kc[i] = v; }
fn store_v4(i: u32, v: vec4<f32>) { vc[i] = v; }`
        : ""
    }`;
  }
  return `
@group(0) @binding(${kBinding}) var<storage, ${access}> kc: array<vec2<u32>>; // 4 bf16 per vec2
@group(0) @binding(${vBinding}) var<storage, ${access}> vc: array<vec2<u32>>;
fn bf16x4_kv(w: vec2<u32>) -> vec4<f32> { return vec4<f32>(bf16_lo(w.x), bf16_hi(w.x), bf16_lo(w.y), bf16_hi(w.y)); }
alias KvRaw = vec2<u32>;
fn raw_k(i: u32) -> KvRaw { return kc[i]; }
fn raw_v(i: u32) -> KvRaw { return vc[i]; }
fn kv_f32(r: KvRaw) -> vec4<f32> { return bf16x4_kv(r); }
fn load_k(i: u32) -> vec4<f32> { return bf16x4_kv(kc[i]); }
fn load_v(i: u32) -> vec4<f32> { return bf16x4_kv(vc[i]); }${
    writable
      ? `
${BF16_ROUND_WGSL}
fn pack_kv4(v: vec4<f32>) -> vec2<u32> { return vec2<u32>(pack_bf16x2(v.xy), pack_bf16x2(v.zw)); }
fn as_kv4(v: vec4<f32>) -> vec4<f32> { return bf16x4_kv(pack_kv4(v)); }
fn store_k4(i: u32, v: vec4<f32>) { kc[i] = pack_kv4(v); }
fn store_v4(i: u32, v: vec4<f32>) { vc[i] = pack_kv4(v); }`
      : ""
  }`;
}

/** WGSL bindings `k_cache` and `v_cache` (read_write) and `store_k2` / `store_v2` (elements e, e + 1; e even). */
export function kvWriteWgsl(dtype: KvDtype, kBinding: number, vBinding: number): string {
  if (dtype === "f32") {
    return `
@group(0) @binding(${kBinding}) var<storage, read_write> k_cache: array<f32>;
@group(0) @binding(${vBinding}) var<storage, read_write> v_cache: array<f32>;
fn store_k2(e: u32, a: f32, b: f32) { k_cache[e] = a; k_cache[e + 1u] = b; }
fn store_v2(e: u32, a: f32, b: f32) { v_cache[e] = a; v_cache[e + 1u] = b; }`;
  }
  return `
@group(0) @binding(${kBinding}) var<storage, read_write> k_cache: array<u32>; // 2 bf16 per u32
@group(0) @binding(${vBinding}) var<storage, read_write> v_cache: array<u32>;
${BF16_ROUND_WGSL}
fn store_k2(e: u32, a: f32, b: f32) { k_cache[e / 2u] = pack_bf16x2(vec2<f32>(a, b)); }
fn store_v2(e: u32, a: f32, b: f32) { v_cache[e / 2u] = pack_bf16x2(vec2<f32>(a, b)); }`;
}
