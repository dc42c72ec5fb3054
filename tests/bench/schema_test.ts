import { assertAlmostEquals, assertEquals, assertThrows } from "@std/assert";
import { decodePosition, poeGammaResult, rooflineTps } from "../../bench/metrics.ts";
import { assertValidResults, validateResults } from "../../bench/schema.ts";
import { summarize } from "../../bench/stats.ts";
import { syntheticResults, withSweepsAndPeers } from "./synthetic.ts";
import { assertProblem, type Json, problemsAfter } from "./problems.ts";

Deno.test("a complete synthetic run is valid, also after a JSON round trip", () => {
  const doc = syntheticResults();
  assertEquals(validateResults(doc), []);
  assertEquals(validateResults(JSON.parse(JSON.stringify(doc))), []);
  assertValidResults(doc);
  assertEquals(validateResults(syntheticResults(["hydra_poe"])), []);
});

Deno.test("validateResults finds missing metrics, wrong arithmetic and inconsistent counts", () => {
  const poe = (d: Json) => d.configurations.hydra_poe.poe[0];
  const base = (d: Json) => d.configurations.baseline;
  assertProblem(problemsAfter((d) => delete poe(d).effective_tps), "poe[0].effective_tps", "finite number");
  assertProblem(problemsAfter((d) => delete poe(d).resample_rate), "resample_rate");
  assertProblem(problemsAfter((d) => poe(d).user_visible_tps *= 2), "user_visible_tps", "1000 * avg_output");
  assertProblem(problemsAfter((d) => poe(d).acceptance_per_position.pop()), "acceptance_per_position", "gamma");
  assertProblem(problemsAfter((d) => poe(d).n_calls = 99), "n_calls", "raw_ms holds");
  assertProblem(problemsAfter((d) => base(d).decode.positions[2].tokens_per_s = 1), "tokens_per_s", "1000 / median");
  assertProblem(problemsAfter((d) => base(d).decode.positions.reverse()), "ascending");
  assertProblem(problemsAfter((d) => base(d).ttft.median_ms = 1e6), "ttft", "median_ms <= p90_ms");
  assertProblem(problemsAfter((d) => base(d).ttft.clock = "cpu"), "ttft.clock");
  assertProblem(problemsAfter((d) => base(d).ttft.raw_ms[0] = null), "ttft.raw_ms");
  assertProblem(problemsAfter((d) => base(d).ttft.discarded_ms = [58.8, "slow"]), "ttft.discarded_ms");
  assertProblem(problemsAfter((d) => base(d).roofline_tps = 5), "roofline_tps", "copy_bandwidth_gbps");
  assertProblem(problemsAfter((d) => d.configurations.hydra_poe.weights = "random"), "hydra_poe.weights");
  assertProblem(problemsAfter((d) => poe(d).encode_ms_per_call = -1), "encode_ms_per_call");
  assertProblem(problemsAfter((d) => d.environment.roofline.baseline.roofline_tps = 1), "environment.roofline");
  assertProblem(problemsAfter((d) => delete d.environment.adapter.vendor), "environment.adapter.vendor");
  assertProblem(problemsAfter((d) => d.environment.date = "yesterday"), "environment.date");
});

Deno.test("validateResults checks the run's status, config and configuration names", () => {
  assertProblem(problemsAfter((d) => d.schema_version = 2), "schema_version");
  assertProblem(problemsAfter((d) => d.run = "run1"), "run", "<YYYY-MM-DD>_runNN");
  assertProblem(problemsAfter((d) => d.config.poe_beta = 3), "config", "poe_beta");
  assertProblem(problemsAfter((d) => d.configurations.fast = {}), "configurations.fast", "unknown");
  assertProblem(problemsAfter((d) => delete d.configurations.hydra_naive), "hydra_naive", "missing in a complete run");
  assertEquals(
    problemsAfter((d) => {
      delete d.configurations.hydra_poe;
      d.status = "failed";
      d.failure = { configuration: "hydra_poe", message: "out of memory" };
    }),
    [],
  );
  assertProblem(problemsAfter((d) => d.status = "failed"), "failure", "expected an object");
  assertProblem(problemsAfter((d) => d.status = "done"), "status");
  assertProblem(validateResults([]), "expected an object");
  assertThrows(() => assertValidResults({}), Error, "does not match the schema");
});

Deno.test("decode and PoE metrics follow design.md's formulas", () => {
  const stats = { ...summarize([100, 90, 110, 100]), clock: "gpu" as const };
  assertEquals(decodePosition(8, stats).tokens_per_s, 10); // 1000 / 100 ms
  const r = poeGammaResult(3, stats, [
    { output_tokens: 10, resampled_tokens: 2, rounds: 4, accepted_at: [4, 3, 1], sync_points: 1 },
    { output_tokens: 10, resampled_tokens: 4, rounds: 6, accepted_at: [5, 2, 0], sync_points: 1 },
  ]);
  assertEquals(r.avg_accepted_tokens_per_call, 7); // ((10 - 2) + (10 - 4)) / 2
  assertEquals(r.avg_output_tokens_per_call, 10);
  assertEquals(r.avg_rounds_per_call, 5);
  assertAlmostEquals(r.resample_rate, 0.3, 1e-12); // 6 / 20
  assertAlmostEquals(r.effective_tps, 70, 1e-9); // 1000 * 7 / 100
  assertAlmostEquals(r.user_visible_tps, 100, 1e-9); // 1000 * 10 / 100
  assertEquals(r.acceptance_per_position, [0.9, 0.5, 0.1]); // per position, over 10 rounds
  assertEquals(r.n_calls, 4); // the timed calls
  assertEquals(r.sync_points_per_call, 1);
  assertEquals(r.encode_ms_per_call, undefined); // calls that did not measure it give no figure, not zero
  const timedEncode = poeGammaResult(1, stats, [
    { output_tokens: 4, resampled_tokens: 0, rounds: 3, accepted_at: [3], sync_points: 1, encode_ms: 2 },
    { output_tokens: 4, resampled_tokens: 0, rounds: 3, accepted_at: [3], sync_points: 1, encode_ms: 4 },
  ]);
  assertEquals(timedEncode.encode_ms_per_call, 3); // the mean over calls
  assertEquals(r.raw_ms, stats.raw_ms);
  assertEquals(rooflineTps(3000, 15e9), 200);
  assertThrows(() => poeGammaResult(2, stats, []), Error, "no call counters");
  assertThrows(
    () =>
      poeGammaResult(2, stats, [{
        output_tokens: 1,
        resampled_tokens: 0,
        rounds: 1,
        accepted_at: [1],
        sync_points: 1,
      }]),
    Error,
    "acceptance counters",
  );
});

Deno.test("the length sweeps and peers validate, and their arithmetic, lengths and fields are checked", () => {
  const doc = withSweepsAndPeers(syntheticResults());
  assertEquals(validateResults(doc), []);
  assertEquals(validateResults(JSON.parse(JSON.stringify(doc))), []);
  const after = (edit: (d: Json) => void) => {
    const d = structuredClone(doc) as Json;
    edit(d);
    return validateResults(d);
  };
  const base = (d: Json) => d.configurations.baseline;
  assertProblem(
    after((d) => base(d).ttft_by_length[2].tokens_per_s *= 1.01),
    "baseline.ttft_by_length[2].tokens_per_s",
    "1000 * prompt_length / median_ms",
  );
  assertProblem(after((d) => base(d).decode_contexts[1].tokens_per_s = 1), "decode_contexts[1].tokens_per_s");
  assertProblem(after((d) => base(d).decode_contexts.pop()), "decode_contexts", "128, 1024, 4095");
  assertProblem(after((d) => base(d).decode_contexts.reverse()), "decode_contexts[1].context", "ascending");
  assertProblem(after((d) => delete base(d).ttft_by_length), "ttft_by_length", "missing although", "prompt_lengths");
  assertProblem(after((d) => base(d).ttft.median_ms *= 1.0001), "ttft_by_length", "differs from ttft");
  assertProblem(
    after((d) => d.configurations.hydra_poe.decode_contexts = base(d).decode_contexts),
    "hydra_poe.decode_contexts",
  );
  // a run without the knobs has no sweeps
  assertEquals(validateResults(syntheticResults()), []);
  assertProblem(after((d) => d.config.decode_contexts = []), "decode_contexts", "present although the config sets no");
  // peers
  assertProblem(after((d) => delete d.peers[0].command), "peers[0].command", "expected a string");
  assertProblem(after((d) => d.peers[1].name = "torch"), "peers[1].name", "appears twice");
  assertProblem(after((d) => d.peers[0].decode_ms_per_token = 0), "peers[0].decode_ms_per_token", "> 0");
  assertProblem(after((d) => delete d.peers[0].decode_ms_per_token), "peers[0]", "decode_ms_per_token or ttft_ms");
  assertProblem(after((d) => d.peers = {}), "peers", "expected an array");
});

Deno.test("validateResults accepts the cost model, no-op counts and spreads, and rejects inconsistent ones", () => {
  const poe = (d: Json) => d.configurations.hydra_poe;
  const g = (d: Json) => poe(d).poe[2];
  assertEquals(problemsAfter(() => {}), []);
  // runs before these fields validate without them
  assertEquals(
    problemsAfter((d) => {
      for (const x of [...poe(d).poe, ...poe(d).poe_spreads.flatMap((s: Json) => s.gammas)]) {
        for (const k of ["acceptance_rate", "cost_model", ...Object.keys(x).filter((k) => k.includes("noop"))]) {
          delete x[k];
        }
        delete x.dispatches_per_round;
      }
      delete poe(d).poe_spreads;
      delete d.config.poe_spread_sweep;
      delete d.config.synthetic_spread;
    }),
    [],
  );
  assertProblem(problemsAfter((d) => g(d).cost_model.predicted_ms *= 1.1), "cost_model.predicted_ms");
  assertProblem(problemsAfter((d) => g(d).cost_model.verify_ms += 1), "cost_model.round_ms");
  assertProblem(problemsAfter((d) => g(d).cost_model.ceiling_rounds = 1), "cost_model.ceiling_rounds");
  assertProblem(problemsAfter((d) => g(d).cost_model.ceiling_tps = 1), "cost_model.ceiling_tps");
  assertProblem(problemsAfter((d) => g(d).cost_model.measured_over_predicted = 1), "measured_over_predicted");
  assertProblem(problemsAfter((d) => g(d).noop_rounds_per_call += 1), "cost_model.noop_fraction");
  assertProblem(problemsAfter((d) => delete g(d).cost_model.sync_ms), "cost_model.sync_ms", "finite number");
  assertProblem(problemsAfter((d) => g(d).noop_dispatches_per_call = 3), "noop_dispatches_per_call");
  assertProblem(problemsAfter((d) => delete g(d).noop_rounds_cold_call), "but not noop_rounds_cold_call");
  assertProblem(
    problemsAfter((d) => NOOP.forEach((k) => delete g(d)[k])),
    "cost_model",
    "needs the gamma's noop_rounds_per_call",
  );
  assertProblem(problemsAfter((d) => g(d).acceptance_rate = 0.99), "acceptance_rate", "1 - resampled");
  assertProblem(problemsAfter((d) => poe(d).poe_spreads.reverse()), "poe_spreads", "expected the spreads");
  assertProblem(problemsAfter((d) => d.config.poe_spread_sweep = [0]), "poe_spreads", "[0]");
  assertProblem(problemsAfter((d) => poe(d).poe_spreads[0].gammas.pop()), "poe_spreads[0].gammas", "gammas of poe");
  assertProblem(
    problemsAfter((d) => poe(d).poe_spreads[1].gammas[0].cost_model.draft_step_ms = 1),
    "poe_spreads[1].gammas[0].cost_model.round_ms",
  );
  assertProblem(problemsAfter((d) => d.configurations.baseline.poe_spreads = []), "baseline.poe_spreads");
});

const NOOP = ["dispatches_per_round", "noop_rounds_per_call", "noop_dispatches_per_call", "noop_rounds_cold_call"];
