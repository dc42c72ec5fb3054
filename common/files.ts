/**
 * File-system and JSON helpers shared by the loaders and command-line tools: every failure is a UserError, one
 * sentence that names the file.
 * @module
 */

import { UserError } from "./errors.ts";

/** An error's message as the end of a sentence (with a final period). */
export function sentenceEnd(e: unknown): string {
  const text = e instanceof Error ? e.message : String(e);
  return /[.!?]$/.test(text) ? text : `${text}.`;
}

/** Why a file-system call failed, as the end of a sentence: "it does not exist." or the OS reason, lower-cased. */
export function fsFailure(e: unknown): string {
  if (e instanceof Deno.errors.NotFound) return "it does not exist.";
  const reason = (e instanceof Error ? e.message : String(e)).replace(/ \(os error \d+\)[^]*$/, "");
  return sentenceEnd(reason.charAt(0).toLowerCase() + reason.slice(1));
}

/** Whether `path` exists; any error other than "not found" counts as existing, for the read that follows to report. */
export async function pathExists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (e) {
    return !(e instanceof Deno.errors.NotFound);
  }
}

/** Whether `path` is an existing directory (false when it is missing, a file, or unreadable). */
export async function isDirectory(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isDirectory;
  } catch {
    return false;
  }
}

/** Reads and parses a JSON file; errors name the file. */
export async function readJsonFile(path: string): Promise<unknown> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    throw new UserError(`Cannot read ${path}: ${fsFailure(e)}`);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new UserError(`${path} is not valid JSON: ${sentenceEnd(e)}`);
  }
}

/** A parsed JSON object (not an array or null). */
export type JsonObject = Record<string, unknown>;

/** Whether `value` is a JSON object (not an array or null). */
export function isJsonObject(value: unknown): value is JsonObject {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
