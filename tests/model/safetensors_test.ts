import { assertEquals, assertRejects } from "@std/assert";
import { join } from "@std/path";
import { f32ToBf16Bits, packBf16 } from "../../kernels/bf16.ts";
import { type ByteSource, CHUNK_BYTES, SafetensorsFile } from "../../model/safetensors.ts";
import { Rng } from "../../kernels/testing/harness.ts";
import { assertUserError, withTempDir } from "./util.ts";
import { writeSafetensors } from "./writers.ts";

/** f32 values from bit patterns. */
function f32s(bits: number[]): Float32Array {
  return new Float32Array(new Uint32Array(bits).buffer);
}

/** The u32 words of a packed bf16 result as pairs of 16-bit patterns, for readable comparisons. */
function halves(packed: Uint32Array): number[] {
  return [...packed].flatMap((w) => [w & 0xffff, w >>> 16]);
}

/** A safetensors file from a raw header (object or text), data bytes and optionally a lying length field. */
function rawFile(header: unknown, data: Uint8Array = new Uint8Array(0), lengthField?: bigint): Uint8Array {
  const json = new TextEncoder().encode(typeof header === "string" ? header : JSON.stringify(header));
  const out = new Uint8Array(8 + json.length + data.length);
  new DataView(out.buffer).setBigUint64(0, lengthField ?? BigInt(json.length), true);
  out.set(json, 8);
  out.set(data, 8 + json.length);
  return out;
}

// Bit patterns whose bf16 rounding a truncating or round-half-up conversion gets wrong, with the RNE result:
// ties go to the even mantissa, the largest finite f32 overflows to infinity, NaN stays a quiet NaN.
const RNE_CASES: [number, number][] = [
  [0x3f800000, 0x3f80], // 1
  [0x3f808000, 0x3f80], // 1 + 2^-8: tie, 0x3f80 is even -> down
  [0x3f818000, 0x3f82], // 1 + 3*2^-8: tie, 0x3f81 is odd -> up
  [0x3f808001, 0x3f81], // just above the tie -> up
  [0x3f807fff, 0x3f80], // just below the tie -> down
  [0xbf818000, 0xbf82], // negative tie -> away from zero to even
  [0x7f7fffff, 0x7f80], // max f32 -> +inf
  [0x00000001, 0x0000], // smallest subnormal -> +0
  [0x80000000, 0x8000], // -0
  [0xff800000, 0xff80], // -inf
  [0x7fc00000, 0x7fc0], // quiet NaN
];

Deno.test("F32 tensors read back exactly as f32 and as bf16 rounded to nearest even", async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, "a.safetensors");
    const special = f32s(RNE_CASES.map(([b]) => b));
    const random = new Rng(1).normals(6 * 10, 3);
    await writeSafetensors(path, {
      special: { dtype: "F32", shape: [special.length + 1], data: new Float32Array([...special, 2.5]) },
      random: { dtype: "F32", shape: [6, 10], data: random },
    });
    const f = await SafetensorsFile.open(path);
    assertEquals(f.names(), ["special", "random"]);
    assertEquals(f.metadata, { format: "pt" });
    assertEquals(await f.readF32("random"), random);
    assertEquals(halves(await f.readBf16("special")), [...RNE_CASES.map(([, r]) => r), 0x4020]);
    assertEquals(await f.readBf16("random"), packBf16(random, 10));
    f.close();
  });
});

Deno.test("F16 tensors read exactly as f32 and rounded to nearest even as bf16", async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, "h.safetensors");
    // f16 has 10 mantissa bits, bf16 7: 1 + 2^-8 and 1 + 3*2^-8 are exact in f16 and ties in bf16.
    const exact = new Float32Array([1 + 2 ** -8, 1 + 3 * 2 ** -8, -65504, 2 ** -24, 0.1, -3.25]);
    const f16 = new Float32Array(new Float16Array(exact)); // the values as stored
    await writeSafetensors(path, { h: { dtype: "F16", shape: [3, 2], data: exact } });
    const f = await SafetensorsFile.open(path);
    assertEquals(await f.readF32("h"), f16);
    const bf = halves(await f.readBf16("h"));
    assertEquals(bf.slice(0, 2), [0x3f80, 0x3f82]);
    assertEquals(bf, [...f16].map(f32ToBf16Bits));
    f.close();
  });
});

Deno.test("BF16 tensors keep their bits (NaN payloads included) and widen exactly to f32", async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, "b.safetensors");
    const bits = new Uint16Array([0x3f80, 0x7fc1, 0x0001, 0x8000, 0xc0a0, 0x7f7f, 0xff80, 0x1234]);
    await writeSafetensors(path, { b: { dtype: "BF16", shape: [4, 2], data: bits } });
    const f = await SafetensorsFile.open(path);
    assertEquals(halves(await f.readBf16("b")), [...bits]);
    assertEquals(new Uint32Array((await f.readF32("b")).buffer), new Uint32Array([...bits].map((b) => b << 16)));
    f.close();
  });
});

Deno.test("reads pad extra rows with zeros and convert tensors larger than the chunk buffer", async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, "big.safetensors");
    const cols = 64, rows = CHUNK_BYTES / 4 / cols + 3; // F32 rows spanning two chunks, the second partial
    const big = new Rng(2).normals(rows * cols);
    await writeSafetensors(path, {
      big: { dtype: "F32", shape: [rows, cols], data: big },
      bigHalf: { dtype: "F16", shape: [rows, cols], data: big },
    });
    const f = await SafetensorsFile.open(path);
    const packed = await f.readBf16("big", { rows: rows + 2 });
    assertEquals(packed.length, ((rows + 2) * cols) / 2);
    assertEquals(packed.subarray(0, (rows * cols) / 2), packBf16(big, cols));
    assertEquals(packed.subarray((rows * cols) / 2).every((w) => w === 0), true);
    assertEquals(await f.readF32("bigHalf"), new Float32Array(new Float16Array(big)));
    await assertRejects(() => f.readBf16("big", { rows: 1 }));
    f.close();
  });
});

/** A ByteSource over bytes in memory that records every range read. */
class RecordingSource implements ByteSource {
  reads: [number, number][] = [];
  constructor(private readonly bytes: Uint8Array) {}
  get size(): number {
    return this.bytes.length;
  }
  readAt(offset: number, into: Uint8Array): Promise<void> {
    this.reads.push([offset, offset + into.length]);
    into.set(this.bytes.subarray(offset, offset + into.length));
    return Promise.resolve();
  }
  close(): void {}
}

Deno.test("reading one tensor reads only its byte range, through a bounded buffer", async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, "r.safetensors");
    const huge = new Float32Array(3 * CHUNK_BYTES / 4); // 12 MiB next to the small tensor
    const small = new Rng(3).normals(16);
    await writeSafetensors(path, {
      before: { dtype: "F32", shape: [huge.length], data: huge },
      small: { dtype: "F32", shape: [2, 8], data: small },
      after: { dtype: "F32", shape: [huge.length], data: huge },
    });
    const src = new RecordingSource(await Deno.readFile(path));
    const f = await SafetensorsFile.fromSource(src, path);
    const headerEnd = f.info("before").start;
    assertEquals(src.reads.every(([, end]) => end <= headerEnd), true, "opening reads only the header");
    src.reads = [];
    assertEquals(await f.readBf16("small"), packBf16(small, 8));
    const { start, end } = f.info("small");
    assertEquals(src.reads, [[start, end]]);
    src.reads = [];
    await f.readBf16("after");
    const info = f.info("after");
    assertEquals(src.reads.every(([a, b]) => a >= info.start && b <= info.end && b - a <= CHUNK_BYTES), true);
    assertEquals(src.reads.reduce((n, [a, b]) => n + b - a, 0), info.end - info.start);
  });
});

Deno.test("writeSafetensors pads the header to 8 bytes and lays tensors out contiguously", async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, "w.safetensors");
    await writeSafetensors(path, { x: { dtype: "BF16", shape: [3], data: new Float32Array([1, 2, 3]) } }, {});
    const bytes = await Deno.readFile(path);
    const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
    assertEquals(n % 8, 0);
    assertEquals(bytes.length, 8 + n + 6);
    assertEquals(JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n))), {
      __metadata__: {},
      x: { dtype: "BF16", shape: [3], data_offsets: [0, 6] },
    });
  });
});

Deno.test("malformed files are refused with one sentence naming the file (and tensor)", async () => {
  await withTempDir(async (dir) => {
    const f32 = (begin: number, end: number, shape = [(end - begin) / 4]) => ({
      dtype: "F32",
      shape,
      data_offsets: [begin, end],
    });
    const eight = new Uint8Array(8);
    const cases: [string, Uint8Array, string[]][] = [
      ["short", new Uint8Array(5), ["too short"]],
      ["length_beyond_file", rawFile({ a: f32(0, 8) }, eight, 1000n), ["1000"]],
      ["length_huge", rawFile({}, eight, 2n ** 63n), ["header length"]],
      ["not_json", rawFile("{not json", eight), ["JSON"]],
      ["not_utf8", rawFile('"\xff"', eight).map((b, i) => (i === 9 ? 0xff : b)), ["UTF-8"]],
      ["not_object", rawFile([1, 2]), ["JSON object"]],
      ["no_offsets", rawFile({ a: { dtype: "F32", shape: [2] } }, eight), ['"a"', "data_offsets"]],
      ["bad_dtype", rawFile({ a: { ...f32(0, 8), dtype: "F13" } }, eight), ['"a"', "F13"]],
      ["bad_shape", rawFile({ a: f32(0, 8, [-2]) }, eight), ['"a"', "shape"]],
      ["reversed_offsets", rawFile({ a: f32(8, 0, [2]) }, eight), ['"a"', "data_offsets"]],
      ["dtype_lies", rawFile({ a: { ...f32(0, 8), dtype: "BF16" } }, eight), ['"a"', "BF16", "8 bytes"]],
      ["overlap", rawFile({ a: f32(0, 8), b: f32(4, 12) }, new Uint8Array(12)), ['"a"', '"b"', "overlap"]],
      ["gap", rawFile({ a: f32(0, 4), b: f32(8, 12) }, new Uint8Array(12)), ['"b"', "4..8"]],
      ["truncated", rawFile({ a: f32(0, 8), b: f32(8, 16) }, new Uint8Array(12)), ["truncated"]],
      ["trailing", rawFile({ a: f32(0, 8) }, new Uint8Array(12)), ["4 bytes after the last tensor"]],
      ["bad_metadata", rawFile({ __metadata__: { n: 1 }, a: f32(0, 8) }, eight), ["__metadata__", '"n"']],
      // JSON.parse keeps the last of repeated keys; another reader may keep the first: the header is ambiguous.
      [
        "repeated_tensor",
        rawFile(
          '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"F32",' +
            '"shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}',
          eight,
        ),
        ['"a" twice'],
      ],
      ["repeated_field", rawFile('{"a":{"dtype":"I32","dtype":"F32","shape":[2],"data_offsets":[0,8]}}', eight), [
        '"dtype" twice',
      ]],
      ["repeated_escaped", rawFile('{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"\\u0061":1}', eight), [
        '"a" twice',
      ]],
      [
        "repeated_metadata",
        rawFile('{"__metadata__":{"k":"1","k":"2"},"a":' + JSON.stringify(f32(0, 8)) + "}", eight),
        [
          '"k" twice',
        ],
      ],
    ];
    for (const [name, bytes, mustName] of cases) {
      const path = join(dir, `${name}.safetensors`);
      await Deno.writeFile(path, bytes);
      await assertUserError(() => SafetensorsFile.open(path), [path, ...mustName]);
    }
    await assertUserError(() => SafetensorsFile.open(join(dir, "absent.safetensors")), [
      join(dir, "absent.safetensors"),
      "does not exist",
    ]);
    await assertUserError(() => SafetensorsFile.open(dir), [dir, "not a regular file"]);
  });
});

Deno.test("the same key in different objects, in strings, or nested is no repetition", async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, "ok.safetensors");
    const header = '{"__metadata__":{"a":"{\\"a\\":1,\\"a\\":2}","shape":"x"},' +
      '"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}';
    await Deno.writeFile(path, rawFile(header, new Uint8Array(8)));
    const f = await SafetensorsFile.open(path);
    assertEquals(f.names(), ["a", "b"]);
    assertEquals(f.metadata.a, '{"a":1,"a":2}');
    f.close();
  });
});

Deno.test("tensors that cannot be weights are refused when read, naming file and tensor", async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, "t.safetensors");
    await Deno.writeFile(
      path,
      rawFile({ ids: { dtype: "I64", shape: [2], data_offsets: [0, 16] } }, new Uint8Array(16)),
    );
    await writeSafetensors(join(dir, "odd.safetensors"), {
      odd: { dtype: "F32", shape: [2, 3], data: new Float32Array(6) },
    });
    const f = await SafetensorsFile.open(path);
    await assertUserError(() => f.readF32("ids"), [path, '"ids"', "I64"]);
    await assertUserError(() => f.readBf16("missing"), [path, '"missing"']);
    f.close();
    const odd = await SafetensorsFile.open(join(dir, "odd.safetensors"));
    await assertUserError(() => odd.readBf16("odd"), [join(dir, "odd.safetensors"), '"odd"', "3 values"]);
    assertEquals((await odd.readF32("odd")).length, 6);
    odd.close();
  });
});
