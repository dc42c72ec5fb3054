/**
 * The length sweeps (prompt_lengths, decode_contexts) and kv_dtype: the lengths timed, the model shape that covers
 * them, and, on the GPU (the tiny model), a sweep that times TTFT per prompt length and a decode step at each KV length.
 */

import { assert, assertEquals, assertRejects } from "@std/assert";
import { CTL } from "../../kernels/control/ctl.ts";
import { gpuTest } from "../../kernels/testing/harness.ts";
import { PRESETS } from "../../model/config.ts";
import { Decoder } from "../../model/generate.ts";
import { type BenchConfig, DEFAULT_CONFIG } from "../../bench/config.ts";
import { benchmarkStepAt, benchmarkTtft, buildBaselineModel } from "../../bench/configurations.ts";
import {
  benchmarkSweeps,
  decodeContexts,
  decodeModelShape,
  randomIds,
  sweepMeasurements,
  ttftLengths,
} from "../../bench/contexts.ts";

const config = (o: Partial<BenchConfig>): BenchConfig => ({ ...structuredClone(DEFAULT_CONFIG), ...o });

Deno.test("sweep lengths, and a model shape that covers decode, the longest prompt and the longest KV length", () => {
  // off by default: the model is the one the decode benchmark always built
  assertEquals([ttftLengths(DEFAULT_CONFIG), decodeContexts(DEFAULT_CONFIG)], [[], []]);
  assertEquals(decodeModelShape(DEFAULT_CONFIG), { maxPos: 128 + 128, maxRows: 128 });
  assertEquals(sweepMeasurements(DEFAULT_CONFIG), 0);
  const c = config({ prompt_lengths: [2048, 512], decode_contexts: [4095, 128, 1024] });
  assertEquals(ttftLengths(c), [128, 512, 2048]); // prompt_length among them, ascending
  assertEquals(decodeContexts(c), [128, 1024, 4095]);
  // a step at KV length 4095 writes row 4095: 4096 rows, the 7B's whole context; prefill rows: the longest prompt
  assertEquals(decodeModelShape(c), { maxPos: 4096, maxRows: 2048 });
  assertEquals(decodeModelShape(config({ prompt_lengths: [600] })), { maxPos: 601, maxRows: 600 });
  assertEquals(sweepMeasurements(c), 2 + 3);
  // one seeded prompt: shorter prompts are prefixes of longer ones (prompt_length's is the decode benchmark's)
  const long = randomIds(7, 50, 500), short = randomIds(7, 9, 500);
  assertEquals(long.slice(0, 9), short);
  assert(long.every((t) => Number.isInteger(t) && t >= 0 && t < 500));
  assert(randomIds(8, 9, 500).join() !== short.join());
});

gpuTest(
  "benchmarkSweeps on the tiny model: TTFT at every prompt length, a decode step at every KV length",
  async (gpu) => {
    const c = config({
      size: "tiny",
      prompt_length: 9,
      gen_length: 8,
      step_interval: 4,
      prompt_lengths: [20, 4],
      decode_contexts: [300, 16],
      kv_dtype: "f32",
      warmup_ms: 1,
      rep_ms: 5,
    });
    const shape = decodeModelShape(c);
    assertEquals(shape, { maxPos: 301, maxRows: 20 });
    const model = await buildBaselineModel(gpu, PRESETS.tiny, { ...shape, seed: c.seed, kvDtype: c.kv_dtype });
    const decoder = new Decoder(model);
    try {
      assertEquals(model.kvDtype, "f32"); // the knob reaches the model
      const budgets = { warmupMs: c.warmup_ms, repMs: c.rep_ms };
      const ttft = await benchmarkTtft(decoder, randomIds(c.seed, 9, PRESETS.tiny.vocabSize), "single", budgets);
      const lines: string[] = [];
      const s = await benchmarkSweeps(decoder, "single", c, ttft, budgets, (m) => lines.push(m));
      const byLength = s.ttft_by_length!;
      assertEquals(byLength.map((e) => e.prompt_length), [4, 9, 20]);
      const { prompt_length: _, tokens_per_s: __, ...atPrompt } = byLength[1];
      assertEquals(atPrompt, ttft); // prompt_length's entry is the TTFT measurement itself
      for (const e of byLength) {
        assertEquals(e.tokens_per_s, 1000 * e.prompt_length / e.median_ms);
        assert(e.n >= 1 && e.median_ms > 0 && e.clock === "gpu");
      }
      assertEquals(s.decode_contexts!.map((e) => e.context), [16, 300]);
      for (const e of s.decode_contexts!) assertEquals(e.tokens_per_s, 1000 / e.median_ms);
      // The last timed step ran at KV length 300: its ADVANCE left LEN = POS = 301.
      const ctl = await gpu.readU32(model.ctl, 2);
      assertEquals([ctl[CTL.POS], ctl[CTL.LEN]], [301, 301]);
      assertEquals(lines.length, 3 + 2);
      // A KV length whose step would write past the cache is refused, not timed on a wrong row.
      await assertRejects(
        () => benchmarkStepAt(decoder, decoder.step("single"), 301, "x", budgets),
        Error,
        "outside 0..300",
      );
    } finally {
      decoder.destroy();
      model.destroy();
    }
  },
);
