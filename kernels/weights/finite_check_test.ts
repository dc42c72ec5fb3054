/**
 * Tests of the finiteness check (`finite_check.ts`): counts and first indices of NaN / infinite values against the
 * reference, exactly, for bf16 and f32 at awkward sizes, a region inside a larger buffer, several slots, a 2-D grid,
 * and mutants.
 * @module
 */

import { assertEquals, assertThrows } from "@std/assert";
import { packBf16 } from "../bf16.ts";
import type { Gpu, Kernel } from "../runtime.ts";
import { assertCaught, ctlBuffer, gpuTest, mutate, Rng } from "../testing/harness.ts";
import {
  FINITE_SLOT_WORDS,
  finiteCheck,
  finiteCheckKernel,
  finiteCheckReference,
  finiteCheckSlot,
} from "./finite_check.ts";

/** bf16 patterns that must be flagged (quiet and signalling NaN of both signs, +-Inf) and finite extremes. */
const BF16_BAD = [0x7fc0, 0xffc0, 0x7f81, 0x7f80, 0xff80];
const BF16_EDGE = [0x7f7f, 0xff7f, 0x0001, 0x8000, 0x0080];
/** The same for f32. */
const F32_BAD = [0x7fc00000, 0xffffffff, 0x7f800001, 0x7f800000, 0xff800000];
const F32_EDGE = [0x7f7fffff, 0xff7fffff, 0x00000001, 0x80000000, 0x7f000000];

/**
 * `words` u32 words of random finite values with planted finite extremes and (with `bad` > 0) non-finite elements:
 * one at a third of the tensor (with `bad` > 1 in bf16, both halves of its word), the last element, and `bad` - 3
 * more at random places after the first.
 */
function makeWords(rng: Rng, words: number, bf16: boolean, bad: number): Uint32Array {
  const out = bf16 ? packBf16(rng.normals(2 * words, 3)) : new Uint32Array(rng.normals(words, 3).buffer);
  const elements = bf16 ? 2 * words : words;
  const set = (e: number, bits: number) => {
    if (!bf16) out[e] = bits >>> 0;
    else if (e % 2 === 0) out[e >> 1] = ((out[e >> 1] & 0xffff0000) | bits) >>> 0;
    else out[e >> 1] = ((out[e >> 1] & 0xffff) | (bits << 16)) >>> 0;
  };
  const edges = bf16 ? BF16_EDGE : F32_EDGE, bads = bf16 ? BF16_BAD : F32_BAD;
  for (const bits of edges) set(rng.int(elements), bits);
  if (bad === 0) return out;
  // The first bad element is at a third of the tensor; for bf16 with several, both halves of its word are bad.
  const first = Math.floor(elements / 3) & ~1;
  set(first, bads[0]);
  if (bf16 && bad > 1 && first + 1 < elements) set(first + 1, bads[3]);
  set(elements - 1, bads[rng.int(bads.length)]);
  for (let i = 3; i < bad; i++) set(first + rng.int(elements - first), bads[rng.int(bads.length)]);
  return out;
}

interface Case {
  words: number;
  bf16: boolean;
  bad: number;
  /** Words of finite-or-not padding before and after the checked region. */
  before?: number;
  after?: number;
  slot?: number;
  slots?: number;
  workgroupSize?: number;
  kernel?: Kernel;
}

/** Checks a region of `words` words at offset `before` of a larger buffer; compares every slot with the reference. */
async function checkFinite(gpu: Gpu, c: Case): Promise<void> {
  const rng = new Rng(c.words * 31 + (c.bf16 ? 7 : 0) + c.bad * 1009 + (c.before ?? 0));
  const region = makeWords(rng, c.words, c.bf16, c.bad);
  // The words around the region are all non-finite: a check that strays outside it counts them.
  const before = c.before ?? 0, after = c.after ?? 0;
  const all = new Uint32Array(before + c.words + after).fill(c.bf16 ? 0x7fc07fc0 : 0x7fc00000);
  all.set(region, before);
  const slots = c.slots ?? 1, slot = c.slot ?? 0;
  const ctl = ctlBuffer(gpu), data = gpu.upload("data", all);
  const flags = gpu.buffer("flags", slots * FINITE_SLOT_WORDS * 4);
  gpu.run([
    finiteCheck(gpu, {
      ctl,
      data,
      byteOffset: before * 4,
      bytes: c.words * 4,
      bf16: c.bf16,
      flags,
      slot,
      workgroupSize: c.workgroupSize,
    }, c.kernel),
  ]);
  const got = await gpu.readU32(flags, slots * FINITE_SLOT_WORDS);
  for (const b of [ctl, data, flags]) b.destroy();
  const what = `finite check ${JSON.stringify({ ...c, kernel: c.kernel?.name })}`;
  for (let s = 0; s < slots; s++) {
    const want = s === slot ? finiteCheckReference(region, c.bf16) : { count: 0, first: null };
    assertEquals(finiteCheckSlot(got, s), want, `${what}: slot ${s}`);
  }
}

gpuTest("finite check counts NaN and infinities exactly, bf16 and f32, at awkward sizes", async (gpu) => {
  for (const bf16 of [true, false]) {
    for (const words of [1, 2, 3, 255, 256, 257, 1000, 4099]) {
      for (const bad of [0, 1, 3]) await checkFinite(gpu, { words, bf16, bad });
    }
  }
});

gpuTest("finite check reads only its region of a larger buffer and writes only its slot", async (gpu) => {
  for (const bf16 of [true, false]) {
    await checkFinite(gpu, { words: 37, bf16, bad: 0, before: 5, after: 3, slot: 2, slots: 4 });
    await checkFinite(gpu, { words: 300, bf16, bad: 2, before: 64, after: 1, slot: 3, slots: 4 });
  }
});

gpuTest("finite check over a 2-D grid of workgroups", async (gpu) => {
  // 70000 words with one thread per workgroup: more than 65535 workgroups in one dimension.
  await checkFinite(gpu, { words: 70000, bf16: true, bad: 3, workgroupSize: 1 });
});

gpuTest("finite check rejects regions and slots it cannot honour", (gpu) => {
  const ctl = ctlBuffer(gpu), data = gpu.buffer("data", 64), flags = gpu.buffer("flags", 16);
  const base = { ctl, data, flags, bf16: true, slot: 0 };
  assertThrows(() => finiteCheck(gpu, { ...base, byteOffset: 2 }), Error, "whole words");
  assertThrows(() => finiteCheck(gpu, { ...base, byteOffset: 32, bytes: 64 }), Error, "whole words");
  assertThrows(() => finiteCheck(gpu, { ...base, slot: 2 }), Error, "slot 2");
  for (const b of [ctl, data, flags]) b.destroy();
  return Promise.resolve();
});

gpuTest("finite check checks catch broken kernels", async (gpu) => {
  const cases: [string, string][] = [
    ["const EXP: u32 = 0x7f800000u;", "const EXP: u32 = 0x7fc00000u;"], // quiet NaN only: infinities missed
    ["return (bits & EXP) == EXP;", "return (bits & EXP) >= 0x7f000000u;"], // large finite values flagged
    ["data[p.offset + w]", "data[w]"], // region offset ignored
    ["if (w < p.words)", "if (w + 1u < p.words)"], // last word skipped
    ["first = min(first, 2u * w + 1u);", "first = 2u * w + 1u;"], // both halves bad: the high one reported
    ["atomicMax(&wg_first, 0xffffffffu - first)", "atomicMin(&wg_first, 0xffffffffu - first)"], // first lost
    ["atomicAdd(&flags[2u * p.slot], n)", "atomicAdd(&flags[p.slot], n)"], // slot stride wrong
  ];
  for (const [from, to] of cases) {
    const kernel = mutate(finiteCheckKernel, from, to);
    await assertCaught(async () => {
      await checkFinite(gpu, { words: 257, bf16: true, bad: 3, kernel });
      await checkFinite(gpu, { words: 300, bf16: false, bad: 2, before: 64, after: 1, slot: 3, slots: 4, kernel });
    }, `${from} -> ${to}`);
  }
});
