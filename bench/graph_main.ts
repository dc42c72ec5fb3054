/**
 * `deno task graph DIR`: renders DIR/graph.png and writes DIR/report.html from DIR/results.json (a run folder written
 * by `deno task bench`, e.g. one brought back from the GPU machine). Exits with 2 and one sentence on bad input.
 * @module
 */

import { runEntryPoint, UserError } from "../common/errors.ts";
import { writeGraph } from "./graph.ts";
import { writeReport } from "./report.ts";

const USAGE = "Usage: deno task graph RUN_DIR   (e.g. deno task graph results/2025-01-31_run01)";

/** Renders the graph of the run folder named by `args`; returns the process exit code. */
export async function main(args: readonly string[]): Promise<number> {
  if (args.includes("--help") || args.includes("-h")) {
    console.log(USAGE);
    return 0;
  }
  return await runEntryPoint(async () => {
    if (args.length !== 1) {
      throw new UserError(
        `Pass exactly one run folder (got ${args.length} arguments), e.g. deno task graph results/2025-01-31_run01.`,
      );
    }
    console.log(`wrote ${await writeGraph(args[0])}`);
    console.log(`wrote ${await writeReport(args[0])}`);
    return 0;
  });
}

if (import.meta.main) Deno.exit(await main(Deno.args));
