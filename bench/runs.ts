/**
 * `deno task runs [--results-dir DIR] [--prune [--yes]]`: lists the run folders of a results folder with their
 * status, model size, device, size on disk and headline numbers; `--prune` removes the failed and interrupted ones
 * after asking (or at once with `--yes`). A "running" run whose recorded process is gone (killed outright, or the
 * machine rebooted) is shown, and pruned, as interrupted. The default results folder is config.json's results_dir.
 * @module
 */

import { parseArgs } from "@std/cli/parse-args";
import { join } from "@std/path";
import { runEntryPoint, UserError } from "../common/errors.ts";
import { fsFailure } from "../common/files.ts";
import { readConfig } from "./config.ts";
import { type ProcessState, processState } from "./process.ts";
import { RESULTS_FILE } from "./results.ts";
import type { ResultsDocument, RunStatus } from "./results_types.ts";
import { formatFigure, headlines } from "./headline.ts";
import { markdownTable } from "./table.ts";

/** A run folder's name: `<YYYY-MM-DD>_runNN`. */
const RUN_NAME = /^\d{4}-\d{2}-\d{2}_run\d{2,}$/;

/** How `deno task runs` shows a run: its results.json status, with a dead "running" run as interrupted. */
export type ShownStatus = RunStatus | "no results.json" | "unreadable";

/** One run folder as listed. */
export interface RunEntry {
  name: string;
  dir: string;
  status: ShownStatus;
  /** Why a "running" run reads as interrupted, or why results.json could not be read. */
  note: string | null;
  /** results.json, when it could be read. */
  doc: ResultsDocument | null;
  /** Bytes of the folder's files. */
  bytes: number;
}

/**
 * The status to show for `doc`: "interrupted" for a "running" run whose process is gone (`state` tells whether it
 * is), else the recorded one.
 */
export async function shownStatus(
  doc: ResultsDocument,
  state: (p: NonNullable<ResultsDocument["provenance"]>["process"]) => Promise<ProcessState> = processState,
): Promise<{ status: RunStatus; note: string | null }> {
  const p = doc.provenance?.process;
  if (doc.status !== "running" || !p) return { status: doc.status, note: null };
  return (await state(p)) === "gone"
    ? { status: "interrupted", note: `its process ${p.pid} on ${p.hostname} is gone` }
    : { status: "running", note: null };
}

/** Total bytes of the files under `dir`. */
async function folderBytes(dir: string): Promise<number> {
  let total = 0;
  for await (const e of Deno.readDir(dir)) {
    const path = join(dir, e.name);
    if (e.isDirectory) total += await folderBytes(path);
    else if (e.isFile) total += (await Deno.stat(path)).size;
  }
  return total;
}

/** The run folders of `root`, oldest first. Throws UserError when `root` cannot be listed. */
export async function listRuns(root: string): Promise<RunEntry[]> {
  const names: string[] = [];
  try {
    for await (const e of Deno.readDir(root)) if (e.isDirectory && RUN_NAME.test(e.name)) names.push(e.name);
  } catch (e) {
    throw new UserError(`Cannot list the results folder ${root}: ${fsFailure(e)} Pass --results-dir DIR.`);
  }
  const entries: RunEntry[] = [];
  for (const name of names.sort()) {
    const dir = join(root, name);
    const bytes = await folderBytes(dir);
    let text: string;
    try {
      text = await Deno.readTextFile(join(dir, RESULTS_FILE));
    } catch {
      entries.push({ name, dir, status: "no results.json", note: null, doc: null, bytes });
      continue;
    }
    let doc: ResultsDocument;
    try {
      doc = JSON.parse(text);
      if (typeof doc?.status !== "string") throw new Error("no status");
    } catch (e) {
      entries.push({ name, dir, status: "unreadable", note: (e as Error).message, doc: null, bytes });
      continue;
    }
    entries.push({ name, dir, ...await shownStatus(doc), doc, bytes });
  }
  return entries;
}

/**
 * The headline numbers of a run (headline.ts, as the summary and compare show them): decode tokens/s per decode
 * configuration and PoE's effective tokens/s at poe_gamma; "-" when there are none or results.json is malformed.
 */
export function headline(doc: ResultsDocument): string {
  try {
    const parts = headlines(doc).filter((h) =>
      h.configuration !== null && (h.metric === "decode_tokens_per_s" ||
        (h.metric === "poe_effective_tps" && h.gamma === doc.config.poe_gamma))
    ).map((h) =>
      `${h.configuration} ${formatFigure(h.metric, h.value)}${h.gamma === null ? "" : ` (gamma ${h.gamma}, effective)`}`
    );
    return parts.length ? `${parts.join(", ")} tok/s` : "-";
  } catch {
    return "-";
  }
}

/** `n` bytes in words (kB / MB, 1000-based). */
function bytesText(n: number): string {
  return n >= 1e6 ? `${(n / 1e6).toFixed(1)} MB` : `${(n / 1e3).toFixed(1)} kB`;
}

/** The listing: a Markdown table, one row a run. */
export function runsTable(entries: readonly RunEntry[]): string {
  const rows = entries.map((e) => [
    e.name,
    e.status,
    e.doc?.config?.size ?? "-",
    e.doc?.environment?.adapter?.description ?? "-",
    bytesText(e.bytes),
    e.doc ? headline(e.doc) : (e.note ?? "-"),
  ]);
  return markdownTable(["run", "status", "model", "device", "disk", "headline"], rows, [
    "left",
    "left",
    "left",
    "left",
    "right",
    "left",
  ]);
}

/** The runs `--prune` removes: failed or interrupted (a "running" run whose process is gone included). */
export function prunable(entries: readonly RunEntry[]): RunEntry[] {
  return entries.filter((e) => e.status === "failed" || e.status === "interrupted");
}

const USAGE = `Usage: deno task runs [--results-dir DIR] [--config PATH] [--prune [--yes]]

Lists the run folders of DIR (default: results_dir of config.json) with status, model size, device, size on disk and
headline numbers (decode tokens/s; PoE effective tokens/s at poe_gamma). A "running" run whose process is gone shows
as interrupted.
  --prune   remove the failed and interrupted runs, after a prompt
  --yes     with --prune: do not ask`;

/** `deno task runs`; returns the exit code. */
async function main(argv: readonly string[]): Promise<number> {
  const unknown: string[] = [];
  const a = parseArgs([...argv], {
    string: ["results-dir", "config"],
    boolean: ["prune", "yes", "help"],
    alias: { h: "help" },
    unknown: (arg: string) => {
      unknown.push(arg);
      return false;
    },
  });
  if (a.help) {
    console.log(USAGE);
    return 0;
  }
  const bad = unknown[0] ?? (a._.length ? String(a._[0]) : undefined);
  if (bad !== undefined) throw new UserError(`Unexpected argument ${bad}; run with --help for the flags.`);
  if (a.yes && !a.prune) throw new UserError("--yes only confirms --prune; add --prune or drop --yes.");
  const root = a["results-dir"] || (await readConfig(a.config || "config.json")).config.results_dir;
  const entries = await listRuns(root);
  console.log(entries.length ? runsTable(entries) : `No run folders in ${root}.`);
  if (!a.prune) return 0;
  const doomed = prunable(entries);
  if (doomed.length === 0) {
    console.log("Nothing to prune: no failed or interrupted runs.");
    return 0;
  }
  const what = `${doomed.length} failed or interrupted run folder(s): ${doomed.map((e) => e.name).join(", ")}`;
  if (!a.yes) {
    if (!Deno.stdin.isTerminal()) {
      throw new UserError(`--prune would remove ${what}; pass --yes to confirm (stdin is not a terminal to ask on).`);
    }
    if (!confirm(`Remove ${what}?`)) {
      console.log("Nothing removed.");
      return 0;
    }
  }
  for (const e of doomed) await Deno.remove(e.dir, { recursive: true });
  console.log(`Removed ${what}.`);
  return 0;
}

if (import.meta.main) Deno.exit(await runEntryPoint(() => main(Deno.args)));
