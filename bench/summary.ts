/**
 * The summary of a run: one row per configuration (per gamma for PoE) and per peer, holding its headline figures
 * (headline.ts) as stored in results.json. The bench prints it as a table when it ends; report.html shows the same
 * table at its top (this module is bundled into the page).
 * @module
 */

import type { ConfigurationResult, ResultsDocument } from "./results_types.ts";
import { configurationsOf, formatFigure, type Headline, headlines, keyOf, peersOf, resultLabel } from "./headline.ts";
import { markdownTable } from "./table.ts";

/** A piece of a cell: text, or a headline figure (shown formatted; report.html tags it with its key and value). */
export type Part = string | Headline;

/** The summary: column names, rows of cells (each a list of parts), and the notes that define the figures. */
export interface Summary {
  columns: string[];
  rows: Part[][][];
  notes: string[];
}

/** The columns of the summary. */
export const SUMMARY_COLUMNS = ["configuration", "TTFT (ms)", "time per token or call", "tokens/s", "roofline"];

/** The text of a part or cell as the terminal shows it. */
export function partText(part: Part): string {
  return typeof part === "string" ? part : formatFigure(part.metric, part.value);
}

/** The text of a cell. */
export function cellText(cell: readonly Part[]): string {
  return cell.map(partText).join("");
}

function rooflineText(c: ConfigurationResult): string {
  return `${c.roofline_tps.toFixed(1)} tok/s`;
}

/** The summary of `doc` (a validated results document). */
export function runSummary(doc: ResultsDocument): Summary {
  const byKey = new Map(headlines(doc).map((h) => [h.key, h]));
  const fig = (key: string): Part[] => {
    const h = byKey.get(key);
    return h ? [h] : [];
  };
  const rows: Part[][][] = [];
  for (const c of configurationsOf(doc)) {
    const key = keyOf(doc, c), label = resultLabel(doc, c);
    const ttft = fig(`${key}.ttft_ms`);
    if (c.decode) {
      const share = fig(`${key}.roofline_share`);
      rows.push([
        [label],
        ttft,
        [...fig(`${key}.decode_ms_per_token`), " ms/token"],
        fig(`${key}.decode_tokens_per_s`),
        share.length ? [rooflineText(c), " (", ...share, ")"] : [rooflineText(c)],
      ]);
    }
    (c.poe ?? []).forEach((g, i) => {
      const k = `${key}.gamma${g.gamma}`;
      rows.push([
        [`${label} γ=${g.gamma}`],
        i === 0 ? ttft : [],
        [...fig(`${k}.poe_ms_per_call`), " ms/call"],
        [...fig(`${k}.poe_effective_tps`), " effective, ", ...fig(`${k}.poe_user_visible_tps`), " user-visible"],
        i === 0 ? [`${rooflineText(c)} (one draft step)`] : [],
      ]);
    });
  }
  for (const p of peersOf(doc)) {
    const k = `peer.${p.name}`;
    const ms = fig(`${k}.decode_ms_per_token`);
    rows.push([
      [`peer ${p.name}`],
      fig(`${k}.ttft_ms`),
      ms.length ? [...ms, " ms/token"] : [],
      fig(`${k}.decode_tokens_per_s`),
      [],
    ]);
  }
  const clock = doc.environment.timestamp_query ? "GPU time" : "wall time";
  const notes = [
    `TTFT: median (${clock}). Decode: median over the timed positions of each position's median step time ` +
    `(${clock}); tokens/s = 1000 / it.`,
    "PoE: median whole-call time (wall, its GPU waits included); effective = accepted tokens, user-visible = output " +
    "tokens, per second of that median. Roofline: copy bandwidth / weight bytes one step reads.",
  ];
  const runtimes = doc.environment.runtimes ?? [];
  if (runtimes.length > 1) {
    const one = (r: typeof runtimes[number]) =>
      `${r.runtime} (${r.version}${r.toggles.length ? `, toggles ${r.toggles.join(" ")}` : ""})`;
    notes.push(`WebGPU runtimes, each row naming its own: ${runtimes.map(one).join(", ")}.`);
  }
  for (const p of peersOf(doc)) {
    const { name, decode_ms_per_token: _d, ttft_ms: _t, ...rest } = p;
    const more = Object.entries(rest).map(([k, v]) => `${k} ${typeof v === "string" ? v : JSON.stringify(v)}`);
    if (more.length > 0) notes.push(`peer ${name}: ${more.join("; ")}.`);
  }
  if (doc.status !== "complete") {
    notes.unshift(`INCOMPLETE run (${doc.status}${doc.failure ? `: ${doc.failure.message}` : ""}).`);
  }
  return { columns: [...SUMMARY_COLUMNS], rows, notes };
}

/** The summary as the terminal shows it: a Markdown table and its notes. */
export function summaryText(doc: ResultsDocument): string {
  const s = runSummary(doc);
  const rows = s.rows.map((r) => r.map(cellText));
  return [markdownTable(s.columns, rows), ...s.notes].join("\n");
}
