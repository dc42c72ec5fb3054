/**
 * Environment variables that force a tuning choice for A/B runs (`HYDRA_SPLIT_K`, `HYDRA_MATVEC_INTERLEAVE`): read
 * and checked in one place, an unusable value one UserError sentence naming the variable.
 * @module
 */

import { UserError } from "./errors.ts";

/**
 * The number environment variable `name` holds, undefined when it is unset or empty; a value outside `choices` is a
 * UserError ("`name`=`value` is not `what`: set it to ..., or unset it.").
 */
export function numberChoiceFromEnv(name: string, choices: readonly number[], what: string): number | undefined {
  const env = Deno.env.get(name);
  if (!env) return undefined;
  const n = Number(env);
  if (!choices.includes(n)) {
    throw new UserError(`${name}=${env} is not ${what}: set it to ${choices.join(", ")}, or unset it.`);
  }
  return n;
}
