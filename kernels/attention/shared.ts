/**
 * What the attention kernels share: the shape checks of their builders and the workgroup-memory budget. (The online
 * softmax of prefill lives in its registers, generated with the kernel: prefill.ts.)
 * @module
 */

/** Smallest power of two >= n (n >= 1). */
export function nextPowerOfTwo(n: number): number {
  let p = 1;
  while (p < n) p *= 2;
  return p;
}

/** Workgroup memory a kernel may use: the WebGPU default limit, so the kernels run on every adapter. */
export const WORKGROUP_BYTES = 16384;

/** Throws, naming the builder `who`, unless heads, head_dim and workgroup size are ones the attention kernels run. */
export function checkHeadShape(who: string, nHeads: number, headDim: number, workgroupSize: number): void {
  if (!Number.isInteger(nHeads) || nHeads < 1) throw new Error(`${who}: ${nHeads} heads is not a positive integer`);
  if (workgroupSize !== nextPowerOfTwo(workgroupSize) || workgroupSize < 32 || workgroupSize > 256) {
    throw new Error(`${who}: workgroup size ${workgroupSize} is not a power of two from 32 to 256`);
  }
  if (headDim !== nextPowerOfTwo(headDim) || headDim < 8 || headDim > 4 * workgroupSize) {
    throw new Error(`${who}: head_dim ${headDim} is not a power of two from 8 to ${4 * workgroupSize}`);
  }
}
