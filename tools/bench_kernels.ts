/**
 * Kernel microbenchmarks for the GPU machine (llm.c dev/cuda style: each kernel validated by its test, then timed
 * here): the copy roofline, then matvec tuning variants at the OLMo-2 7B and 1B shapes, in GB/s of weight bytes.
 *
 *   deno run -A tools/bench_kernels.ts [--json FILE] [--quick]
 *
 * Weight pools of >= 256 MiB per shape are cycled so no result is an L2-cache reading.
 */

import { parseArgs } from "@std/cli/parse-args";
import { getGpu, type Gpu } from "../kernels/runtime.ts";
import { Epilogue, matvec } from "../kernels/matmul/matvec.ts";
import { timeDispatches } from "../kernels/timing.ts";
import { measureCopyBandwidth } from "../bench/bandwidth.ts";
import { CTL_SLOTS } from "../kernels/control/ctl.ts";

const args = parseArgs(Deno.args, { string: ["json"], boolean: ["quick"] });
const gpu = await getGpu();
console.log(
  `adapter: ${gpu.description.description} (${gpu.description.vendor}), features ${
    gpu.description.featuresGranted.join(",")
  }`,
);
const bw = await measureCopyBandwidth(gpu);
console.log(
  `copy: kernel ${bw.kernel_copy_gbps.toFixed(0)} GB/s, DMA ${bw.dma_copy_gbps.toFixed(0)} GB/s (read+write)`,
);

/** A buffer of pseudo-random bf16 pairs in [-1, 1) (never zeros). */
function randomWeights(gpu: Gpu, label: string, words: number, seed: number): GPUBuffer {
  const buf = gpu.buffer(label, words * 4);
  const chunk = new Uint32Array(Math.min(words, 1 << 22));
  let s = seed >>> 0;
  for (let off = 0; off < words; off += chunk.length) {
    const n = Math.min(chunk.length, words - off);
    for (let i = 0; i < n; i++) {
      s = (s + 0x9e3779b9) >>> 0;
      let z = Math.imul(s ^ (s >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) ^ (z >>> 16);
      chunk[i] = ((z & 0x807f807f) | 0x3f003f00) >>> 0;
    }
    gpu.device.queue.writeBuffer(buf, off * 4, chunk.buffer, 0, n * 4);
  }
  return buf;
}

interface Row {
  kernel: string;
  shape: string;
  rows: number;
  variant: string;
  us: number;
  gbps: number;
  frac_of_copy: number;
}
const results: Row[] = [];
const ctl = gpu.buffer("ctl", CTL_SLOTS * 4);

const shapes = [
  { name: "7b qkv", n: 12288, k: 4096, epi: Epilogue.PLAIN },
  { name: "7b gate_up+silu", n: 11008, k: 4096, epi: Epilogue.SWIGLU },
  { name: "7b down", n: 4096, k: 11008, epi: Epilogue.PLAIN },
  { name: "7b o", n: 4096, k: 4096, epi: Epilogue.PLAIN },
  { name: "lm_head 4096", n: 100352, k: 4096, epi: Epilogue.PLAIN },
  { name: "1b o", n: 2048, k: 2048, epi: Epilogue.PLAIN },
];
const variants = args.quick ? [[8, 256]] : [[1, 64], [1, 128], [1, 256], [2, 128], [4, 128], [8, 256]];
for (const s of shapes) {
  const nw = s.epi === Epilogue.SWIGLU ? 2 * s.n : s.n;
  const bytes = nw * s.k * 2;
  const pool = Math.max(1, Math.ceil((256 << 20) / bytes));
  const weights = Array.from({ length: pool }, (_, i) => randomWeights(gpu, `${s.name} ${i}`, (nw * s.k) / 2, 17 + i));
  for (const rows of [1, 4]) {
    const x = gpu.upload("x", Float32Array.from({ length: rows * s.k }, (_, i) => Math.sin(i) * 0.5));
    const y = gpu.buffer("y", rows * s.n * 4);
    for (const [rowsPerWorkgroup, workgroupSize] of variants) {
      const ds = weights.map((w) =>
        matvec(gpu, { ctl, weight: w, x, y, rows, k: s.k, n: s.n, epilogue: s.epi, rowsPerWorkgroup, workgroupSize })
      );
      await timeDispatches(gpu, ds, 2);
      const ms = (await timeDispatches(gpu, ds, 10)).sort((a, b) => a - b);
      const per = ms[Math.floor(ms.length / 2)] / pool;
      const gbps = bytes / per / 1e6;
      results.push({
        kernel: "matvec",
        shape: `${s.name} [${nw}x${s.k}]`,
        rows,
        variant: `ROWS=${rowsPerWorkgroup} WG=${workgroupSize}`,
        us: per * 1000,
        gbps,
        frac_of_copy: gbps / bw.kernel_copy_gbps,
      });
      const r = results[results.length - 1];
      console.log(
        `${r.kernel} ${r.shape} M=${rows} ${r.variant}: ${r.us.toFixed(1)} us, ${gbps.toFixed(0)} GB/s (${
          (100 * r.frac_of_copy).toFixed(0)
        }% of copy)`,
      );
    }
    x.destroy();
    y.destroy();
  }
  for (const w of weights) w.destroy();
}
if (args.json) {
  await Deno.writeTextFile(args.json, JSON.stringify({ device: gpu.description, bandwidth: bw, results }, null, 1));
}
