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
