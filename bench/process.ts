/**
 * Which process runs a benchmark, and whether it still does: a run records its process in results.json and in the
 * device lock, so that a "running" run whose process is gone reads as interrupted, and a lock whose holder is gone is
 * taken over. A pid alone is not enough (pids are reused), so on Linux the process's start time in clock ticks since
 * boot (field 22 of /proc/PID/stat) is recorded and compared as well.
 * @module
 */

/** A process, as results.json and the device lock record it. */
export interface ProcessIdentity {
  pid: number;
  hostname: string;
  /** ISO 8601 time the record was made (about when the process started its run). */
  started: string;
  /** Linux: field 22 of /proc/PID/stat (start time in clock ticks since boot); null elsewhere. */
  start_ticks: string | null;
}

/** Whether a recorded process still runs: "unknown" when it ran on another host or this OS cannot tell. */
export type ProcessState = "alive" | "gone" | "unknown";

/** Fields 3.. of /proc/PID/stat (after the command name, which may hold spaces), or null when there is no such pid. */
function procStat(pid: number): string[] | null {
  let text: string;
  try {
    text = Deno.readTextFileSync(`/proc/${pid}/stat`);
  } catch {
    return null;
  }
  return text.slice(text.lastIndexOf(")") + 2).trim().split(/\s+/);
}

/** This process, now. */
export function thisProcess(): ProcessIdentity {
  return {
    pid: Deno.pid,
    hostname: Deno.hostname(),
    started: new Date().toISOString(),
    start_ticks: Deno.build.os === "linux" ? procStat(Deno.pid)?.[19] ?? null : null,
  };
}

/** Whether the value read from a file is a ProcessIdentity (the checks a reader of an old or foreign file needs). */
export function isProcessIdentity(v: unknown): v is ProcessIdentity {
  const o = v as Record<string, unknown> | null;
  return typeof o === "object" && o !== null && Number.isSafeInteger(o.pid) && (o.pid as number) > 0 &&
    typeof o.hostname === "string" && typeof o.started === "string" &&
    (o.start_ticks === null || typeof o.start_ticks === "string");
}

/**
 * Whether process `p` still runs on this host. Linux: its /proc entry exists, is no zombie, and started when the
 * record says (else the pid was reused). Other Unix: `kill -0`. A record from another host is "unknown".
 */
export async function processState(p: ProcessIdentity): Promise<ProcessState> {
  if (p.hostname !== Deno.hostname()) return "unknown";
  if (p.pid === Deno.pid) return "alive";
  if (Deno.build.os === "linux") {
    const stat = procStat(p.pid);
    if (stat === null || stat[0] === "Z" || stat[0] === "X") return "gone";
    return p.start_ticks === null || stat[19] === p.start_ticks ? "alive" : "gone";
  }
  if (Deno.build.os === "windows") return "unknown";
  try {
    const out = await new Deno.Command("kill", { args: ["-0", String(p.pid)], stdout: "null", stderr: "null" })
      .output();
    return out.success ? "alive" : "gone";
  } catch {
    return "unknown";
  }
}
