/**
 * Kernel microbenchmarks for the GPU machine (llm.c dev/cuda style: each kernel validated by its test, then timed
 * here): the copy roofline, then matvec tuning variants at the OLMo-2 7B and 1B shapes, in GB/s of weight bytes.
 *
 *   deno run -A tools/bench_kernels.ts [--matvec] [--overhead] [--attention] [--json FILE]
 *
 * Weight pools of >= 256 MiB per shape are cycled so no result is an L2-cache reading.
 */

import { parseArgs } from "@std/cli/parse-args";
import { type Dispatch, getGpu, type Gpu } from "../kernels/runtime.ts";
import { Epilogue, matvec } from "../kernels/matmul/matvec.ts";
import { timeDispatches } from "../kernels/timing.ts";
import { copyVec4 } from "../kernels/memory/copy.ts";
import { attentionDecode, createAttentionDecodeScratch } from "../kernels/attention/decode.ts";
import { attentionPrefill } from "../kernels/attention/prefill.ts";
import { measureCopyBandwidth } from "../bench/bandwidth.ts";
import { CTL_SLOTS } from "../kernels/control/ctl.ts";

const args = parseArgs(Deno.args, { string: ["json"], boolean: ["matvec", "overhead", "attention"] });
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

/** Median of `reps` timed passes of `ds`, divided by `per` (dispatches of interest per pass), in ms. */
async function medianMs(ds: Dispatch[], per: number, reps = 10): Promise<number> {
  await timeDispatches(gpu, ds, 2);
  const ms = (await timeDispatches(gpu, ds, reps)).sort((a, b) => a - b);
  return ms[Math.floor(ms.length / 2)] / per;
}

function report(kernel: string, shape: string, rows: number, variant: string, ms: number, bytes: number): void {
  const gbps = bytes / ms / 1e6;
  results.push({ kernel, shape, rows, variant, us: ms * 1000, gbps, frac_of_copy: gbps / bw.kernel_copy_gbps });
  console.log(
    `${kernel} ${shape} M=${rows} ${variant}: ${(ms * 1000).toFixed(1)} us, ${gbps.toFixed(0)} GB/s (${
      (100 * gbps / bw.kernel_copy_gbps).toFixed(0)
    }% of copy)`,
  );
}

if (args.matvec) {
  const shapes = [
    { name: "7b qkv", n: 12288, k: 4096, epi: Epilogue.PLAIN },
    { name: "7b gate_up+silu", n: 11008, k: 4096, epi: Epilogue.SWIGLU },
    { name: "7b down", n: 4096, k: 11008, epi: Epilogue.PLAIN },
    { name: "7b o", n: 4096, k: 4096, epi: Epilogue.PLAIN },
    { name: "lm_head 4096", n: 100352, k: 4096, epi: Epilogue.PLAIN },
    { name: "1b o", n: 2048, k: 2048, epi: Epilogue.PLAIN },
  ];
  // [rowsPerThread, rowsPerWorkgroup (row groups), workgroupSize]
  const variants = [
    [1, 2, 128],
    [1, 4, 128],
    [1, 8, 256],
    [2, 2, 128],
    [2, 4, 128],
    [2, 8, 256],
    [4, 1, 64],
    [4, 2, 128],
    [4, 4, 128],
    [4, 8, 256],
  ];
  for (const s of shapes) {
    const nw = s.epi === Epilogue.SWIGLU ? 2 * s.n : s.n;
    const bytes = nw * s.k * 2;
    const pool = Math.max(1, Math.ceil((256 << 20) / bytes));
    const weights = Array.from(
      { length: pool },
      (_, i) => randomWeights(gpu, `${s.name} ${i}`, (nw * s.k) / 2, 17 + i),
    );
    for (const rows of [1, 4]) {
      const x = gpu.upload("x", Float32Array.from({ length: rows * s.k }, (_, i) => Math.sin(i) * 0.5));
      const ys = weights.map(() => gpu.buffer("y", rows * s.n * 4));
      for (const [rowsPerThread, rowsPerWorkgroup, workgroupSize] of variants) {
        const knobs = { rowsPerThread, rowsPerWorkgroup, workgroupSize };
        const ds = weights.map((w, i) =>
          matvec(gpu, { ctl, weight: w, x, y: ys[i], rows, k: s.k, n: s.n, epilogue: s.epi, ...knobs })
        );
        report(
          "matvec",
          `${s.name} [${nw}x${s.k}]`,
          rows,
          `RT=${rowsPerThread} ROWS=${rowsPerWorkgroup} WG=${workgroupSize}`,
          await medianMs(ds, pool),
          bytes,
        );
      }
      x.destroy();
      for (const y of ys) y.destroy();
    }
    for (const w of weights) w.destroy();
  }
}

if (args.overhead) {
  // The 7B o projection (33.5 MB, small enough that per-dispatch costs show): 8 weights per pass with one shared
  // output (each dispatch waits for the previous: write-after-write), 8 distinct outputs, and one dispatch per pass.
  const n = 4096, k = 4096, bytes = n * k * 2;
  const weights = Array.from({ length: 8 }, (_, i) => randomWeights(gpu, `o ${i}`, (n * k) / 2, 99 + i));
  const x = gpu.upload("x", Float32Array.from({ length: k }, (_, i) => Math.cos(i)));
  const ys = weights.map(() => gpu.buffer("y", n * 4));
  const mv = (w: GPUBuffer, y: GPUBuffer) => matvec(gpu, { ctl, weight: w, x, y, rows: 1, k, n });
  report("overhead", "o shared y", 1, "8 per pass", await medianMs(weights.map((w) => mv(w, ys[0])), 8), bytes);
  report("overhead", "o distinct y", 1, "8 per pass", await medianMs(weights.map((w, i) => mv(w, ys[i])), 8), bytes);
  report("overhead", "o", 1, "1 per pass", await medianMs([mv(weights[3], ys[0])], 1, 40), bytes);
  // Cost of a dispatch that does nothing: a gated copy of 4096 vec4 with ACTIVE = 0, 1000 per pass.
  const off = gpu.buffer("ctl off", CTL_SLOTS * 4);
  const src = gpu.buffer("src", 65536), dst = gpu.buffer("dst", 65536);
  const gatedOff = copyVec4(gpu, { ctl: off, src, dst, vec4Count: 4096, gated: true });
  const tiny = copyVec4(gpu, { ctl, src, dst, vec4Count: 4096 });
  report("overhead", "gated-off dispatch", 1, "1000 per pass", await medianMs(Array(1000).fill(gatedOff), 1000), 1);
  report("overhead", "64 KiB copy dispatch", 1, "1000 per pass", await medianMs(Array(1000).fill(tiny), 1000), 131072);
  for (const w of weights) w.destroy();
}

if (args.attention) {
  // Decode attention of the 7B (32 heads of 128) at 256 valid keys in a 512-position cache.
  const nh = 32, hd = 128, d = nh * hd, maxPos = 512;
  const q = gpu.upload("q", Float32Array.from({ length: 16 * d }, (_, i) => Math.sin(i)));
  const kc = gpu.upload("k", Float32Array.from({ length: maxPos * d }, (_, i) => Math.cos(i * 0.7)));
  const vc = gpu.upload("v", Float32Array.from({ length: maxPos * d }, (_, i) => Math.sin(i * 0.3)));
  const out = gpu.buffer("out", 16 * d * 4);
  const pos = gpu.buffer("ctl pos", CTL_SLOTS * 4);
  gpu.write(pos, Uint32Array.from([256]));
  for (const rows of [1, 4]) {
    for (const chunk of [64, 128, 256, 512]) {
      const shape = { rows, nHeads: nh, headDim: hd, maxPos, chunk };
      const scratch = createAttentionDecodeScratch(gpu, shape);
      const ds = attentionDecode(gpu, { ...shape, ctl: pos, q, kCache: kc, vCache: vc, out, scratch });
      report(
        "attention_decode",
        "7b 256 keys",
        rows,
        `chunk=${chunk} (${ds.length} dispatches)`,
        await medianMs(ds, 1, 20),
        2 * 257 * d * 4,
      );
    }
  }
  // Prefill attention of 128 tokens.
  const pre = attentionPrefill(gpu, {
    ctl,
    q: kc,
    kCache: kc,
    vCache: vc,
    out: vc,
    rows: 128,
    nHeads: nh,
    headDim: hd,
  });
  report("attention_prefill", "7b 128 tokens", 128, "default tiles", await medianMs([pre], 1, 20), 2 * 128 * d * 4);
}

if (args.json) {
  await Deno.writeTextFile(args.json, JSON.stringify({ device: gpu.description, bandwidth: bw, results }, null, 1));
}
