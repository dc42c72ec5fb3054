/**
 * bf16 on the CPU: round-to-nearest-even conversion from f32 (as PyTorch's `.to(torch.bfloat16)` does), and the
 * packed layout the kernels read: two bf16 per u32, the lower index in the low 16 bits.
 * @module
 */

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** The bf16 bit pattern nearest to `x` (ties to even; NaN stays NaN). */
export function f32ToBf16Bits(x: number): number {
  f32[0] = x;
  const u = u32[0];
  if ((u & 0x7fffffff) > 0x7f800000) return ((u >>> 16) | 0x40) & 0xffff;
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
}

/** The f32 value of a bf16 bit pattern (exact). */
export function bf16BitsToF32(bits: number): number {
  u32[0] = (bits & 0xffff) << 16;
  return f32[0];
}

/** `x` rounded to the nearest bf16, as f32. */
export function roundBf16(x: number): number {
  return bf16BitsToF32(f32ToBf16Bits(x));
}

/** Every element of `values` rounded to bf16 (a new array). */
export function roundBf16Array(values: Float32Array): Float32Array {
  const out = new Float32Array(values.length);
  for (let i = 0; i < values.length; i++) out[i] = roundBf16(values[i]);
  return out;
}

/** Packs a row-major [rows, cols] f32 matrix as bf16 pairs: `cols` must be even. */
export function packBf16(values: Float32Array, cols = values.length): Uint32Array {
  if (cols % 2 !== 0) throw new Error(`packBf16: a row of ${cols} values cannot be packed two per u32`);
  const out = new Uint32Array(values.length / 2);
  for (let i = 0; i < out.length; i++) {
    out[i] = (f32ToBf16Bits(values[2 * i]) | (f32ToBf16Bits(values[2 * i + 1]) << 16)) >>> 0;
  }
  return out;
}

/** Packs raw bf16 bit patterns (e.g. straight from a safetensors file) two per u32. */
export function packBf16Bits(bits: Uint16Array): Uint32Array {
  if (bits.length % 2 !== 0) throw new Error(`packBf16Bits: ${bits.length} values cannot be packed two per u32`);
  return new Uint32Array(bits.buffer.slice(bits.byteOffset, bits.byteOffset + bits.byteLength));
}

/** Unpacks bf16 pairs to f32. */
export function unpackBf16(packed: Uint32Array): Float32Array {
  const out = new Float32Array(packed.length * 2);
  const bits = new Uint32Array(out.buffer);
  for (let i = 0; i < packed.length; i++) {
    bits[2 * i] = (packed[i] & 0xffff) << 16;
    bits[2 * i + 1] = packed[i] & 0xffff0000;
  }
  return out;
}
