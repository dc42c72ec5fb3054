/**
 * PyTorch peers (`deno task bench --peers torch,hf`): after a run's configurations, the scripts under tools/peers/
 * measure the same model size with PyTorch, as child processes of the bench on the same machine (each uses CUDA
 * device 0; the bench has freed its GPU memory by then). Each script prints one JSON line last
 * (`{"peer": "torch", "size": "7b", "decode_ms_per_token": ..., "ttft_ms": ..., "device": ..., ...}`), which becomes an
 * entry of results.json's `peers`; its whole output goes to `peer_<name>.log` in the run folder.
 *
 * A peer never fails the run: without a Python that imports torch (`python3`, or $HYDRA_PYTHON) the bench says so in
 * one line and goes on, and a peer that fails, times out or prints no result line is skipped with one line naming its
 * log.
 * @module
 */

import { fromFileUrl, join } from "@std/path";
import { formatFigure } from "./headline.ts";
import type { PeerResult } from "./results_types.ts";

/** Each peer's script, relative to the repository root. */
export const PEER_SCRIPTS = {
  torch: "tools/peers/torch_decode_peer.py",
  hf: "tools/peers/hf_eager_peer.py",
} as const;

/** A peer's name, as the `peers` knob takes it. */
export type PeerName = keyof typeof PEER_SCRIPTS;

/** Every peer, in the order --help lists them. */
export const PEER_NAMES = Object.keys(PEER_SCRIPTS) as PeerName[];

/** Environment variable naming the Python executable (default `python3`). */
export const PYTHON_ENV = "HYDRA_PYTHON";

/**
 * Longest a peer may run: the HF peer's torch.compile of the 7B takes minutes; a hung peer must not hold a finished
 * run forever.
 */
export const PEER_TIMEOUT_MS = 30 * 60_000;

const ROOT = fromFileUrl(new URL("../", import.meta.url));

/** How `runPeers` runs the scripts. */
export interface PeerOptions {
  /** The run's model size, passed to each script. */
  size: string;
  /** The run folder (receives peer_<name>.log). */
  dir: string;
  /** One line of progress. */
  log: (message: string) => void;
  /** Python executable (default: $HYDRA_PYTHON, else python3). */
  python?: string;
  /** The bench's GPU, in words: a peer reporting another device is noted. */
  device?: string;
  /** Per-peer time limit, ms (default PEER_TIMEOUT_MS). */
  timeoutMs?: number;
  /**
   * Called with the results so far after each peer that produced one, before the next starts (the bench writes them
   * to results.json, so a run stopped during a later peer keeps the earlier ones).
   */
  onResult?: (done: PeerResult[]) => Promise<void>;
  /**
   * Aborted when the run is stopped (SIGINT / SIGTERM): the running peer is killed (SIGTERM) rather than left holding
   * the GPU after the bench has exited, and no later peer starts.
   */
  stop?: AbortSignal;
}

/** The last non-empty line of `text`. */
function lastLine(text: string): string {
  return text.trimEnd().split("\n").pop()?.trim() ?? "";
}

/** Why `python` cannot run the peers (not found, or no torch), or null when it imports torch. */
async function torchMissing(python: string): Promise<string | null> {
  try {
    const out = await new Deno.Command(python, {
      args: ["-c", "import torch"],
      cwd: ROOT,
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).output();
    if (out.success) return null;
    const why = lastLine(new TextDecoder().decode(out.stderr)) || `exit ${out.code}`;
    return `${python} cannot import torch (${why}); install PyTorch or set ${PYTHON_ENV} to a Python that has it`;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      return `${python} was not found; install Python 3 with PyTorch or set ${PYTHON_ENV} to one`;
    }
    return `${python} could not be started (${(e as Error).message})`;
  }
}

/** A peer's figures (each absent when the peer does not measure it) and the other keys of its result line. */
export interface PeerLine {
  figures: { decode_ms_per_token?: number; ttft_ms?: number };
  rest: Record<string, unknown>;
}

/**
 * The result line of peer `name`: the last line of its stdout, a JSON object whose `peer` is `name`, with a positive
 * `decode_ms_per_token` or a non-negative `ttft_ms` (null or absent when not measured). Returns the figures and the
 * other keys (nulls dropped; `name`, `command` and `log` are the bench's), or why the line is not a result.
 */
export function parsePeerLine(name: string, stdout: string): PeerLine | { why: string } {
  const line = lastLine(stdout);
  let json: unknown;
  try {
    json = JSON.parse(line);
  } catch {
    return { why: "its last line of output is not JSON" };
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    return { why: "its last line of output is not a JSON object" };
  }
  const { peer, name: _n, command: _c, log: _l, ...rest } = json as Record<string, unknown>;
  if (peer !== name) return { why: `its result line names the peer ${JSON.stringify(peer)}, not "${name}"` };
  const { decode_ms_per_token: decode, ttft_ms: ttft, ...others } = Object.fromEntries(
    Object.entries(rest).filter(([, v]) => v !== null),
  );
  const figures: PeerLine["figures"] = {};
  if (decode !== undefined) {
    if (!(typeof decode === "number" && Number.isFinite(decode) && decode > 0)) {
      return { why: `its decode_ms_per_token ${JSON.stringify(decode)} is not a positive number` };
    }
    figures.decode_ms_per_token = decode;
  }
  if (ttft !== undefined) {
    if (!(typeof ttft === "number" && Number.isFinite(ttft) && ttft >= 0)) {
      return { why: `its ttft_ms ${JSON.stringify(ttft)} is not a number >= 0` };
    }
    figures.ttft_ms = ttft;
  }
  if (Object.keys(figures).length === 0) return { why: "its result line has neither decode_ms_per_token nor ttft_ms" };
  return { figures, rest: others };
}

/**
 * Runs peer `name` with its output streamed into `<dir>/peer_<name>.log`; returns its entry for results.json, or why
 * it has none.
 */
async function runPeer(name: PeerName, python: string, o: PeerOptions): Promise<PeerResult | string> {
  const args = [PEER_SCRIPTS[name], o.size];
  const command = [python, ...args].join(" ");
  const log = `peer_${name}.log`;
  o.log(`peer ${name}: ${command} (output in ${log})`);
  const file = await Deno.open(join(o.dir, log), { write: true, createNew: true });
  const sink = file.writable.getWriter();
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), o.timeoutMs ?? PEER_TIMEOUT_MS);
  const kill = o.stop ? AbortSignal.any([abort.signal, o.stop]) : abort.signal;
  let stdout = "", stderr = "";
  try {
    const child = new Deno.Command(python, {
      args,
      cwd: ROOT,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      signal: kill,
    }).spawn();
    // Both streams go to the log as they come (writes on one writer are queued in order); their tails are kept.
    const pump = async (stream: ReadableStream<Uint8Array>, keep: (text: string) => void) => {
      const decoder = new TextDecoder();
      for await (const chunk of stream) {
        keep(decoder.decode(chunk, { stream: true }));
        await sink.write(chunk);
      }
    };
    const [status] = await Promise.all([
      child.status,
      pump(child.stdout, (t) => stdout = (stdout + t).slice(-65536)),
      pump(child.stderr, (t) => stderr = (stderr + t).slice(-4096)),
    ]);
    if (o.stop?.aborted) return `stopped (the run was interrupted); see ${log}`;
    if (abort.signal.aborted) {
      return `timed out after ${((o.timeoutMs ?? PEER_TIMEOUT_MS) / 60_000).toFixed(1)} min; see ${log}`;
    }
    if (!status.success) return `exit ${status.code} (${lastLine(stderr) || "no error output"}); see ${log}`;
  } catch (e) {
    return `${command} could not be run (${(e as Error).message})`;
  } finally {
    clearTimeout(timer);
    await sink.close().catch(() => {});
  }
  const parsed = parsePeerLine(name, stdout);
  if ("why" in parsed) return `${parsed.why}; see ${log}`;
  return { name, ...parsed.figures, command, log, ...parsed.rest };
}

/** A peer's figures in one line. */
function peerWords(p: PeerResult): string {
  const parts = [];
  if (p.decode_ms_per_token !== undefined) {
    parts.push(
      `decode ${formatFigure("decode_ms_per_token", p.decode_ms_per_token)} ms/token = ` +
        `${formatFigure("decode_tokens_per_s", 1000 / p.decode_ms_per_token)} tok/s`,
    );
  }
  if (p.ttft_ms !== undefined) parts.push(`TTFT ${formatFigure("ttft_ms", p.ttft_ms)} ms`);
  return parts.join(", ") + (typeof p.device === "string" ? ` on ${p.device}` : "");
}

/**
 * Runs the peers `names` in order (see the module comment) and returns the entries of those that produced a result.
 * Never throws for a missing Python, torch or a failing peer: each says so in one line.
 */
export async function runPeers(names: readonly PeerName[], o: PeerOptions): Promise<PeerResult[]> {
  if (names.length === 0) return [];
  const python = o.python ?? Deno.env.get(PYTHON_ENV) ?? "python3";
  const missing = await torchMissing(python);
  if (missing) {
    o.log(`peers ${names.join(", ")} not run: ${missing}`);
    return [];
  }
  const out: PeerResult[] = [];
  for (const name of names) {
    if (o.stop?.aborted) break;
    const r = await runPeer(name, python, o);
    if (typeof r === "string") {
      o.log(`peer ${name} skipped: ${r}`);
      continue;
    }
    out.push(r);
    await o.onResult?.([...out]);
    const elsewhere = o.device && typeof r.device === "string" && r.device !== o.device
      ? ` (the bench ran on ${o.device})`
      : "";
    o.log(`peer ${name}: ${peerWords(r)}${elsewhere}`);
  }
  return out;
}
