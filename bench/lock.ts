/**
 * One benchmark per device: a lock file per adapter (under `HYDRA_BENCH_LOCK_DIR`, else `$XDG_CACHE_HOME/hydra-bench`
 * or `~/.cache/hydra-bench`, else the OS temp folder), named from the host and the adapter's vendor, device and
 * description, holding the holder's process (pid, host, start). Two benchmarks on one GPU time each other's work, so
 * a second one waits (saying for whom) or, with `--no-wait`, stops with one sentence. A lock whose process is gone is
 * stale and taken over. The file is created with its content in one step (a hard link of a written temp file), so a
 * reader never sees it half-written.
 * @module
 */

import { join } from "@std/path";
import { UserError } from "../common/errors.ts";
import { isProcessIdentity, type ProcessIdentity, processState, thisProcess } from "./process.ts";

/** The adapter a lock is for (Deno's GPUAdapterInfo fields). */
export interface LockedDevice {
  vendor: string;
  device: string;
  description: string;
}

/** What a lock file holds: the holder's process, the device in words, and the holder's run folder once it has one. */
export interface LockHolder extends ProcessIdentity {
  device: string;
  run: string | null;
}

/** The folder of the lock files (see the module comment). */
export function lockDir(): string {
  const explicit = Deno.env.get("HYDRA_BENCH_LOCK_DIR");
  if (explicit) return explicit;
  const home = Deno.env.get("HOME");
  const cache = Deno.env.get("XDG_CACHE_HOME") || (home ? join(home, ".cache") : null);
  return join(cache ?? Deno.env.get("TMPDIR") ?? Deno.env.get("TEMP") ?? "/tmp", "hydra-bench");
}

/** The device in words, e.g. `llvmpipe (LLVM 15.0.6, 256 bits) (vendor 65541, device 0)`. */
export function deviceName(d: LockedDevice): string {
  return `${d.description || "unnamed adapter"} (vendor ${d.vendor}, device ${d.device})`;
}

/** The lock file of device `d` on this host in folder `dir`. */
export function lockPath(d: LockedDevice, dir: string = lockDir()): string {
  const slug = `${Deno.hostname()}-${d.vendor}-${d.device}-${d.description}`.replace(/[^A-Za-z0-9.]+/g, "-");
  return join(dir, `${slug.slice(0, 150)}.lock`);
}

/** The holder recorded in lock file `path`, or null when there is none or the file is not a lock of this suite. */
function readHolder(path: string): LockHolder | null {
  try {
    const json = JSON.parse(Deno.readTextFileSync(path));
    return isProcessIdentity(json) ? json as LockHolder : null;
  } catch {
    return null;
  }
}

/** Someone else's holder in words: `pid 123 since 2026-...` (and its run folder when known). */
export function describeHolder(h: LockHolder): string {
  return `pid ${h.pid} on ${h.hostname}, started ${h.started}${h.run ? `, run folder ${h.run}` : ""}`;
}

/** A held lock; `release` is synchronous so that a signal handler can call it right before exiting. */
export class DeviceLock {
  #released = false;
  constructor(readonly path: string, readonly holder: LockHolder) {}

  /** Records the run folder in the lock file (so that a waiting benchmark can say whose run it waits for). */
  setRun(run: string): void {
    this.holder.run = run;
    const tmp = `${this.path}.${Deno.pid}.tmp`;
    Deno.writeTextFileSync(tmp, JSON.stringify(this.holder));
    Deno.renameSync(tmp, this.path);
  }

  /** Removes the lock file if it is still this process's; safe to call twice. */
  release(): void {
    if (this.#released) return;
    this.#released = true;
    const now = readHolder(this.path);
    if (now?.pid === this.holder.pid && now.started === this.holder.started) {
      try {
        Deno.removeSync(this.path);
      } catch { /* already gone */ }
    }
  }
}

/** Creates `path` holding `text` if it does not exist (a hard link of a written temp file); false when it exists. */
function createWith(path: string, text: string): boolean {
  const tmp = `${path}.${Deno.pid}.${crypto.randomUUID().slice(0, 8)}.tmp`;
  Deno.writeTextFileSync(tmp, text);
  try {
    Deno.linkSync(tmp, path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.AlreadyExists) return false;
    throw e;
  } finally {
    Deno.removeSync(tmp);
  }
}

/** Options of {@link acquireDeviceLock}. */
export interface LockOptions {
  /** Wait for a live holder (true) or stop with a UserError (false: `--no-wait`). */
  wait: boolean;
  /** Called once when the lock is held by a live process and the call starts waiting. */
  onWait?: (holder: LockHolder) => void;
  /** Poll interval while waiting, ms. */
  pollMs?: number;
  /** Lock folder (default {@link lockDir}). */
  dir?: string;
}

/** The live holder of device `d`'s lock, or null when it is free or stale (to warn under `--allow-concurrent`). */
export async function lockHolder(d: LockedDevice, dir: string = lockDir()): Promise<LockHolder | null> {
  const holder = readHolder(lockPath(d, dir));
  return holder && (await processState(holder)) !== "gone" ? holder : null;
}

/**
 * Takes device `d`'s lock: creates the lock file, or takes over a stale one (its process is gone), or, while a live
 * process holds it, waits (`wait`) or throws a UserError naming the holder. A file that is not a lock of this suite
 * (unreadable JSON) is treated as stale only once it has stayed so for a few polls, since a writer may be mid-rename.
 */
export async function acquireDeviceLock(d: LockedDevice, opts: LockOptions): Promise<DeviceLock> {
  const dir = opts.dir ?? lockDir();
  try {
    Deno.mkdirSync(dir, { recursive: true });
  } catch (e) {
    throw new UserError(
      `The lock folder ${dir} could not be created (${(e as Error).message}); set HYDRA_BENCH_LOCK_DIR to a ` +
        "writable folder.",
    );
  }
  const path = lockPath(d, dir);
  const me: LockHolder = { ...thisProcess(), device: deviceName(d), run: null };
  let waiting = false, unreadable = 0;
  for (;;) {
    if (createWith(path, JSON.stringify(me))) return new DeviceLock(path, me);
    const holder = readHolder(path);
    const state = holder ? await processState(holder) : (++unreadable > 3 ? "gone" : "unknown");
    if (state === "gone") {
      try {
        Deno.removeSync(path);
      } catch { /* another process took it over first */ }
      unreadable = 0;
      continue;
    }
    if (holder && !opts.wait) {
      throw new UserError(
        `Another benchmark (${describeHolder(holder)}) is using ${deviceName(d)}; wait for it to finish, or run ` +
          "without --no-wait to wait for it, or pass --allow-concurrent to run alongside it (timings would interfere).",
      );
    }
    if (holder && !waiting) {
      waiting = true;
      opts.onWait?.(holder);
    }
    await new Promise((r) => setTimeout(r, opts.pollMs ?? 1000));
  }
}
