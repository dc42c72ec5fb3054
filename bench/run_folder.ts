/**
 * Reading a run folder back: `readRun(dir)` loads `<dir>/results.json` and checks it against the schema, for every
 * reader of a finished (or crashed) run: graph.png, report.html, the end-of-run summary and `deno task compare`.
 * Every failure is a UserError, one sentence naming the folder or file.
 * @module
 */

import { join } from "@std/path";
import { isDirectory, pathExists } from "../common/files.ts";
import { UserError } from "../common/errors.ts";
import { validateBenchConfig } from "./config.ts";
import { RESULTS_FILE } from "./results.ts";
import type { ResultsDocument } from "./results_types.ts";
import { validateResults } from "./schema.ts";

/** The validated results document of run folder `dir`. */
export async function readRun(dir: string): Promise<ResultsDocument> {
  if (!(await isDirectory(dir))) {
    const what = (await pathExists(dir)) ? "is not a folder" : "does not exist";
    throw new UserError(`The run folder ${dir} ${what}; pass a run folder such as results/2025-01-31_run01.`);
  }
  const path = join(dir, RESULTS_FILE);
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new UserError(
        `${path} does not exist, so ${dir} is not a run folder; pass one written by \`deno task bench\`.`,
      );
    }
    throw new UserError(`${path} could not be read (${(e as Error).message}); check its permissions.`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new UserError(
      `${path} is not valid JSON (${(e as Error).message}); the run may have been cut off mid-write.`,
    );
  }
  const problems = validateResults(json);
  if (problems.length > 0) {
    throw new UserError(
      `${path} does not match the results schema (${problems.length} problem${problems.length > 1 ? "s" : ""}, ` +
        `first: ${problems[0]}); regenerate it with this version of the suite.`,
    );
  }
  // The config as validated: knobs added after the run was written get the values such runs used (config.ts).
  const doc = json as ResultsDocument;
  return { ...doc, config: validateBenchConfig(doc.config, path) };
}
