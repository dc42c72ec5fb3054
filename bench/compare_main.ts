/**
 * `deno task compare RUN_A RUN_B [RUN_C ...] [--format markdown|csv|json]`: prints the headline figures of the runs
 * side by side with ratios to RUN_A and Mann-Whitney significance (compare.ts). Exits with 2 and one sentence when an
 * argument is not a run folder or a flag is wrong.
 * @module
 */

import { parseArgs } from "@std/cli/parse-args";
import { runEntryPoint, UserError } from "../common/errors.ts";
import { COMPARE_FORMATS, type CompareFormat, compareRuns, formatComparison } from "./compare.ts";
import { readRun } from "./run_folder.ts";

const USAGE = `Usage: deno task compare RUN_A RUN_B [RUN_C ...] [--format markdown|csv|json]

Prints every headline figure of the runs side by side (the first run is the reference): the value in each run, the
ratio to RUN_A, and whether the difference from RUN_A is significant (two-sided Mann-Whitney U on the raw samples
stored in results.json, p < 0.01), with the p-value. Warns when the runs differ in device, config or commit.
e.g. deno task compare results/2026-11-28_run01 results/2026-11-29_run01`;

/** Runs the comparison for command-line `args`; returns the exit code. */
export async function main(args: readonly string[]): Promise<number> {
  return await runEntryPoint(async () => {
    const flags = parseArgs([...args], {
      string: ["format"],
      boolean: ["help"],
      alias: { h: "help" },
      unknown: (arg: string) => {
        if (arg.startsWith("-")) {
          throw new UserError(`Unknown flag ${arg}; deno task compare takes run folders and --format only (--help).`);
        }
        return true;
      },
    });
    if (flags.help) {
      console.log(USAGE);
      return 0;
    }
    const format = (flags.format ?? "markdown") as CompareFormat;
    if (!COMPARE_FORMATS.includes(format)) {
      throw new UserError(`--format must be one of ${COMPARE_FORMATS.join(", ")}, but it is ${flags.format}.`);
    }
    const dirs = flags._.map(String);
    if (dirs.length < 2) {
      throw new UserError(
        `Pass at least two run folders to compare (got ${dirs.length}), e.g. deno task compare ` +
          "results/2026-11-28_run01 results/2026-11-28_run02.",
      );
    }
    const runs = [];
    for (const dir of dirs) runs.push({ dir, doc: await readRun(dir) });
    const comparison = compareRuns(runs);
    if (format === "csv") { for (const w of comparison.warnings) console.error(`warning: ${w}`); }
    console.log(formatComparison(comparison, format));
    return 0;
  });
}

if (import.meta.main) Deno.exit(await main(Deno.args));
