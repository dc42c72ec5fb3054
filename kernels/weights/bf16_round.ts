/**
 * WGSL for f32 -> bf16 conversion, shared by the kernels that write bf16 weights (random fill, LoRA merge). It is the
 * GPU twin of `f32ToBf16Bits` in kernels/bf16.ts (round to nearest, ties to even; NaN stays NaN), so a CPU reference
 * that rounds with `f32ToBf16Bits` reproduces the GPU's bits exactly. Kernels paste it into their source.
 * @module
 */

/** WGSL functions `bf16_bits(x: f32) -> u32` (the bf16 bit pattern in the low 16 bits) and `pack_bf16x2(v) -> u32`. */
export const BF16_ROUND_WGSL = /* wgsl */ `
// f32 -> bf16 bits, round to nearest even; a NaN stays a (quiet) NaN. Same bit trick as f32ToBf16Bits
// (kernels/bf16.ts): adding 0x7fff plus the lowest kept bit carries into the kept half exactly when the dropped half
// is above the tie, or at the tie with an odd kept half. Overflow rounds to infinity, as it should.
fn bf16_bits(x: f32) -> u32 {
  let u = bitcast<u32>(x);
  if ((u & 0x7fffffffu) > 0x7f800000u) { return ((u >> 16u) | 0x40u) & 0xffffu; }
  return (u + 0x7fffu + ((u >> 16u) & 1u)) >> 16u;
}
// Two values as packed bf16: v.x in the low half (the lower index), v.y in the high half.
fn pack_bf16x2(v: vec2<f32>) -> u32 { return bf16_bits(v.x) | (bf16_bits(v.y) << 16u); }
`;
