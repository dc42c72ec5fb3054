/**
 * A safetensors reader written for this suite (tests write their files with tests/model/writers.ts).
 *
 * Format: an unsigned 64-bit little-endian header length N, N bytes of UTF-8 JSON mapping each tensor name to
 * `{ dtype, shape, data_offsets: [begin, end] }` (offsets relative to the byte after the header, plus an optional
 * `__metadata__` object of strings), then the tensor bytes, little-endian, row-major.
 *
 * The reader validates the whole header when a file is opened, with the rules of the reference implementation
 * (the tensors must tile the data area exactly: no overlap, no gap, nothing past the end, nothing after the last
 * tensor), and then reads ONE tensor at a time with positioned reads, converting through a bounded chunk buffer, so
 * memory holds the requested tensor and at most {@link CHUNK_BYTES} more, never the file. Weights convert to packed
 * bf16 (two per u32, the lower index in the low half, round-to-nearest-even from F32 and F16, as PyTorch's
 * `.to(torch.bfloat16)`), norm weights to f32. Every error is one sentence naming the file (and tensor) and what to
 * do about it. The host must be little-endian (checked at load).
 * @module
 */

import { f32ToBf16Bits } from "../kernels/bf16.ts";
import { UserError } from "../common/errors.ts";

/** Bytes per element of every dtype the safetensors format defines. */
export const DTYPE_BYTES: Readonly<Record<string, number>> = {
  BOOL: 1,
  U8: 1,
  I8: 1,
  F8_E5M2: 1,
  F8_E4M3: 1,
  I16: 2,
  U16: 2,
  F16: 2,
  BF16: 2,
  I32: 4,
  U32: 4,
  F32: 4,
  I64: 8,
  U64: 8,
  F64: 8,
};

/** The dtypes whose tensors can be read as weights. */
export type LoadableDtype = "F32" | "F16" | "BF16";

/** Largest header accepted (the reference implementation's limit). */
export const MAX_HEADER_BYTES = 100_000_000;

/** Size of the buffer through which a tensor is read and converted; bounds the reader's memory beyond its output. */
export const CHUNK_BYTES = 4 << 20;

/** One tensor's header entry, validated, with absolute file offsets. */
export interface TensorInfo {
  readonly name: string;
  readonly dtype: string;
  readonly shape: readonly number[];
  /** Product of the shape. */
  readonly elements: number;
  /** First byte of the tensor's data in the file. */
  readonly start: number;
  /** One past its last byte. */
  readonly end: number;
}

/** Where a reader gets bytes: a file, or (in tests) anything that records what was read. */
export interface ByteSource {
  /** Total bytes. */
  readonly size: number;
  /** Fills `into` with the bytes starting at `offset` (the range is inside the source). */
  readAt(offset: number, into: Uint8Array): Promise<void>;
  close(): void;
}

/** Options of the tensor reads. */
export interface ReadOptions {
  /**
   * Rows of the result (the first dimension), at least the tensor's own: rows past the tensor's are zero. Used to pad
   * a checkpoint's embedding to the padded vocabulary.
   */
  rows?: number;
}

if (new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1) {
  throw new UserError("This machine is big-endian; the safetensors reader (like the GPU layouts) needs little-endian.");
}

function fail(message: string): never {
  throw new UserError(message);
}

/** A `ByteSource` over a file opened for reading, with positioned reads (seek + read). */
class FileSource implements ByteSource {
  constructor(readonly path: string, readonly size: number, private readonly file: Deno.FsFile) {}

  static async open(path: string): Promise<FileSource> {
    let file: Deno.FsFile;
    try {
      file = await Deno.open(path, { read: true });
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) fail(`${path} does not exist; check the path to the weights.`);
      if (e instanceof Deno.errors.PermissionDenied) {
        fail(`${path} cannot be read (permission denied); fix its rights.`);
      }
      fail(`${path} cannot be opened (${String((e as Error).message).replace(/[.\n]+$/, "")}); check the path.`);
    }
    const stat = await file.stat();
    if (!stat.isFile) {
      file.close();
      fail(`${path} is not a regular file; point at a .safetensors file.`);
    }
    return new FileSource(path, stat.size, file);
  }

  async readAt(offset: number, into: Uint8Array): Promise<void> {
    await this.file.seek(offset, Deno.SeekMode.Start);
    let done = 0;
    while (done < into.length) {
      const n = await this.file.read(into.subarray(done));
      if (n === null) {
        fail(
          `${this.path} ended at byte ${offset + done} while ${into.length} bytes from ${offset} were being read; ` +
            "the file was truncated or replaced while in use, so restore it and run again.",
        );
      }
      done += n;
    }
  }

  close(): void {
    this.file.close();
  }
}

function isIntegerArray(v: unknown): v is number[] {
  return Array.isArray(v) && v.every((x) => Number.isSafeInteger(x) && x >= 0);
}

/**
 * The first key that appears twice in one object of `json` (text that `JSON.parse` accepted), or undefined.
 * `JSON.parse` silently keeps the last of repeated keys; JSON leaves the choice to each reader, so such a header is
 * ambiguous (another tool could load other tensors, dtypes or offsets from the same file) and is rejected. One pass
 * with an explicit stack (no recursion, so any nesting depth is fine): one set of keys per open object, null per
 * open array.
 */
function repeatedKey(json: string): string | undefined {
  const open: (Set<string> | null)[] = [];
  let expectKey = false; // after "{" or after "," inside an object
  for (let i = 0; i < json.length; i++) {
    const c = json.charCodeAt(i);
    if (c === 0x22) { // a string: skip to its closing quote
      let end = i + 1;
      while (json.charCodeAt(end) !== 0x22) end += json.charCodeAt(end) === 0x5c ? 2 : 1;
      const keys = open[open.length - 1];
      if (expectKey && keys) {
        const raw = json.slice(i + 1, end);
        const key = raw.includes("\\") ? JSON.parse(json.slice(i, end + 1)) as string : raw;
        if (keys.has(key)) return key;
        keys.add(key);
        expectKey = false;
      }
      i = end;
    } else if (c === 0x7b) { // {
      open.push(new Set());
      expectKey = true;
    } else if (c === 0x5b) { // [
      open.push(null);
      expectKey = false;
    } else if (c === 0x7d || c === 0x5d) { // } ]
      open.pop();
    } else if (c === 0x2c) { // ,
      expectKey = open[open.length - 1] !== null;
    }
  }
  return undefined;
}

/** Parses and validates a header; `dataBytes` is the size of the data area after it. */
function parseHeader(
  path: string,
  json: unknown,
  dataStart: number,
  dataBytes: number,
): { tensors: Map<string, TensorInfo>; metadata: Record<string, string> } {
  const corrupt = "the header is corrupt, so re-download or re-export the file";
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    fail(`${path}: the header is not a JSON object; ${corrupt}.`);
  }
  const metadata: Record<string, string> = {};
  const tensors = new Map<string, TensorInfo>();
  const spans: { name: string; begin: number; end: number }[] = [];
  for (const [name, entry] of Object.entries(json as Record<string, unknown>)) {
    if (name === "__metadata__") {
      if (typeof entry !== "object" || entry === null || Array.isArray(entry)) {
        fail(`${path}: the header's __metadata__ is not an object of strings; ${corrupt}.`);
      }
      for (const [k, v] of Object.entries(entry as Record<string, unknown>)) {
        if (typeof v !== "string") fail(`${path}: __metadata__ key "${k}" is not a string; ${corrupt}.`);
        metadata[k] = v;
      }
      continue;
    }
    const e = entry as Record<string, unknown> | null;
    if (typeof e !== "object" || e === null || !("dtype" in e) || !("shape" in e) || !("data_offsets" in e)) {
      fail(`${path}: tensor "${name}" has no dtype, shape and data_offsets in the header; ${corrupt}.`);
    }
    const { dtype, shape, data_offsets: offsets } = e;
    if (typeof dtype !== "string" || !Object.hasOwn(DTYPE_BYTES, dtype)) {
      fail(
        `${path}: tensor "${name}" has dtype ${JSON.stringify(dtype)}, which is not a safetensors dtype; ${corrupt}.`,
      );
    }
    if (!isIntegerArray(shape)) {
      fail(`${path}: tensor "${name}" has shape ${JSON.stringify(shape)}, not a list of sizes; ${corrupt}.`);
    }
    if (!isIntegerArray(offsets) || offsets.length !== 2 || offsets[0] > offsets[1]) {
      fail(
        `${path}: tensor "${name}" has data_offsets ${JSON.stringify(offsets)}, not an ordered [begin, end] pair; ` +
          `${corrupt}.`,
      );
    }
    const elements = shape.reduce((a, b) => a * b, 1);
    const bytes = elements * DTYPE_BYTES[dtype];
    if (!Number.isSafeInteger(bytes) || bytes !== offsets[1] - offsets[0]) {
      fail(
        `${path}: tensor "${name}" is ${dtype} [${shape.join(", ")}] (${bytes} bytes) but its data_offsets span ` +
          `${offsets[1] - offsets[0]} bytes; ${corrupt}.`,
      );
    }
    tensors.set(name, {
      name,
      dtype,
      shape: Object.freeze([...shape]),
      elements,
      start: dataStart + offsets[0],
      end: dataStart + offsets[1],
    });
    spans.push({ name, begin: offsets[0], end: offsets[1] });
  }
  spans.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let expected = 0, previous = "";
  for (const s of spans) {
    if (s.begin < expected) {
      fail(`${path}: tensors "${previous}" and "${s.name}" overlap in the header's data_offsets; ${corrupt}.`);
    }
    if (s.begin > expected) {
      fail(
        `${path}: no tensor covers data bytes ${expected}..${s.begin} before "${s.name}", so the header's ` +
          `data_offsets are inconsistent; ${corrupt}.`,
      );
    }
    expected = s.end;
    previous = s.name;
  }
  if (expected > dataBytes) {
    fail(
      `${path}: the header puts tensor data up to byte ${dataStart + expected} but the file has only ` +
        `${dataStart + dataBytes} bytes, so it is truncated (or its header lies); re-download or re-export it.`,
    );
  }
  if (expected < dataBytes) {
    fail(
      `${path}: the file has ${dataBytes - expected} bytes after the last tensor that the header does not ` +
        "describe; re-download or re-export it.",
    );
  }
  return { tensors, metadata };
}

/**
 * An open safetensors file: the validated header in memory, the data on disk. Read tensors one at a time with
 * {@link SafetensorsFile.readBf16} / {@link SafetensorsFile.readF32}; call {@link SafetensorsFile.close} when done.
 */
export class SafetensorsFile {
  /** The tensors by name, in header order. */
  readonly tensors: ReadonlyMap<string, TensorInfo>;
  /** The header's `__metadata__` (empty when absent). */
  readonly metadata: Readonly<Record<string, string>>;

  private constructor(
    /** The path used in messages. */
    readonly path: string,
    private readonly source: ByteSource,
    parsed: { tensors: Map<string, TensorInfo>; metadata: Record<string, string> },
  ) {
    this.tensors = parsed.tensors;
    this.metadata = parsed.metadata;
  }

  /** Opens and validates `path` (reads only the header). */
  static async open(path: string): Promise<SafetensorsFile> {
    const source = await FileSource.open(path);
    try {
      return await SafetensorsFile.fromSource(source, path);
    } catch (e) {
      source.close();
      throw e;
    }
  }

  /** Validates the header of `source` (named `path` in messages) and wraps it. */
  static async fromSource(source: ByteSource, path: string): Promise<SafetensorsFile> {
    const hint = "it is truncated or not a safetensors file, so re-download or re-export it";
    if (source.size < 8) {
      fail(`${path}: the file is ${source.size} bytes, too short for a safetensors header; ${hint}.`);
    }
    const lenBytes = new Uint8Array(8);
    await source.readAt(0, lenBytes);
    const n = new DataView(lenBytes.buffer).getBigUint64(0, true);
    if (n > BigInt(source.size - 8)) {
      fail(`${path}: the header length field says ${n} bytes but only ${source.size - 8} bytes follow it; ${hint}.`);
    }
    const headerBytes = Number(n);
    if (headerBytes > MAX_HEADER_BYTES) {
      fail(`${path}: the header length field says ${n} bytes, above the ${MAX_HEADER_BYTES}-byte limit; ${hint}.`);
    }
    const header = new Uint8Array(headerBytes);
    await source.readAt(8, header);
    let json: unknown, text: string;
    try {
      text = new TextDecoder("utf-8", { fatal: true }).decode(header);
      json = JSON.parse(text);
    } catch {
      fail(`${path}: the ${headerBytes}-byte header is not valid UTF-8 JSON; ${hint}.`);
    }
    const repeated = repeatedKey(text);
    if (repeated !== undefined) {
      fail(
        `${path}: the header names ${JSON.stringify(repeated)} twice in one object, which readers resolve ` +
          "differently; the header is corrupt, so re-download or re-export the file.",
      );
    }
    const dataStart = 8 + headerBytes;
    return new SafetensorsFile(path, source, parseHeader(path, json, dataStart, source.size - dataStart));
  }

  /** The tensor names, in header order. */
  names(): string[] {
    return [...this.tensors.keys()];
  }

  /** The header entry of `name`; throws one sentence when the file has no such tensor. */
  info(name: string): TensorInfo {
    const t = this.tensors.get(name);
    if (!t) fail(`${this.path} has no tensor "${name}"; check that the file belongs to this model.`);
    return t;
  }

  /** The raw bytes of tensor `name` (exactly its byte range). */
  async readBytes(name: string): Promise<Uint8Array> {
    const t = this.info(name);
    const out = new Uint8Array(t.end - t.start);
    await this.source.readAt(t.start, out);
    return out;
  }

  /**
   * Tensor `name` as packed bf16: element i in bits 16*(i%2).. of u32 i/2, rounded to nearest even from F32/F16
   * (exact from BF16). The last dimension must be even so that every row packs into whole u32.
   */
  async readBf16(name: string, opts: ReadOptions = {}): Promise<Uint32Array> {
    const t = this.loadable(name);
    const inner = t.shape.length === 0 ? 1 : t.shape[t.shape.length - 1];
    if (inner % 2 !== 0) {
      fail(
        `${this.path}: tensor "${name}" has rows of ${inner} values, which cannot be packed two bf16 per u32; ` +
          "this suite needs even row lengths.",
      );
    }
    const out = new Uint32Array(this.outputElements(t, opts) / 2);
    if (t.dtype === "BF16") {
      await this.source.readAt(t.start, new Uint8Array(out.buffer, 0, t.end - t.start));
      return out;
    }
    await this.chunks(t, (bytes, first, count) => {
      const src = t.dtype === "F32"
        ? new Float32Array(bytes.buffer, 0, count)
        : new Float16Array(bytes.buffer, 0, count);
      const base = first / 2;
      for (let i = 0; i < count; i += 2) {
        out[base + i / 2] = (f32ToBf16Bits(src[i]) | (f32ToBf16Bits(src[i + 1]) << 16)) >>> 0;
      }
    });
    return out;
  }

  /** Tensor `name` as f32 (exact from every loadable dtype). */
  async readF32(name: string, opts: ReadOptions = {}): Promise<Float32Array> {
    const t = this.loadable(name);
    const out = new Float32Array(this.outputElements(t, opts));
    if (t.dtype === "F32") {
      await this.source.readAt(t.start, new Uint8Array(out.buffer, 0, t.end - t.start));
      return out;
    }
    const outBits = new Uint32Array(out.buffer);
    await this.chunks(t, (bytes, first, count) => {
      if (t.dtype === "BF16") {
        const src = new Uint16Array(bytes.buffer, 0, count);
        for (let i = 0; i < count; i++) outBits[first + i] = src[i] << 16;
      } else {
        out.set(new Float16Array(bytes.buffer, 0, count), first);
      }
    });
    return out;
  }

  /** Closes the file. */
  close(): void {
    this.source.close();
  }

  private loadable(name: string): TensorInfo {
    const t = this.info(name);
    if (t.dtype !== "F32" && t.dtype !== "F16" && t.dtype !== "BF16") {
      fail(
        `${this.path}: tensor "${name}" is ${t.dtype}, which this suite cannot load as weights; ` +
          "store weights as F32, F16 or BF16.",
      );
    }
    return t;
  }

  private outputElements(t: TensorInfo, opts: ReadOptions): number {
    if (opts.rows === undefined) return t.elements;
    const rows = t.shape[0] ?? 1;
    if (!Number.isSafeInteger(opts.rows) || opts.rows < rows) {
      throw new Error(`SafetensorsFile: cannot pad "${t.name}" of ${rows} rows to ${opts.rows} rows`);
    }
    return rows === 0 ? 0 : (t.elements / rows) * opts.rows;
  }

  /** Reads `t` through one {@link CHUNK_BYTES} buffer, calling `convert` on each whole-element (even-count) piece. */
  private async chunks(
    t: TensorInfo,
    convert: (bytes: Uint8Array, first: number, count: number) => void,
  ): Promise<void> {
    const size = DTYPE_BYTES[t.dtype];
    const perChunk = Math.max(2, Math.floor(CHUNK_BYTES / size / 2) * 2);
    const buffer = new Uint8Array(Math.min(perChunk, t.elements) * size);
    for (let first = 0; first < t.elements; first += perChunk) {
      const count = Math.min(perChunk, t.elements - first);
      const bytes = buffer.subarray(0, count * size);
      await this.source.readAt(t.start + first * size, bytes);
      convert(bytes, first, count);
    }
  }
}
