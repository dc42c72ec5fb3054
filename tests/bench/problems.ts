/**
 * What the results validator says of a broken document, for the schema tests: `problemsAfter` edits a copy of a valid
 * synthetic document and returns validateResults' problems; `assertProblem` asserts one of them names every part.
 * @module
 */

import { assert } from "@std/assert";
import { validateResults } from "../../bench/schema.ts";
import { syntheticResults } from "./synthetic.ts";

/** A parsed results.json as a test edits it: any field may be deleted or replaced by anything. */
// deno-lint-ignore no-explicit-any
export type Json = Record<string, any>;

/** Applies `edit` to a copy of the valid document `make()` (default: one runtime) and returns the problems found. */
export function problemsAfter(edit: (doc: Json) => void, make: () => unknown = syntheticResults): string[] {
  const doc = structuredClone(make()) as Json;
  edit(doc);
  return validateResults(doc);
}

/** Asserts that some problem mentions every one of `parts`. */
export function assertProblem(problems: string[], ...parts: string[]): void {
  assert(
    problems.some((p) => parts.every((part) => p.includes(part))),
    `expected a problem mentioning ${parts.join(" + ")}, got:\n${problems.join("\n")}`,
  );
}
