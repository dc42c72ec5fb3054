/**
 * A seeded fuzz test of the safetensors header reader and the checkpoint's tensor checks: 100,000 mutations of the HF
 * fixture's header (bytes, the length field, data_offsets, dtypes, shapes, names, repeated keys, the file's length),
 * each parsed from memory (no GPU, no file writes) and, when it parses, matched against the fixture's config as
 * `Checkpoint.open` does, and one small tensor read. Nothing but a one-line UserError may escape, and every mutation
 * must end (the whole run takes about 20 s here; a hang would keep the test from finishing).
 */

import { assert, assertInstanceOf } from "@std/assert";
import { fromFileUrl } from "@std/path";
import { UserError } from "../../common/errors.ts";
import { matchTensors } from "../../model/checkpoint.ts";
import { configFromHf } from "../../model/config.ts";
import { type ByteSource, SafetensorsFile } from "../../model/safetensors.ts";
import { Rng } from "../../kernels/testing/harness.ts";

const DIR = fromFileUrl(new URL("../fixtures/olmo2_tiny", import.meta.url));
const FILE = await Deno.readFile(`${DIR}/model.safetensors`);
const CONFIG = configFromHf(JSON.parse(await Deno.readTextFile(`${DIR}/config.json`)), `${DIR}/config.json`);
const HEADER_BYTES = Number(new DataView(FILE.buffer).getBigUint64(0, true));
const HEADER_TEXT = new TextDecoder().decode(FILE.subarray(8, 8 + HEADER_BYTES));
const DATA = FILE.subarray(8 + HEADER_BYTES);
const PATH = "fuzz/model.safetensors";

/** A file held in memory as a length field, a header and a (possibly shortened) view of the fixture's data. */
class MemorySource implements ByteSource {
  readonly size: number;
  readonly #head: Uint8Array;
  constructor(lengthField: bigint, header: Uint8Array, readonly data: Uint8Array) {
    this.#head = new Uint8Array(8 + header.length);
    new DataView(this.#head.buffer).setBigUint64(0, lengthField, true);
    this.#head.set(header, 8);
    this.size = this.#head.length + data.length;
  }
  readAt(offset: number, into: Uint8Array): Promise<void> {
    assert(Number.isSafeInteger(offset) && offset >= 0 && offset + into.length <= this.size, "read outside the file");
    const head = this.#head, split = Math.max(0, Math.min(into.length, head.length - offset));
    into.set(head.subarray(offset, offset + split));
    const from = offset + split - head.length;
    into.set(this.data.subarray(from, from + into.length - split), split);
    return Promise.resolve();
  }
  close(): void {}
}

/** Values a mutated number, dtype or shape takes: edge cases of each JSON type. */
const NUMBERS: unknown[] = [0, 1, -1, 2, 7, 255, 256, 2 ** 31, 2 ** 32, 2 ** 53, 2 ** 53 + 2, 1e300, -0, 0.5, 1.5e-7];
const ODD_VALUES: unknown[] = [null, true, "12", "", [], {}, [1, 2], { a: 1 }];
const DTYPES = ["F32", "F16", "BF16", "I16", "U16", "I64", "U8", "BOOL", "F8_E4M3", "F64", "f32", "F13", "", "BF16 "];
const BYTES = [...'{}[]":,0123456789-.eE \\nutrlfasBF'].map((c) => c.charCodeAt(0));

/** One tensor entry of a parsed header, for structured mutations. */
type Entry = { dtype?: unknown; shape?: unknown; data_offsets?: unknown } & Record<string, unknown>;

function pick<T>(rng: Rng, values: readonly T[]): T {
  return values[rng.int(values.length)];
}

/** A number near `n` (off by a little, doubled, halved) or an edge value. */
function nearby(rng: Rng, n: unknown): unknown {
  const x = typeof n === "number" ? n : 0;
  return [x + 1, x - 1, x + 1 + rng.int(64), x - 1 - rng.int(64), x * 2, Math.floor(x / 2), pick(rng, NUMBERS)][
    rng.int(7)
  ];
}

const MUTATIONS = ["bytes", "length", "offsets", "dtype", "shape", "entries", "repeat", "data"] as const;
type Mutation = typeof MUTATIONS[number];

/** The file after one mutation of kind `kind`. */
function mutate(rng: Rng, kind: Mutation): MemorySource {
  const header = JSON.parse(HEADER_TEXT) as Record<string, Entry>;
  const names = Object.keys(header).filter((n) => n !== "__metadata__");
  const entry = header[pick(rng, names)];
  let text: string | undefined;
  let data = DATA;
  let lengthDelta: bigint | undefined;
  switch (kind) {
    case "bytes": { // 1..8 bytes of the header text overwritten, inserted or deleted
      const bytes = [...new TextEncoder().encode(HEADER_TEXT)];
      for (let n = 1 + rng.int(8); n > 0; n--) {
        const at = rng.int(bytes.length), value = rng.int(3) === 0 ? rng.int(256) : pick(rng, BYTES);
        const op = rng.int(3);
        if (op === 0) bytes[at] = value;
        else if (op === 1) bytes.splice(at, 0, value);
        else bytes.splice(at, 1);
      }
      return new MemorySource(BigInt(bytes.length), new Uint8Array(bytes), data);
    }
    case "length": { // the length field off by a little or a lot; the header itself intact
      const choices = [1n, -1n, 8n, -8n, BigInt(rng.int(5000)) - 2500n, 2n ** 63n, -BigInt(HEADER_BYTES)];
      lengthDelta = pick(rng, choices);
      break;
    }
    case "offsets": {
      const offsets = Array.isArray(entry.data_offsets) ? entry.data_offsets : [0, 0];
      const r = rng.int(5);
      if (r < 3) offsets[rng.int(2)] = nearby(rng, offsets[0]);
      else if (r === 3) entry.data_offsets = pick(rng, [...ODD_VALUES, [offsets[1], offsets[0]], [0], [0, 1, 2]]);
      else entry.data_offsets = offsets.map((o) => nearby(rng, o));
      break;
    }
    case "dtype":
      entry.dtype = rng.int(4) === 0 ? pick(rng, ODD_VALUES) : pick(rng, DTYPES);
      break;
    case "shape": {
      const shape = Array.isArray(entry.shape) ? [...entry.shape] : [];
      const r = rng.int(6);
      if (r < 2 && shape.length > 0) shape[rng.int(shape.length)] = nearby(rng, shape[0]);
      else if (r === 2) shape.push(pick(rng, [1, 2, 0, 128]));
      else if (r === 3) shape.pop();
      else if (r === 4) shape.reverse();
      entry.shape = r === 5 ? pick(rng, ODD_VALUES) : shape;
      break;
    }
    case "entries": { // a tensor removed, renamed, or a field removed or added; or odd metadata
      const name = pick(rng, names), r = rng.int(6);
      if (r === 0) delete header[name];
      else if (r === 1) {
        header[pick(rng, ["model.norm.bias", "model.layers.9.mlp.up_proj.weight", "blocks.0.x", name + "x", ""])] =
          header[name];
        delete header[name];
      } else if (r === 2) delete header[name][pick(rng, ["dtype", "shape", "data_offsets"])];
      else if (r === 3) header[name].extra = pick(rng, ODD_VALUES);
      else if (r === 4) (header as Record<string, unknown>).__metadata__ = pick(rng, [...ODD_VALUES, { n: 1 }]);
      else (header as Record<string, unknown>)[name] = pick(rng, ODD_VALUES);
      break;
    }
    case "repeat": { // a key written twice: a whole tensor entry, or one field of an entry
      const json = JSON.stringify(header), name = pick(rng, names);
      const whole = `"${name}":${JSON.stringify(header[name])}`;
      if (rng.int(2) === 0) text = json.replace("{", `{${whole},`);
      else {text = json.replace(
          whole,
          whole.replace('{"dtype":', `{"dtype":${JSON.stringify(pick(rng, DTYPES))},"dtype":`),
        );}
      break;
    }
    case "data": // the file ends early or has bytes to spare
      data = rng.int(2) === 0 ? DATA.subarray(0, rng.int(DATA.length)) : new Uint8Array(DATA.length + 1 + rng.int(16));
      break;
  }
  const bytes = new TextEncoder().encode(text ?? JSON.stringify(header));
  const field = BigInt(bytes.length) + (lengthDelta ?? 0n);
  return new MemorySource(field < 0n ? 0n : field, bytes, data);
}

/** Parses `source` as the loader does; returns how far it got: "header" (refused there), "tensors", or "read". */
async function load(source: MemorySource, rng: Rng): Promise<"header" | "tensors" | "read"> {
  let file: SafetensorsFile;
  try {
    file = await SafetensorsFile.fromSource(source, PATH);
  } catch (e) {
    if (e instanceof UserError && !e.message.includes("\n")) return "header";
    throw e;
  }
  try {
    const location = new Map([...file.tensors.keys()].map((name) => [name, file]));
    const { tensors } = matchTensors(CONFIG, `${DIR}/config.json`, {
      byPath: new Map([[PATH, file]]),
      location,
      describe: PATH,
    });
    const small = tensors.filter((t) => t.format === "f32"); // the norm weights: 128 values each
    await file.readF32(pick(rng, small).sourceName);
    return "read";
  } catch (e) {
    if (e instanceof UserError && !e.message.includes("\n")) return "tensors";
    throw e;
  }
}

Deno.test("100,000 mutations of the fixture's safetensors header: nothing but a one-line UserError escapes", async () => {
  const rng = new Rng(20251126);
  const reached = Object.fromEntries(MUTATIONS.map((m) => [m, { header: 0, tensors: 0, read: 0 }]));
  for (let i = 0; i < 100_000; i++) {
    const kind = MUTATIONS[i % MUTATIONS.length];
    const source = mutate(rng, kind);
    let outcome: "header" | "tensors" | "read";
    try {
      outcome = await load(source, rng);
    } catch (e) {
      throw new Error(`mutation ${i} (${kind}) let a ${(e as Error)?.name} escape: ${(e as Error)?.stack ?? e}`);
    }
    reached[kind][outcome]++;
  }
  // Every kind must reach each stage it can: a fuzzer whose mutations all die at JSON.parse proves little.
  for (const kind of ["bytes", "dtype", "shape", "entries"] as const) {
    assert(reached[kind].tensors > 100, `${kind} mutations reached the tensor checks ${reached[kind].tensors} times`);
  }
  for (const kind of MUTATIONS) {
    assert(
      reached[kind].header > 100,
      `${kind} mutations were refused by the header checks only ${reached[kind].header} times`,
    );
  }
  assert(reached.repeat.header === 12_500, "every repeated key is refused with the header");
  assert(reached.entries.read > 100, "harmless mutations (an extra field, other metadata) must load");
});

Deno.test("the fuzz source reads the fixture unchanged, and a real UserError is what the loader raises", async () => {
  const rng = new Rng(1);
  const intact = new MemorySource(BigInt(HEADER_BYTES), FILE.subarray(8, 8 + HEADER_BYTES), DATA);
  assertInstanceOf(intact, MemorySource);
  assert((await load(intact, rng)) === "read", "the unmutated fixture loads");
  const repeated = mutate(new Rng(3), "repeat");
  assert((await load(repeated, rng)) === "header", "a repeated key is refused with the header");
});
