/**
 * GPU timing with timestamp queries: each timed compute pass writes a begin and an end timestamp; `readMs` resolves
 * them all with one readback (one sync point) after the work is submitted.
 * @module
 */

import { type Dispatch, encodeDispatches, type Gpu } from "./runtime.ts";

/** Timestamp slots for up to `capacity` compute passes, read back together. */
export class PassTimer {
  readonly #querySet: GPUQuerySet;
  readonly #resolve: GPUBuffer;
  #used = 0;

  /** Throws when the device has no `timestamp-query`; check `PassTimer.supported(gpu)` first. */
  constructor(readonly gpu: Gpu, readonly capacity: number) {
    if (!PassTimer.supported(gpu)) throw new Error("PassTimer needs the timestamp-query feature");
    this.#querySet = gpu.device.createQuerySet({ type: "timestamp", count: 2 * capacity });
    this.#resolve = gpu.device.createBuffer({
      label: "timestamps",
      size: 16 * capacity,
      usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC,
    });
  }

  /** True when the device can time passes. */
  static supported(gpu: Gpu): boolean {
    return gpu.has("timestamp-query");
  }

  /** Passes timed since the last reset. */
  get used(): number {
    return this.#used;
  }

  /** Starts counting from slot 0 again (the previous readings are overwritten). */
  reset(): void {
    this.#used = 0;
  }

  /** A compute pass descriptor that writes the next pair of timestamps. */
  pass(label: string): GPUComputePassDescriptor {
    if (this.#used >= this.capacity) throw new Error(`PassTimer: more than ${this.capacity} timed passes`);
    const i = this.#used++;
    return {
      label,
      timestampWrites: { querySet: this.#querySet, beginningOfPassWriteIndex: 2 * i, endOfPassWriteIndex: 2 * i + 1 },
    };
  }

  /** Records the resolve of every used slot into `encoder` (call once, after the timed passes). */
  resolve(encoder: GPUCommandEncoder): void {
    if (this.#used > 0) encoder.resolveQuerySet(this.#querySet, 0, 2 * this.#used, this.#resolve, 0);
  }

  /** The duration in ms of each timed pass since the last reset, in order. One sync point. */
  async readMs(): Promise<number[]> {
    if (this.#used === 0) return [];
    const raw = new BigUint64Array(await this.gpu.read(this.#resolve, 0, 16 * this.#used));
    const out: number[] = [];
    for (let i = 0; i < this.#used; i++) out.push(Number(raw[2 * i + 1] - raw[2 * i]) / 1e6);
    return out;
  }

  /** Frees the query set and its buffer. */
  destroy(): void {
    this.#querySet.destroy();
    this.#resolve.destroy();
  }
}

/**
 * GPU time in ms of `reps` replays of `dispatches`, each replay in its own timed compute pass, all submitted at once
 * and read back together (one sync point). `before` records untimed commands ahead of every replay (e.g. a copy that
 * restores the control block the dispatches change). Falls back to wall time per replay when timestamps are
 * unavailable.
 */
export async function timeDispatches(
  gpu: Gpu,
  dispatches: readonly Dispatch[],
  reps: number,
  before?: (encoder: GPUCommandEncoder) => void,
): Promise<number[]> {
  if (!PassTimer.supported(gpu)) {
    const out: number[] = [];
    for (let i = 0; i < reps; i++) {
      if (before) {
        const encoder = gpu.device.createCommandEncoder({ label: "timeDispatches setup" });
        before(encoder);
        gpu.device.queue.submit([encoder.finish()]);
      }
      const t0 = performance.now();
      gpu.run(dispatches);
      await gpu.finish();
      out.push(performance.now() - t0);
    }
    return out;
  }
  const timer = new PassTimer(gpu, reps);
  const encoder = gpu.device.createCommandEncoder({ label: "timeDispatches" });
  for (let i = 0; i < reps; i++) {
    before?.(encoder);
    const pass = encoder.beginComputePass(timer.pass(`rep ${i}`));
    encodeDispatches(pass, dispatches);
    pass.end();
  }
  timer.resolve(encoder);
  gpu.device.queue.submit([encoder.finish()]);
  const ms = await timer.readMs();
  timer.destroy();
  return ms;
}
