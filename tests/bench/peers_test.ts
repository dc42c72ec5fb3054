/**
 * `--peers`: the bench runs the PyTorch peer scripts with a Python that imports torch, stores each one's final JSON
 * line and keeps its output in the run folder, and never fails the run for a missing Python, torch or a failing peer
 * (one line each). Python is faked here by small shell scripts; the real scripts are only parsed (no torch here).
 */

import { assert, assertEquals, assertStringIncludes } from "@std/assert";
import { fromFileUrl, join } from "@std/path";
import { parsePeerLine, PEER_SCRIPTS, runPeers } from "../../bench/peers.ts";
import type { PeerResult } from "../../bench/results_types.ts";
import { fakePython, NO_TORCH, TORCH_OK_HF_FAILS } from "./fake_python.ts";

const ROOT = fromFileUrl(new URL("../../", import.meta.url));

async function run(python: string, names: ("torch" | "hf")[], device = "Fake GPU", timeoutMs?: number) {
  const dir = await Deno.makeTempDir({ prefix: "peers_run" });
  const lines: string[] = [];
  // what onResult saw, as the log line count when it was called: each result is handed over before the next peer runs
  const recorded: { names: string[]; linesBefore: number }[] = [];
  const onResult = (done: PeerResult[]) => {
    recorded.push({ names: done.map((p) => p.name), linesBefore: lines.length });
    return Promise.resolve();
  };
  const log = (m: string) => lines.push(m);
  const peers = await runPeers(names, { size: "7b", dir, log, python, device, timeoutMs, onResult });
  const files = [...Deno.readDirSync(dir)].map((e) => e.name).sort();
  return { dir, lines, peers, files, recorded };
}

Deno.test("runPeers stores a peer's final JSON line, keeps its output in peer_<name>.log, and skips a failing one", async () => {
  const python = await fakePython(TORCH_OK_HF_FAILS);
  const { dir, lines, peers, files, recorded } = await run(python, ["torch", "hf"]);
  // torch's result was handed over (to results.json, in the bench) before hf started; hf's failure adds nothing
  assertEquals(recorded, [{ names: ["torch"], linesBefore: 1 }]);
  assertEquals(peers, [{
    name: "torch",
    decode_ms_per_token: 9.5, // ttft_ms null: not measured, so absent
    command: `${python} ${PEER_SCRIPTS.torch} 7b`,
    log: "peer_torch.log",
    size: "7b",
    prompt_tokens: 128,
    device: "Fake GPU",
  }]);
  assertEquals(files, ["peer_hf.log", "peer_torch.log"]);
  const torchLog = await Deno.readTextFile(join(dir, "peer_torch.log"));
  for (const part of ["d2d copy 3000 GB/s", "UserWarning: TF32 is off", '"decode_ms_per_token": 9.5']) {
    assertStringIncludes(torchLog, part);
  }
  assertStringIncludes(await Deno.readTextFile(join(dir, "peer_hf.log")), "RuntimeError: CUDA error");
  assertEquals(lines.length, 4, lines.join("\n")); // start and result of each
  assertStringIncludes(lines[1], "peer torch: decode 9.500 ms/token = 105.3 tok/s on Fake GPU");
  assertStringIncludes(
    lines[3],
    "peer hf skipped: exit 3 (RuntimeError: CUDA error: no kernel image); see peer_hf.log",
  );
  // a peer on another GPU than the bench's is noted
  const elsewhere = await run(python, ["torch"], "NVIDIA H100");
  assertStringIncludes(elsewhere.lines[1], "on Fake GPU (the bench ran on NVIDIA H100)");
});

Deno.test("without torch, or without python, the peers are skipped in one line and nothing is written", async () => {
  const noTorch = await fakePython(NO_TORCH);
  const a = await run(noTorch, ["torch", "hf"]);
  assertEquals(a.peers, []);
  assertEquals(a.files, []);
  assertEquals(a.lines.length, 1);
  assertStringIncludes(a.lines[0], "peers torch, hf not run:");
  assertStringIncludes(a.lines[0], "cannot import torch (ModuleNotFoundError: No module named 'torch')");
  assertStringIncludes(a.lines[0], "HYDRA_PYTHON");

  const b = await run("/nonexistent/python3", ["hf"]);
  assertEquals([b.peers, b.files, b.lines.length], [[], [], 1]);
  assertStringIncludes(b.lines[0], "/nonexistent/python3 was not found");

  const none = await run("/nonexistent/python3", []); // the default: no peers, not even the torch check
  assertEquals([none.peers, none.lines], [[], []]);
});

Deno.test("a peer that prints no result line, or hangs past its time limit, is skipped with the reason", async () => {
  const junk = await fakePython(
    `[ "$1" = "-c" ] && exit 0; echo "done"; echo '{"peer": "hf", "ttft_ms": 3}'; echo bye`,
  );
  const a = await run(junk, ["hf"]);
  assertEquals(a.peers, []);
  assertStringIncludes(a.lines[1], "peer hf skipped: its last line of output is not JSON; see peer_hf.log");

  const hang = await fakePython(`[ "$1" = "-c" ] && exit 0; exec sleep 30`);
  const t0 = performance.now();
  const b = await run(hang, ["torch"], "Fake GPU", 300);
  assert(performance.now() - t0 < 10_000, "the hung peer was not stopped");
  assertEquals(b.peers, []);
  assertStringIncludes(b.lines[1], "peer torch skipped: timed out");
});

Deno.test("a stopped run kills the running peer and starts no other", async () => {
  const dir = await Deno.makeTempDir({ prefix: "peers_stop" });
  const pidFile = join(dir, "peer.pid");
  // the fake peer records its pid, then runs for a minute unless killed
  const python = await fakePython(`[ "$1" = "-c" ] && exit 0; echo $$ > ${pidFile}; echo started; exec sleep 60`);
  const stop = new AbortController();
  const lines: string[] = [];
  const t0 = performance.now();
  const running = runPeers(["torch", "hf"], { size: "7b", dir, log: (m) => lines.push(m), python, stop: stop.signal });
  while (!(await Deno.stat(pidFile).then(() => true, () => false))) await new Promise((r) => setTimeout(r, 20));
  stop.abort();
  const peers = await running;
  assert(performance.now() - t0 < 10_000, "the stopped peer was not killed");
  assertEquals(peers, []);
  assertStringIncludes(lines.join("\n"), "peer torch skipped: stopped (the run was interrupted)");
  assert(!lines.some((l) => l.includes("peer hf")), `hf started after the stop: ${lines.join(" | ")}`);
  // the process is gone (kill -0 fails)
  const pid = (await Deno.readTextFile(pidFile)).trim();
  const alive = await new Deno.Command("kill", { args: ["-0", pid], stderr: "null" }).output();
  assert(!alive.success, `the peer process ${pid} outlived the stop`);
});

Deno.test("parsePeerLine takes the last line as the peer's JSON and checks its figures", () => {
  const ok = parsePeerLine("hf", 'text\n{"peer": "hf", "decode_ms_per_token": 24.1, "ttft_ms": 41.5, "x": null}\n\n');
  assertEquals(ok, { figures: { decode_ms_per_token: 24.1, ttft_ms: 41.5 }, rest: {} });
  const why = (line: string) => {
    const r = parsePeerLine("hf", line);
    return "why" in r ? r.why : "parsed";
  };
  assertStringIncludes(why('{"peer": "torch", "ttft_ms": 1}'), 'names the peer "torch", not "hf"');
  assertStringIncludes(why('{"peer": "hf", "decode_ms_per_token": -2}'), "not a positive number");
  assertStringIncludes(why('{"peer": "hf", "ttft_ms": "fast"}'), "not a number >= 0");
  assertStringIncludes(why('{"peer": "hf", "decode_ms_per_token": null}'), "neither decode_ms_per_token nor ttft_ms");
  assertStringIncludes(why("[1, 2]"), "not a JSON object");
  assertStringIncludes(why(""), "not JSON");
  // the bench's own keys cannot be overridden by the script
  const r = parsePeerLine("hf", '{"peer": "hf", "ttft_ms": 1, "command": "rm -rf", "log": "x", "name": "y"}');
  assertEquals(r, { figures: { ttft_ms: 1 }, rest: {} });
});

/** Parses a script and checks that its last top-level statement is the loop printing the JSON lines. */
const CHECK_SCRIPT = `
import ast, sys
tree = ast.parse(open(sys.argv[1]).read(), sys.argv[1])
last = ast.unparse(tree.body[-1])
assert isinstance(tree.body[-1], ast.For) and "print(json.dumps(" in last, "last statement: " + last[:200]
`;

Deno.test("the peer scripts are valid Python and print their JSON lines last", async () => {
  for (const script of Object.values(PEER_SCRIPTS)) {
    let out: Deno.CommandOutput;
    try {
      out = await new Deno.Command("python3", {
        args: ["-c", CHECK_SCRIPT, join(ROOT, script)],
        stdout: "null",
        stderr: "piped",
      }).output();
    } catch {
      console.log(`python3 not found: ${script} not parsed`);
      continue;
    }
    assert(out.success, `${script}: ${new TextDecoder().decode(out.stderr)}`);
  }
});
