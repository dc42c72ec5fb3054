/**
 * The suite's one error type for user errors: a bad flag, config value, file or environment. Entry points print its
 * message (one sentence that names the file or knob and what to do) and exit with 2; any other error is a bug.
 * @module
 */

/** An error caused by the user's input or environment, with a message fit to print as is. */
export class UserError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UserError";
  }
}

/**
 * Runs a command-line entry point: a UserError prints `error: <message>` on stderr and gives exit code 2; any other
 * error is a bug and propagates (with its stack trace).
 */
export async function runEntryPoint(fn: () => Promise<number>): Promise<number> {
  try {
    return await fn();
  } catch (e) {
    if (e instanceof UserError) {
      console.error(`error: ${e.message}`);
      return 2;
    }
    throw e;
  }
}
