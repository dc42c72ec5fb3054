/**
 * The bench's terminal output: plain timestamped lines without control characters when stdout is not a terminal;
 * on a terminal, the same lines with a progress bar below them whose ETA follows the measurements done.
 */

import { assert, assertEquals, assertStringIncludes } from "@std/assert";
import { clock, measurementsOf, RunProgress } from "../../bench/progress.ts";
import { DEFAULT_CONFIG } from "../../bench/config.ts";

function fake(tty: boolean) {
  let now = 0;
  const out: string[] = [];
  const p = new RunProgress({ tty, write: (t) => out.push(t), now: () => now, columns: () => 120, refreshMs: 0 });
  return { p, out, at: (ms: number) => (now = ms) };
}

Deno.test("progress off a terminal: timestamped lines only, no bar, no escape codes", () => {
  const { p, out, at } = fake(false);
  p.line("run folder results/x");
  p.begin("baseline", 3);
  at(1500);
  p.tick();
  p.line("[baseline] ttft 1.000 ms");
  p.end();
  assertEquals(out.join(""), "[    0.0s] run folder results/x\n[    1.5s] [baseline] ttft 1.000 ms\n");
});

Deno.test("progress on a terminal: lines above a bar with done/total, elapsed and an ETA from the measurements", () => {
  const { p, out, at } = fake(true);
  p.begin("hydra_naive", 5);
  assertStringIncludes(p.barText(), "0/5 measurements");
  assertStringIncludes(p.barText(), "ETA -:--");
  at(10_000); // the first measurement also paid for the build: 10 s
  p.tick();
  assertEquals(p.eta(), 40); // one measurement known: 4 left x 10 s
  at(12_000); // then 2 s each
  p.tick();
  assertEquals(p.eta(), 6); // 3 left x 2 s (the build is left out from the second measurement on)
  p.line("[hydra_naive] decode position 8/128: 1.0 ms");
  const bar = p.barText();
  assertStringIncludes(bar, "hydra_naive [");
  assertStringIncludes(bar, "2/5 measurements  0:12 elapsed  ETA 0:06");
  assertEquals([...bar.matchAll(/█/g)].length / [...bar.matchAll(/[█░]/g)].length, 0.4);
  const text = out.join("");
  // the line clears the bar, is printed, and the bar is drawn again below it
  assertStringIncludes(text, "\r\x1b[2K[   12.0s] [hydra_naive] decode position 8/128: 1.0 ms\n\r\x1b[2Khydra_naive [");
  p.end();
  assert(out.at(-1) === "\r\x1b[2K", "end() clears the bar");
  assertEquals(p.barText(), "");
});

Deno.test("measurementsOf counts TTFT plus decode positions or PoE gammas; clock formats seconds", () => {
  const c = { ...structuredClone(DEFAULT_CONFIG), gen_length: 32, step_interval: 8, poe_gamma: 3 };
  c.poe_gamma_sweep = [1, 3, 8];
  assertEquals(measurementsOf("baseline", c), 1 + 4);
  assertEquals(measurementsOf("hydra_poe", c), 1 + 3);
  // the sweeps: prompt_length's TTFT is timed anyway, each other length and each decode context once more
  const sweeps = { ...c, prompt_lengths: [64, c.prompt_length, 512], decode_contexts: [1024, 128] };
  assertEquals(measurementsOf("hydra_naive", sweeps), 1 + 4 + 2 + 2);
  assertEquals(measurementsOf("hydra_poe", sweeps), 1 + 3);
  assertEquals([clock(0), clock(59.6), clock(61), clock(3725)], ["0:00", "1:00", "1:01", "1:02:05"]);
});
