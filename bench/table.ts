/**
 * Plain tables as text: Markdown with padded columns (readable on a terminal and in a Markdown viewer) and CSV.
 * Used by the end-of-run summary and `deno task compare`.
 * @module
 */

/** Column alignment: numbers read best right-aligned. */
export type Align = "left" | "right";

function escapeMarkdown(text: string): string {
  return text.replaceAll("|", "\\|");
}

/**
 * A Markdown table, every column padded to its widest cell. `align` defaults to left for the first column and right
 * for the others.
 */
export function markdownTable(
  columns: readonly string[],
  rows: readonly (readonly string[])[],
  align?: Align[],
): string {
  const a = align ?? columns.map((_, i) => (i === 0 ? "left" : "right"));
  const cells = [columns, ...rows].map((r) => columns.map((_, i) => escapeMarkdown(r[i] ?? "")));
  const width = columns.map((_, i) => Math.max(3, ...cells.map((r) => [...r[i]].length)));
  const pad = (s: string, i: number) => {
    const fill = " ".repeat(width[i] - [...s].length);
    return a[i] === "right" ? fill + s : s + fill;
  };
  const line = (r: string[]) => `| ${r.map(pad).join(" | ")} |`;
  const rule = `| ${width.map((w, i) => (a[i] === "right" ? "-".repeat(w - 1) + ":" : "-".repeat(w))).join(" | ")} |`;
  return [line(cells[0]), rule, ...cells.slice(1).map(line)].join("\n");
}

function csvField(text: string): string {
  return /[",\n\r]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
}

/** A CSV table (RFC 4180: fields with commas, quotes or newlines quoted), one header line. */
export function csvTable(columns: readonly string[], rows: readonly (readonly string[])[]): string {
  return [columns, ...rows].map((r) => columns.map((_, i) => csvField(r[i] ?? "")).join(",")).join("\n");
}
