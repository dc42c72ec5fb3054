import { assert, assertEquals, assertRejects } from "@std/assert";
import { join } from "@std/path";
import { createRunDir, formatRunDate, RESULTS_FILE, ResultsWriter, writeJsonAtomic } from "../../bench/results.ts";
import { validateResults } from "../../bench/schema.ts";
import { UserError } from "../../common/errors.ts";
import { syntheticConfiguration, syntheticResults } from "./synthetic.ts";

const DAY = new Date(2026, 10, 28, 23, 59); // local time: 28 November 2026

async function names(dir: string): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(dir)) out.push(e.name);
  return out.sort();
}

Deno.test("run folders are numbered per day and never reused", async () => {
  const root = join(await Deno.makeTempDir(), "results", "nested"); // a missing root is made
  assertEquals(formatRunDate(DAY), "2026-11-28");
  assertEquals(await createRunDir(root, DAY), join(root, "2026-11-28_run01"));
  assertEquals(await createRunDir(root, DAY), join(root, "2026-11-28_run02"));
  // numbering continues after the highest run of that day (a gap is not refilled), per day
  await Deno.mkdir(join(root, "2026-11-28_run07"));
  await Deno.writeTextFile(join(root, "2026-11-28_run07", RESULTS_FILE), "{}");
  assertEquals(await createRunDir(root, DAY), join(root, "2026-11-28_run08"));
  assertEquals(await createRunDir(root, new Date(2026, 10, 29)), join(root, "2026-11-29_run01"));
  // the earlier run's file is untouched
  assertEquals(await Deno.readTextFile(join(root, "2026-11-28_run07", RESULTS_FILE)), "{}");
});

Deno.test("runs that start at the same moment each get their own folder", async () => {
  const root = await Deno.makeTempDir();
  const dirs = await Promise.all(Array.from({ length: 12 }, () => createRunDir(root, DAY)));
  assertEquals(new Set(dirs).size, 12);
  assertEquals(
    await names(root),
    Array.from({ length: 12 }, (_, i) => `2026-11-28_run${String(i + 1).padStart(2, "0")}`),
  );
});

Deno.test("separate processes starting runs at once each get their own folder", async () => {
  const root = await Deno.makeTempDir();
  const module = new URL("../../bench/results.ts", import.meta.url).href;
  const code = `const { createRunDir } = await import(${JSON.stringify(module)});
    console.log(await createRunDir(${JSON.stringify(root)}, new Date(2026, 10, 28)));`;
  const outputs = await Promise.all(
    Array.from(
      { length: 4 },
      () =>
        new Deno.Command(Deno.execPath(), { args: ["eval", "--no-lock", code], stdout: "piped", stderr: "piped" })
          .output(),
    ),
  );
  const dirs = outputs.map((o) => {
    assert(o.success, new TextDecoder().decode(o.stderr));
    return new TextDecoder().decode(o.stdout).trim();
  });
  assertEquals(new Set(dirs).size, 4);
  assertEquals(await names(root), [1, 2, 3, 4].map((n) => `2026-11-28_run0${n}`));
});

Deno.test("run folder numbers grow past 99", async () => {
  const root = await Deno.makeTempDir();
  await Deno.mkdir(join(root, "2026-11-28_run99"));
  assertEquals(await createRunDir(root, DAY), join(root, "2026-11-28_run100"));
});

Deno.test("a results root that is a file is a clear error", async () => {
  const file = join(await Deno.makeTempDir(), "results");
  await Deno.writeTextFile(file, "");
  await assertRejects(() => createRunDir(file, DAY), UserError, "results_dir");
});

Deno.test("ResultsWriter rewrites results.json after each configuration and keeps the earlier ones", async () => {
  const dir = await createRunDir(await Deno.makeTempDir(), DAY);
  const full = syntheticResults();
  const w = new ResultsWriter(dir, full.config, full.environment);
  const read = async () => JSON.parse(await Deno.readTextFile(join(dir, RESULTS_FILE)));
  await w.start();
  let doc = await read();
  assertEquals(doc.status, "running");
  assertEquals(doc.run, "2026-11-28_run01");
  assertEquals(doc.configurations, {});
  assertEquals(validateResults(doc), []);

  await w.record(full.configurations.baseline!);
  await w.record(full.configurations.hydra_naive!);
  doc = await read();
  assertEquals(Object.keys(doc.configurations), ["baseline", "hydra_naive"]);
  assertEquals(doc.configurations.baseline, full.configurations.baseline);

  // a crash in the third configuration keeps the first two, and says where it failed
  await w.fail("hydra_poe", new Error("The GPU device was lost"));
  doc = await read();
  assertEquals(doc.status, "failed");
  assertEquals(doc.failure, { configuration: "hydra_poe", message: "The GPU device was lost" });
  assertEquals(Object.keys(doc.configurations), ["baseline", "hydra_naive"]);
  assertEquals(validateResults(doc), []);
  assertEquals(await names(dir), [RESULTS_FILE]); // no temp files left behind
});

Deno.test("ResultsWriter serialises concurrent writes; the file ends complete and valid", async () => {
  const dir = await createRunDir(await Deno.makeTempDir(), DAY);
  const full = syntheticResults();
  const w = new ResultsWriter(dir, full.config, full.environment);
  await Promise.all([
    w.start(),
    w.record(syntheticConfiguration("baseline")),
    w.record(syntheticConfiguration("hydra_naive")),
    w.record(syntheticConfiguration("hydra_poe")),
  ]);
  await w.complete();
  const doc = JSON.parse(await Deno.readTextFile(join(dir, RESULTS_FILE)));
  assertEquals(doc.status, "complete");
  assertEquals(Object.keys(doc.configurations).sort(), ["baseline", "hydra_naive", "hydra_poe"]);
  assertEquals(validateResults(doc), []);
  assertEquals(doc, w.document);
});

Deno.test("writeJsonAtomic replaces the file whole and reports an unwritable folder clearly", async () => {
  const dir = await Deno.makeTempDir();
  const path = join(dir, "x.json");
  await writeJsonAtomic(path, { a: 1 });
  await writeJsonAtomic(path, { a: 2, b: [1, 2] });
  assertEquals(JSON.parse(await Deno.readTextFile(path)), { a: 2, b: [1, 2] });
  assertEquals(await names(dir), ["x.json"]);
  const err = await assertRejects(() => writeJsonAtomic(join(dir, "missing", "x.json"), {}), UserError);
  assert(err.message.includes("Could not write"));
});
