/**
 * The device's own memory bandwidth, measured in the same process as the benchmark: a WGSL copy kernel timed with
 * timestamp queries (the ceiling for this suite's kernels) and, for reference, the DMA copy (copyBufferToBuffer) timed
 * by wall clock over many copies. Bytes count what is read plus what is written.
 * @module
 */

import type { Gpu } from "../kernels/runtime.ts";
import { copyVec4 } from "../kernels/memory/copy.ts";
import { timeDispatches } from "../kernels/timing.ts";
import { CTL_SLOTS } from "../kernels/control/ctl.ts";

/** Measured copy bandwidth in GB/s (1e9 bytes per second, read + write). */
export interface BandwidthResult {
  /** Bytes per copy (one direction). */
  bytes: number;
  /** WGSL copy kernel, median of the timed passes. */
  kernel_copy_gbps: number;
  /** copyBufferToBuffer, wall time over `dma_copies` copies plus one sync. */
  dma_copy_gbps: number;
  dma_copies: number;
}

/** Measures copy bandwidth over a buffer of up to `maxBytes` (default 1 GiB, capped by the device's limits). */
export async function measureCopyBandwidth(gpu: Gpu, maxBytes = 1 << 30): Promise<BandwidthResult> {
  const limit = Math.min(gpu.device.limits.maxStorageBufferBindingSize, gpu.device.limits.maxBufferSize);
  const bytes = Math.floor(Math.min(maxBytes, limit) / 16) * 16;
  const src = gpu.buffer("bandwidth src", bytes), dst = gpu.buffer("bandwidth dst", bytes);
  const ctl = gpu.buffer("bandwidth ctl", CTL_SLOTS * 4);
  try {
    // Fill the source with non-zero data (timing zeros can flatter the hardware).
    const chunk = new Uint32Array(Math.min(bytes, 1 << 24) / 4);
    for (let i = 0; i < chunk.length; i++) chunk[i] = (Math.imul(i, 2654435761) >>> 0) | 1;
    for (let off = 0; off < bytes; off += chunk.byteLength) {
      const n = Math.min(chunk.byteLength, bytes - off);
      gpu.device.queue.writeBuffer(src, off, chunk.buffer, 0, n);
    }
    const copy = copyVec4(gpu, { ctl, src, dst, vec4Count: bytes / 16 });
    await timeDispatches(gpu, [copy], 3); // warm-up
    const ms = (await timeDispatches(gpu, [copy], 20)).sort((a, b) => a - b);
    const kernelMs = ms[Math.floor(ms.length / 2)];
    const copies = gpu.isSoftware ? 2 : 50;
    const t0 = performance.now();
    const encoder = gpu.device.createCommandEncoder();
    for (let i = 0; i < copies; i++) encoder.copyBufferToBuffer(src, 0, dst, 0, bytes);
    gpu.device.queue.submit([encoder.finish()]);
    await gpu.finish();
    const dmaMs = (performance.now() - t0) / copies;
    return {
      bytes,
      kernel_copy_gbps: (2 * bytes) / kernelMs / 1e6,
      dma_copy_gbps: (2 * bytes) / dmaMs / 1e6,
      dma_copies: copies,
    };
  } finally {
    src.destroy();
    dst.destroy();
    ctl.destroy();
  }
}
