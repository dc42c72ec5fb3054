/**
 * What a finished run writes and prints after results.json: graph.png and report.html (each skipped with a note
 * where the chart packages are not installed, e.g. on the offline GPU machine: `deno task graph DIR` writes both
 * later), and the summary table, read back from results.json so that it shows the stored numbers.
 * @module
 */

import { readRun } from "./run_folder.ts";
import { summaryText } from "./summary.ts";

/** The first line of an error's message. */
function firstLine(e: unknown): string {
  return (e instanceof Error ? e.message : String(e)).split("\n")[0];
}

/** Writes graph.png and report.html of run folder `dir`, logging each path or why it was not written. */
export async function writeRunFiles(dir: string, log: (message: string) => void): Promise<void> {
  try {
    const { writeGraph } = await import("./graph.ts");
    log(`wrote ${await writeGraph(dir)}`);
  } catch (e) {
    log(`graph.png not rendered here (${firstLine(e)}); run: deno task graph ${dir}`);
  }
  try {
    const { writeReport } = await import("./report.ts");
    log(`wrote ${await writeReport(dir)}`);
  } catch (e) {
    log(`report.html not written here (${firstLine(e)}); run: deno task graph ${dir}`);
  }
}

/** The summary table of run folder `dir`, from its results.json. */
export async function runSummaryText(dir: string): Promise<string> {
  return summaryText(await readRun(dir));
}
