/**
 * PEFT LoRA adapters: `adapter_config.json` + `adapter_model.safetensors`, read into per-projection low-rank deltas
 * for the merge W' = W + scale * (B @ A) done on the GPU at load.
 *
 * Follows PEFT's own rules, so a merge here equals PEFT's `merge_and_unload()`:
 * - module names are those of `Olmo2ForCausalLM.named_modules()` (`model.layers.N.self_attn.q_proj`, ...); tensor keys
 *   are `base_model.model.<module>.lora_A.weight` ([r, in]) and `...lora_B.weight` ([out, r]);
 * - `scale = lora_alpha / r`, or `lora_alpha / sqrt(r)` with `use_rslora`;
 * - `rank_pattern` / `alpha_pattern` override r / alpha per module: the first key (in file order) for which the
 *   regular expression `(.*\.)?(KEY)$` matches the whole module name wins ({@link peftPatternKey});
 * - `target_modules` selects modules as PEFT's `check_target_module_exists` does: a string is a regular expression
 *   that must match the whole module name, a list matches a module equal to an entry or ending in `.entry` (then
 *   filtered by `layers_to_transform` / `layers_pattern`), `"all-linear"` means every projection; `exclude_modules`
 *   removes modules the same way.
 * Stricter than PEFT where PEFT would silently run another model: a target that names no module of OLMo-2, a layer
 * past the base model, a targeted module without weights, weights for an untargeted module, DoRA, `fan_in_fan_out`,
 * LoRA biases and `modules_to_save` are errors (one sentence naming the file and key).
 * @module
 */

import { join } from "@std/path";
import { UserError } from "../common/errors.ts";
import type { ModelConfig } from "./config.ts";
import { SafetensorsFile } from "./safetensors.ts";

/** The projections a LoRA delta can apply to. */
export type LoraModule = "q" | "k" | "v" | "o" | "gate" | "up" | "down";

/** The projections, in the order deltas are listed. */
export const LORA_MODULES: readonly LoraModule[] = ["q", "k", "v", "o", "gate", "up", "down"];

const MODULE_PATH: Readonly<Record<LoraModule, string>> = {
  q: "self_attn.q_proj",
  k: "self_attn.k_proj",
  v: "self_attn.v_proj",
  o: "self_attn.o_proj",
  gate: "mlp.gate_proj",
  up: "mlp.up_proj",
  down: "mlp.down_proj",
};

/** The HF module name of projection `module` of block `layer` (as PEFT matches it). */
export function loraModuleName(layer: number, module: LoraModule): string {
  return `model.layers.${layer}.${MODULE_PATH[module]}`;
}

/** [out, in] of projection `module` in model `c`. */
export function projectionShape(c: ModelConfig, module: LoraModule): [number, number] {
  if (module === "gate" || module === "up") return [c.ffnHidden, c.dModel];
  if (module === "down") return [c.dModel, c.ffnHidden];
  return [c.dModel, c.dModel];
}

/** One projection's low-rank delta: W[out, in] += scale * B[out, rank] @ A[rank, in]. */
export interface LoraDelta {
  layer: number;
  module: LoraModule;
  /** Row-major [rank, in]. */
  A: Float32Array;
  /** Row-major [out, rank]. */
  B: Float32Array;
  rank: number;
  inFeatures: number;
  outFeatures: number;
  /** alpha / rank, or alpha / sqrt(rank) with rsLoRA. */
  scale: number;
  /** The names of lora_A and lora_B in the adapter's safetensors file (for messages). */
  keys?: { A: string; B: string };
}

/** A loaded adapter. */
export interface LoraAdapter {
  /** The adapter directory. */
  dir: string;
  /** The deltas, ordered by layer, then q, k, v, o, gate, up, down. */
  deltas: LoraDelta[];
}

/** The PEFT adapter_config.json fields this reader uses (others are ignored). */
export interface LoraAdapterConfig {
  peft_type?: string;
  r?: number;
  lora_alpha?: number;
  use_rslora?: boolean;
  use_dora?: boolean;
  fan_in_fan_out?: boolean;
  bias?: string;
  lora_bias?: boolean;
  target_modules?: string | string[] | null;
  exclude_modules?: string | string[] | null;
  layers_to_transform?: number | number[] | null;
  layers_pattern?: string | string[] | null;
  rank_pattern?: Record<string, number>;
  alpha_pattern?: Record<string, number>;
  modules_to_save?: string[] | null;
  layer_replication?: unknown;
  [key: string]: unknown;
}

/** PEFT's LoraConfig defaults for the fields an adapter_config.json may omit. */
const PEFT_DEFAULT_R = 8;
const PEFT_DEFAULT_ALPHA = 8;

function fail(message: string): never {
  throw new UserError(message);
}

/** `pattern` compiled as a JS RegExp, or one sentence naming `where` when it is not a valid expression. */
function compile(pattern: string, wrap: (p: string) => string, where: string): RegExp {
  try {
    return new RegExp(wrap(pattern));
  } catch {
    fail(`${where} ${JSON.stringify(pattern)} is not a valid regular expression; fix it.`);
  }
}

/**
 * PEFT's `get_pattern_key`: the first of `patternKeys` whose expression `(.*\.)?(KEY)$` matches `moduleName` from
 * its start, or undefined. `where` names the pattern dictionary in errors.
 */
export function peftPatternKey(
  patternKeys: readonly string[],
  moduleName: string,
  where = "pattern",
): string | undefined {
  return patternKeys.find((k) => compile(k, (p) => `^(.*\\.)?(${p})$`, where).test(moduleName));
}

/** Every module name of an OLMo-2 `Olmo2ForCausalLM` with `nLayers` blocks (as `named_modules()` lists them). */
function baseModuleNames(nLayers: number): string[] {
  const names = ["model", "model.embed_tokens", "model.layers", "model.norm", "model.rotary_emb", "lm_head"];
  for (let l = 0; l < nLayers; l++) {
    const p = `model.layers.${l}`;
    names.push(p, `${p}.self_attn`, `${p}.mlp`, `${p}.mlp.act_fn`, `${p}.self_attn.q_norm`, `${p}.self_attn.k_norm`);
    names.push(`${p}.post_attention_layernorm`, `${p}.post_feedforward_layernorm`);
    for (const m of LORA_MODULES) names.push(loraModuleName(l, m));
  }
  return names;
}

const asList = (v: string | string[]) => (typeof v === "string" ? [v] : v);

/** PEFT's `check_target_module_exists` for one module name (with `exclude_modules`). */
function isTargeted(cfg: LoraAdapterConfig, name: string, file: string): boolean {
  const ex = cfg.exclude_modules;
  if (ex !== undefined && ex !== null) {
    if (typeof ex === "string") {
      if (compile(ex, (p) => `^(?:${p})$`, `${file}: exclude_modules`).test(name)) return false;
    } else if (ex.some((e) => name === e || name.endsWith(`.${e}`))) return false;
  }
  const target = cfg.target_modules;
  if (target === undefined || target === null) return false;
  if (target === "all-linear") return LORA_MODULES.some((m) => name.endsWith(`.${MODULE_PATH[m].split(".")[1]}`));
  if (typeof target === "string") return compile(target, (p) => `^(?:${p})$`, `${file}: target_modules`).test(name);
  if (target.includes(name)) return true;
  if (!target.some((t) => name.endsWith(`.${t}`))) return false;
  const indexes = cfg.layers_to_transform;
  if (indexes === undefined || indexes === null || (Array.isArray(indexes) && indexes.length === 0)) return true;
  const patterns = cfg.layers_pattern === undefined || cfg.layers_pattern === null || cfg.layers_pattern.length === 0
    ? [null]
    : asList(cfg.layers_pattern);
  for (const pattern of patterns) {
    const re = pattern === null
      ? /^.*\.[^.]*\.(\d+)\./
      : compile(pattern, (p) => `^.*\\.${p}\\.(\\d+)\\.`, `${file}: layers_pattern`);
    const m = re.exec(name);
    if (m) {
      const layer = Number(m[1]);
      return typeof indexes === "number" ? layer === indexes : indexes.includes(layer);
    }
  }
  return false;
}

/** Checks the config fields and rejects what the suite cannot merge. */
function checkAdapterConfig(cfg: LoraAdapterConfig, file: string, base: ModelConfig): void {
  const bad = (key: string, why: string): never => fail(`${file}: ${key} ${why}.`);
  if (typeof cfg !== "object" || cfg === null || Array.isArray(cfg)) fail(`${file} is not a JSON object; replace it.`);
  if (cfg.peft_type !== undefined && cfg.peft_type !== "LORA") {
    bad("peft_type", `is ${JSON.stringify(cfg.peft_type)}, but this suite merges only LoRA ("LORA") adapters`);
  }
  if (cfg.use_dora === true) {
    bad("use_dora", "is true, but DoRA is a different merge this suite does not implement; use a plain LoRA adapter");
  }
  if (cfg.fan_in_fan_out === true) {
    bad("fan_in_fan_out", "is true, but OLMo-2's projections are [out, in] Linear layers; it must be false");
  }
  if (cfg.bias !== undefined && cfg.bias !== "none") {
    bad("bias", `is ${JSON.stringify(cfg.bias)}, but OLMo-2 has no biases and this suite merges none; use "none"`);
  }
  if (cfg.lora_bias === true) bad("lora_bias", "is true, but this suite merges no LoRA biases; it must be false");
  if (Array.isArray(cfg.modules_to_save) && cfg.modules_to_save.length > 0) {
    bad(
      "modules_to_save",
      `lists ${cfg.modules_to_save.join(", ")}, whose full weights this suite does not load; remove them`,
    );
  }
  if (cfg.layer_replication !== undefined && cfg.layer_replication !== null) {
    bad("layer_replication", "is set, but this suite runs the base model's layers as they are; remove it");
  }
  const r = cfg.r ?? PEFT_DEFAULT_R, alpha = cfg.lora_alpha ?? PEFT_DEFAULT_ALPHA;
  if (!Number.isSafeInteger(r) || r < 1) bad("r", `is ${JSON.stringify(r)}, but it must be a positive integer`);
  if (typeof alpha !== "number" || !Number.isFinite(alpha)) {
    bad("lora_alpha", `is ${JSON.stringify(alpha)}, but it must be a finite number`);
  }
  for (const key of ["rank_pattern", "alpha_pattern"] as const) {
    const p = cfg[key];
    if (p === undefined || p === null) continue;
    if (typeof p !== "object" || Array.isArray(p)) bad(key, "must be an object mapping module patterns to numbers");
    for (const [k, v] of Object.entries(p)) {
      const ok = key === "rank_pattern" ? Number.isSafeInteger(v) && v >= 1 : Number.isFinite(v);
      if (!ok) {
        bad(
          `${key}["${k}"]`,
          `is ${JSON.stringify(v)}, but it must be a ${key === "rank_pattern" ? "positive integer" : "number"}`,
        );
      }
    }
  }
  const indexes = cfg.layers_to_transform;
  if (indexes !== undefined && indexes !== null) {
    for (const l of typeof indexes === "number" ? [indexes] : indexes) {
      if (!Number.isSafeInteger(l) || l < 0 || l >= base.nLayers) {
        bad(
          "layers_to_transform",
          `names layer ${l}, but the base model has layers 0..${base.nLayers - 1}; use an adapter for this model`,
        );
      }
    }
  }
  const target = cfg.target_modules;
  if (target === undefined || target === null || target === "all-linear") return;
  const names = baseModuleNames(base.nLayers);
  const linear = new Set(
    LORA_MODULES.flatMap((m) => Array.from({ length: base.nLayers }, (_, l) => loraModuleName(l, m))),
  );
  const entries = typeof target === "string" ? [target] : target;
  if (!Array.isArray(entries) || entries.some((t) => typeof t !== "string")) {
    bad("target_modules", "must be a string or a list of strings");
  }
  for (const t of entries) {
    const matches = typeof target === "string"
      ? names.filter((n) => compile(t, (p) => `^(?:${p})$`, `${file}: target_modules`).test(n))
      : names.filter((n) => n === t || n.endsWith(`.${t}`));
    if (matches.length === 0) {
      bad(
        "target_modules",
        `names ${JSON.stringify(t)}, which is not a module of the OLMo-2 base model; use an adapter made for OLMo-2`,
      );
    }
    const unsupported = matches.find((n) => !linear.has(n));
    if (unsupported) {
      bad(
        "target_modules",
        `selects ${unsupported}, but this suite merges LoRA only into the q/k/v/o/gate/up/down projections; ` +
          "use an adapter of those projections",
      );
    }
  }
}

const KEY = /^(?:base_model\.model\.)?(.+)\.lora_(A|B)(?:\.[A-Za-z0-9_-]+)?\.weight$/;
const MODULE = /^model\.layers\.(\d+)\.(self_attn\.[qkvo]_proj|mlp\.(?:gate|up|down)_proj)$/;

/**
 * Loads the PEFT LoRA adapter in `dir` for base model `base`: validates the config and every tensor (names, layers,
 * ranks, shapes) and returns one delta per adapted projection, A and B as f32.
 */
export async function loadLoraAdapter(dir: string, base: ModelConfig): Promise<LoraAdapter> {
  const configPath = join(dir, "adapter_config.json");
  const weightsPath = join(dir, "adapter_model.safetensors");
  let text: string;
  try {
    text = await Deno.readTextFile(configPath);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      fail(`${configPath} is missing; point the adapter path at a PEFT adapter directory (adapter_config.json).`);
    }
    fail(`${configPath} cannot be read (${(e as Error).name}); check its permissions.`);
  }
  let cfg: LoraAdapterConfig;
  try {
    cfg = JSON.parse(text);
  } catch {
    fail(`${configPath} is not valid JSON; re-download or repair it.`);
  }
  checkAdapterConfig(cfg, configPath, base);
  const r = cfg.r ?? PEFT_DEFAULT_R, alpha = cfg.lora_alpha ?? PEFT_DEFAULT_ALPHA;
  const rankKeys = Object.keys(cfg.rank_pattern ?? {}), alphaKeys = Object.keys(cfg.alpha_pattern ?? {});

  const file = await SafetensorsFile.open(weightsPath).catch((e) => {
    if (e instanceof UserError && e.message.startsWith(`${weightsPath} does not exist`)) {
      fail(`${weightsPath} is missing; the adapter directory needs its weights next to adapter_config.json.`);
    }
    throw e;
  });
  try {
    const found = new Map<string, { layer: number; module: LoraModule; A?: string; B?: string }>();
    for (const key of file.names()) {
      const k = KEY.exec(key);
      if (!k) {
        fail(
          `${weightsPath}: tensor "${key}" is not a LoRA lora_A / lora_B weight, and this suite merges nothing else; ` +
            "export a plain LoRA adapter.",
        );
      }
      const m = MODULE.exec(k[1]);
      if (!m) {
        fail(
          `${weightsPath}: tensor "${key}" adapts ${k[1]}, which is not a q/k/v/o/gate/up/down projection of an ` +
            "OLMo-2 block; use an adapter made for OLMo-2.",
        );
      }
      const layer = Number(m[1]);
      if (layer >= base.nLayers) {
        fail(
          `${weightsPath}: tensor "${key}" adapts layer ${layer}, but the base model has layers ` +
            `0..${base.nLayers - 1}; use an adapter made for this base model.`,
        );
      }
      const module = LORA_MODULES.find((x) => MODULE_PATH[x] === m[2])!;
      const entry = found.get(k[1]) ?? { layer, module };
      if (entry[k[2] as "A" | "B"]) {
        fail(`${weightsPath}: ${k[1]} has two lora_${k[2]} tensors; re-export the adapter.`);
      }
      entry[k[2] as "A" | "B"] = key;
      found.set(k[1], entry);
    }
    if (cfg.target_modules !== undefined && cfg.target_modules !== null) {
      for (let l = 0; l < base.nLayers; l++) {
        for (const m of LORA_MODULES) {
          const name = loraModuleName(l, m);
          const targeted = isTargeted(cfg, name, configPath);
          if (targeted && !found.has(name)) {
            fail(`${configPath} targets ${name}, but ${weightsPath} has no weights for it; the adapter is incomplete.`);
          }
          if (!targeted && found.has(name)) {
            fail(
              `${weightsPath} has weights for ${name}, which target_modules in ${configPath} does not select (PEFT ` +
                "would ignore them); fix target_modules or re-export the adapter.",
            );
          }
        }
      }
    }
    const deltas: LoraDelta[] = [];
    for (const [name, e] of found) {
      if (!e.A || !e.B) {
        fail(`${weightsPath} has lora_${e.A ? "A" : "B"} but no lora_${e.A ? "B" : "A"} for ${name}; re-export it.`);
      }
      const rankKey = peftPatternKey(rankKeys, name, `${configPath}: rank_pattern key`);
      const alphaKey = peftPatternKey(alphaKeys, name, `${configPath}: alpha_pattern key`);
      const rank = rankKey === undefined ? r : cfg.rank_pattern![rankKey];
      const a = alphaKey === undefined ? alpha : cfg.alpha_pattern![alphaKey];
      const [outF, inF] = projectionShape(base, e.module);
      const rankFrom = rankKey === undefined ? "r" : `rank_pattern["${rankKey}"]`;
      for (const [key, want] of [[e.A, [rank, inF]], [e.B, [outF, rank]]] as const) {
        const shape = file.info(key).shape;
        if (shape.length !== 2 || shape[0] !== want[0] || shape[1] !== want[1]) {
          fail(
            `${weightsPath}: tensor "${key}" has shape [${shape.join(", ")}] but the base model and ${rankFrom} = ` +
              `${rank} in adapter_config.json need [${want.join(", ")}]; use an adapter made for this base model.`,
          );
        }
      }
      deltas.push({
        layer: e.layer,
        module: e.module,
        A: await file.readF32(e.A),
        B: await file.readF32(e.B),
        rank,
        inFeatures: inF,
        outFeatures: outF,
        scale: cfg.use_rslora ? a / Math.sqrt(rank) : a / rank,
        keys: { A: e.A, B: e.B },
      });
    }
    deltas.sort((x, y) => x.layer - y.layer || LORA_MODULES.indexOf(x.module) - LORA_MODULES.indexOf(y.module));
    return { dir, deltas };
  } finally {
    file.close();
  }
}

/** The dense delta scale * B @ A, row-major [out, in] (f64 accumulation): the reference for the merge kernel. */
export function loraDeltaDense(d: LoraDelta): Float32Array {
  const out = new Float32Array(d.outFeatures * d.inFeatures);
  for (let o = 0; o < d.outFeatures; o++) {
    for (let i = 0; i < d.inFeatures; i++) {
      let s = 0;
      for (let k = 0; k < d.rank; k++) s += d.B[o * d.rank + k] * d.A[k * d.inFeatures + i];
      out[o * d.inFeatures + i] = d.scale * s;
    }
  }
  return out;
}
