/// <reference lib="dom" />
/**
 * The script of report.html, bundled for the browser by report.ts: reads the results.json embedded in the page
 * (`<script type="application/json" id="results-json">`) and draws, from it alone, the header, the summary table
 * (summary.ts) and the panels of graph.png as interactive Chart.js charts (charts.ts), using the Chart.js UMD
 * build inlined in the page. Sets `document.body.dataset.report` to "ready" when everything is drawn, or "error".
 * @module
 */

import type { Chart as ChartType } from "chart.js";
import { chartPanels, deviceWords, runHeader } from "./charts.ts";
import type { ResultsDocument } from "./results_types.ts";
import { partText, runSummary } from "./summary.ts";

/** The global of Chart.js's UMD build. */
declare const Chart: typeof ChartType;

function el<K extends keyof HTMLElementTagNameMap>(tag: K, text?: string, cls?: string): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}

function renderHeader(doc: ResultsDocument, root: HTMLElement): void {
  const h = runHeader(doc);
  document.title = `hydra-bench ${doc.run}: ${h.title}`;
  root.append(el("h1", h.title));
  if (h.incomplete) root.append(el("p", h.incomplete, "incomplete"));
  for (const line of h.lines) root.append(el("p", line, "meta"));
}

function renderSummary(doc: ResultsDocument, root: HTMLElement): void {
  const s = runSummary(doc);
  root.append(el("h2", "Summary"));
  const table = el("table", undefined, "summary");
  table.id = "summary";
  const caption = el("caption");
  caption.append(`device: ${deviceWords(doc)} · commit `, el("code", doc.environment.commit ?? "unknown"));
  table.append(caption);
  const head = el("tr");
  for (const c of s.columns) head.append(el("th", c));
  table.append(el("thead"));
  table.tHead!.append(head);
  const body = el("tbody");
  for (const row of s.rows) {
    const tr = el("tr");
    row.forEach((cell, i) => {
      const td = el(i === 0 ? "th" : "td");
      for (const part of cell) {
        if (typeof part === "string") {
          td.append(part);
        } else {
          const span = el("span", partText(part), "figure");
          span.dataset.key = part.key;
          span.dataset.value = String(part.value);
          span.title = `${part.key} = ${part.value}`;
          td.append(span);
        }
      }
      tr.append(td);
    });
    body.append(tr);
  }
  table.append(body);
  root.append(table);
  for (const note of s.notes) root.append(el("p", note, "note"));
}

function renderCharts(doc: ResultsDocument, root: HTMLElement): void {
  root.append(el("h2", "Graphs"));
  root.append(el("p", "Hover a point or bar for its value; click a legend entry to hide or show its series.", "note"));
  const grid = el("div", undefined, "grid");
  root.append(grid);
  for (const p of chartPanels(doc, "page")) {
    const box = el("section", undefined, "panel");
    box.dataset.panel = p.name;
    grid.append(box);
    if (!p.config) {
      box.classList.add("empty");
      box.append(el("h3", p.title), el("p", p.why ?? "no data"));
      continue;
    }
    const canvas = el("canvas");
    canvas.setAttribute("aria-label", p.title);
    box.append(canvas);
    new Chart(canvas, p.config);
  }
}

function main(): void {
  const body = document.body;
  try {
    const doc = JSON.parse(document.getElementById("results-json")!.textContent!) as ResultsDocument;
    const root = document.getElementById("report")!;
    renderHeader(doc, root);
    renderSummary(doc, root);
    renderCharts(doc, root);
    body.dataset.report = "ready";
  } catch (e) {
    body.dataset.report = "error";
    body.append(el("pre", `report.html could not be drawn: ${(e as Error).stack ?? e}`, "incomplete"));
    throw e;
  }
}

main();
