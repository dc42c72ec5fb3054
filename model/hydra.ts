/**
 * HydraTransformer: a shared trunk of `nLayers - headsDepth` OLMo-2 blocks, then `nHeads` heads of `headsDepth`
 * blocks, each with its own final norm and lm_head. A plain OLMo-2 (`Transformer`) is the same thing with one head of
 * depth 0, so baseline, naive Hydra and PoE all run the same code.
 *
 * Everything here is recorded at load time into arrays of dispatches (`Dispatch[]`) that read positions and token ids
 * from the GPU (`ctl`, `seq`), so generation code only replays them. The forward pass, top to bottom:
 *
 *   x = Embedding[seq[POS + m]]                                     (rows m = 0..M-1 at positions POS + m)
 *   for each trunk block, then each chosen head's blocks:           (#block, one kernel a line)
 *     qkv = x Wqkv^T;  q, K[pos], V[pos] = RoPE(QKNorm(qkv))
 *     x += RMSNorm_attn(Attention(q, K[0..pos], V[0..pos]) Wo^T)
 *     x += RMSNorm_ff(down(silu(x Wgate^T) * (x Wup^T)))
 *   logits[head] = RMSNorm_final(x) Wlm^T                           (last row only when lastTokenOnly)
 *
 * The same pass as plain TypeScript, to read rather than to run fast: `referenceLogits` in model/reference.ts.
 *
 * Fused decode (`HydraShape.fuse`, on by default for passes of up to `maxRows` rows): QK-norm + RoPE + the K/V append
 * run inside the attention split pass, and each post-norm + residual add inside the next matvec's prologue (`Residual`
 * below), so a block is 6 dispatches instead of 9 (ARCHITECTURE.md, "Fewer, fuller dispatches").
 *
 * Heads in lock-step (`HydraShape.overlapHeads`, on by default): the heads of a decode pass (hydra_naive's step, a PoE
 * verification) are independent chains of dispatches. `heads` records them op by op across the heads, each head's
 * block writing its own buffers (`Lane`, each written once a pass), with one read barrier after each op
 * (kernels/control/read_barrier.ts), so that the heads' dispatches of one op run together on the GPU instead of one
 * at a time.
 * @module
 */

import { attentionDecode, createAttentionDecodeScratch, DECODE_MAX_ROWS } from "../kernels/attention/decode.ts";
import { prefillAttention, prefillAttentionKernel } from "../kernels/attention/prefill_tensor.ts";
import { qkNormRope, ropeTable } from "../kernels/attention/qk_norm_rope.ts";
import { CTL_SLOTS } from "../kernels/control/ctl.ts";
import { embedding } from "../kernels/embed/embedding.ts";
import { linear, type LinearPlan, linearPlan, type PrefillMath } from "../kernels/matmul/linear.ts";
import {
  Epilogue,
  MATVEC_MAX_ROWS,
  matvecGroupRows,
  type PostNorm,
  type QkStats,
  qkStatsLayout,
} from "../kernels/matmul/matvec.ts";
import { copyVec4 } from "../kernels/memory/copy.ts";
import { rmsnorm } from "../kernels/norm/rmsnorm.ts";
import type { HalfRows } from "../kernels/matmul/row_scale.ts";
import { readBarrier } from "../kernels/control/read_barrier.ts";
import { prefetch } from "../kernels/memory/prefetch.ts";
import { numberChoiceFromEnv } from "../common/env.ts";
import { type KvDtype, kvElementBytes } from "../kernels/attention/kv_cache.ts";
import { type BufferSlice, type Dispatch, DispatchCache, type Gpu } from "../kernels/runtime.ts";
import { UserError } from "../common/errors.ts";
import { range } from "../kernels/codegen.ts";
import type { ModelConfig } from "./config.ts";
import { type BlockWeights, destroyWeights, type HydraWeights, weightsBytes } from "./weights.ts";

/** Shapes a HydraTransformer is built for (buffers are sized once, at load). */
export interface HydraShape {
  /** KV cache length: the longest sequence (prompt + generated + draft slack) any call will reach. */
  maxPos: number;
  /** Most rows one forward pass processes (the longest prompt). */
  maxRows: number;
  /** Most rows that get logits in one pass (1, or gamma for speculative verification); at most 16. */
  maxLogitRows?: number;
  /** Element type of the K/V caches (default bf16, as the PyTorch peers keep them; kernels/attention/kv_cache.ts). */
  kvDtype?: KvDtype;
  /** Kernel fusion at decode (default `FUSE_DEFAULTS`); `false`: none, every block its 9 dispatches. */
  fuse?: Partial<FuseOptions> | false;
  /**
   * The prefill GEMM's arithmetic where no tensor-core GEMM runs (default f32; f16: the f16-multiply GEMM, needs
   * `shader-f16`; kernels/matmul/linear.ts has the precedence).
   */
  prefillMath?: PrefillMath;
  /**
   * Record the heads of a decode pass in lock-step (`HydraTransformer.heads`; default true, or `HYDRA_OVERLAP_HEADS`
   * 0 / 1 for an A/B on the GPU). False: one head after the other, as the prefill always does.
   */
  overlapHeads?: boolean;
  /**
   * Most rows a lock-step pass takes (default LOCKSTEP_DEFAULT_ROWS, at least maxLogitRows: decode steps and
   * verifications). Short prefills (a PoE prompt, a 128-token TTFT) then run their heads in lock-step too, at
   * (8 d + ffn) * 4 bytes a row of each head block's buffers; `HYDRA_LOCKSTEP_ROWS` overrides it for an A/B on the GPU.
   */
  lockstepRows?: number;
  /**
   * A prefill that asks for the last row's logits only (`lastTokenOnly`) runs each tower's last block (the trunk's
   * where the heads have no blocks, else each head's) for the last row only, past its K/V append (`#lastRowOps`;
   * default true, or `HYDRA_PREFILL_TAIL` 0 / 1 for an A/B on the GPU).
   */
  prefillTail?: boolean;
  /**
   * A prefill's tensor attention writes the o product's input as its f16 rows and exponents (what o's row-scale
   * pre-pass would write, kernels/matmul/row_scale.ts `HalfRows`), each row scaled by a bound on its magnitude, the
   * largest |v| of the keys it attends (qk_norm_rope's `vmax`; prefill_tensor.ts `halfRows`): one dispatch a block
   * fewer where the tensor attention and o's tensor-core GEMM run (Dawn). Default true; `HYDRA_PREFILL_ATT_ROWS` 0 / 1
   * overrides it for an A/B on the GPU.
   */
  prefillAttentionRows?: boolean;
  /**
   * Bytes of the next product's weights prefetched into L2 beside each latency-bound dispatch of a decode pass (the
   * attention's split pass and merge, the post-norms; kernels/memory/prefetch.ts), or 0 for none. Default
   * `PREFETCH_DEFAULT_BYTES`; `HYDRA_PREFETCH_MB` overrides it for an A/B on the GPU.
   */
  prefetch?: number;
}

/** `HYDRA_PREFETCH_MB=<MB>` overrides `HydraShape.prefetch`, so that the GPU can A/B it inside a step. */
export const PREFETCH_ENV = "HYDRA_PREFETCH_MB";

/**
 * The default prefetch beside a latency-bound dispatch: 4 MiB (about 1 us of the bus). Measured on the H200 (`deno
 * task profile --contexts 256[,4000]`, docs/PERF.md): the 7B step 5.029 / 5.661 ms at 256 / 4,000 keys without, 4.975 /
 * 5.622 with 4 MiB, 4.981 / 5.602 with 8; the 1B step 1.274 ms without, 1.263 with 4 MiB, 1.276 with 8. 16 and 32 MiB
 * were slower (7B 5.064, 5.206 ms: the prefetch outlasts the small kernel and the next barrier waits for it), and so was
 * every size recorded right after the product before instead (8 MiB: 5.196 ms; it takes the bus from that product).
 */
export const PREFETCH_DEFAULT_BYTES = 4 * 2 ** 20;

/** `HYDRA_OVERLAP_HEADS=0|1` overrides `HydraShape.overlapHeads`, so that the GPU can A/B it inside a step. */
export const OVERLAP_HEADS_ENV = "HYDRA_OVERLAP_HEADS";

/**
 * The default `lockstepRows`: prefills of up to 128 rows run their heads in lock-step. Measured on the H200 (7B, 5 heads
 * x 3 blocks, docs/PERF.md session U): the PoE prompt's TTFT 25.97 -> 25.63 ms, hydra_naive's 128-token TTFT 89.8 ->
 * 89.6 ms, for 336 MB of head buffers (7B).
 */
export const LOCKSTEP_DEFAULT_ROWS = 128;

/** `HYDRA_LOCKSTEP_ROWS=<rows>` overrides `HydraShape.lockstepRows`, so that the GPU can A/B it (e.g. on a TTFT). */
export const LOCKSTEP_ROWS_ENV = "HYDRA_LOCKSTEP_ROWS";

/** `HYDRA_PREFILL_TAIL=0|1` overrides `HydraShape.prefillTail`, so that the GPU can A/B it (on a TTFT). */
export const PREFILL_TAIL_ENV = "HYDRA_PREFILL_TAIL";

/** `HYDRA_PREFILL_ATT_ROWS=0|1` overrides `HydraShape.prefillAttentionRows`, so that the GPU can A/B it (on a TTFT). */
export const PREFILL_ATT_ROWS_ENV = "HYDRA_PREFILL_ATT_ROWS";

/**
 * The activations of one head's block in lock-step passes, [rows, width] f32 each, every one written once a pass (a
 * buffer written twice gets a barrier of its own; kernels/control/read_barrier.ts): the QKV product, q (unfused
 * attention), the attention scratch and output, the o product, the residual after attention (`mid`), the SwiGLU
 * product, the down product and the block's output residual (`out`).
 */
interface LaneBlock {
  qkv: GPUBuffer;
  q: GPUBuffer;
  scratch: GPUBuffer | undefined;
  att: GPUBuffer;
  proj: GPUBuffer;
  mid: GPUBuffer;
  ffn: GPUBuffer;
  down: GPUBuffer;
  out: GPUBuffer;
}

/** One head's buffers in lock-step passes: its blocks', and its final norm's output. */
interface Lane {
  blocks: LaneBlock[];
  normed: GPUBuffer;
}

/** One head's pass in a lock-step recording (`HydraTransformer.lockstep`), as `head` takes it. */
export interface HeadPass {
  head: number;
  rows: number;
  /** Logits of the last row only, or of every row. */
  lastTokenOnly: boolean;
  /** Where the trunk output is: `h` (default) or `trunkStates`. */
  input?: "h" | "trunkStates";
  /** The logits slot (default: the head). */
  slot?: number;
  /** Rows start at ctl[POS] - posBack (default 0): a verification beside the round's last draft step. */
  posBack?: number;
}

/** One op of a head in a lock-step pass: its dispatches, and the buffers they write that later ops read. */
interface LaneOp {
  dispatches: Dispatch[];
  writes: GPUBuffer[];
}

/** `dispatches` as an op writing `writes`, or no op where there are none (a fused-away kernel). */
function laneOp(dispatches: Dispatch[], ...writes: GPUBuffer[]): LaneOp[] {
  return dispatches.length > 0 ? [{ dispatches, writes }] : [];
}

/**
 * An attention's dispatches as ops: the split pass (writing `scratch`, and the K/V caches in `appends` where it appends
 * them) then the merge (writing `att`), or its one dispatch.
 */
function attentionOps(
  attention: Dispatch[],
  scratch: GPUBuffer | undefined,
  att: GPUBuffer,
  appends: GPUBuffer[],
): LaneOp[] {
  return attention.length === 2
    ? [...laneOp([attention[0]], ...(scratch ? [scratch] : []), ...appends), ...laneOp([attention[1]], att)]
    : laneOp(attention, att, ...appends);
}

/** Which fusions a decode pass uses (each one its own switch, so the GPU can A/B them). */
export interface FuseOptions {
  /** QK-norm + RoPE + K/V append inside the decode attention's split pass (kernels/attention/decode.ts). */
  attention: boolean;
  /** Each post-norm + residual add inside the prologue of the next matvec (kernels/matmul/matvec.ts). */
  postNorm: boolean;
  /**
   * With `attention`: the QKV matvec writes partial sums of squares of q and k per row group (`MatvecArgs.qkStats`)
   * and the fused attention adds those (a few hundred floats a row at 7B) instead of every workgroup re-reading the
   * whole width D of q and k for the QK-norm statistics (2 x 16 KB a workgroup at 7B, ~512 workgroups at 4,095 keys).
   */
  qkStats: boolean;
  /**
   * Most rows a fused pass takes (1..16); passes over more rows (PoE verification of larger gammas, prefill) run the
   * unfused kernels. 1 until the multi-row cost is measured: every attention workgroup recomputes the QK-norm
   * statistics of all M rows, and every matvec workgroup the post-norm's of all M rows.
   */
  maxRows: number;
  /**
   * The post-norms of passes over more than MATVEC_MAX_ROWS rows (prefill: GEMMs) sum their product's split-K
   * partials and write the next product's f16 rows (kernels/norm/rmsnorm.ts's fusions), in place of a split_k_reduce
   * and a row_scale_half dispatch each (`linear`'s `leavePartials` and `halfRowsWritten`); likewise qk_norm_rope sums
   * the QKV product's partials where it is split (`qkNormRope`'s `splitK`).
   */
  prefillNorm: boolean;
}

/**
 * The fusion a model gets by default: the attention's, not the post-norm's. Measured on the H200 (2026-11-30,
 * `deno task profile --size 7b --contexts 256`, docs/PERF.md): the fused attention pass took 617 us of the step against
 * 542 + 266 us for attention + QK-norm/RoPE apart (-190 us), but the post-norm prologue made qkv and gate_up slower by
 * 1,542 us in all (staged x in workgroup memory and a grid of 528 workgroups cut the occupancy these bandwidth-bound
 * products need) against the 416 us of RMSNorm dispatches it removes: step 6.75 ms fused, 5.74 ms unfused.
 * `qkStats` is off until the H200 measures it (`deno task profile --fuse attention-stats` against `--fuse attention`
 * at 256 and 4,095 keys): at 4,095 keys the fused attention without it made the step ~190 us slower than unfused.
 */
export const FUSE_DEFAULTS: FuseOptions = {
  attention: true,
  postNorm: false,
  qkStats: false,
  maxRows: 1,
  prefillNorm: true,
};

/**
 * A product's input: a buffer, or a residual whose pending post-norm the matvec adds first (`PostNorm`), or whose f16
 * rows the post-norm before already wrote for the tensor-core GEMM (`halfRowsWritten`).
 */
interface LinearInput {
  x: GPUBuffer;
  postNorm?: PostNorm;
  qkStats?: QkStats;
  halfRowsWritten?: HalfRows;
}

/** A post-norm's input: a product's output, or its split-K partials (`splits` of them) that the norm sums itself. */
interface NormInput {
  x: GPUBuffer;
  splits: number;
}

/**
 * The residual stream `x` of a run of blocks. Unfused, it stays in one buffer and `add` records the RMSNorm dispatch
 * that adds a sublayer's post-norm in place. Fused, `add` records nothing: the post-norm stays pending until the next
 * `read`, whose matvec adds it in its prologue and stores the new residual to the buffer of `pool` that it does not
 * read (a dispatch never writes a buffer it reads); `end` adds a last pending post-norm in place with the RMSNorm
 * kernel, where the run of blocks ends. A run that starts in a pool buffer ends in the other one (each block moves it
 * twice when it starts pending, once otherwise: see `trunk`). Unfused with a `source` (a head's run on the trunk's
 * output, which the next head reads too): the run reads `source` until its first post-norm, which stores source +
 * RMSNorm(proj) * w to `start` out of place, so no dispatch copies the input first.
 */
class Residual {
  #at: GPUBuffer;
  #pending?: { proj: GPUBuffer; weight: GPUBuffer };
  #source?: GPUBuffer;
  /** Where the last post-norm also wrote the f16 rows the next product reads (`add`'s `half`). */
  #halfWritten?: HalfRows;

  constructor(
    start: GPUBuffer,
    readonly pool: readonly [GPUBuffer, GPUBuffer],
    readonly fused: boolean,
    readonly eps: number,
    /**
     * out += RMSNorm(proj) * weight, or out = from + RMSNorm(proj) * weight; with `half`, out's f16 rows for the next
     * product too.
     */
    readonly addNorm: (
      proj: NormInput,
      weight: GPUBuffer,
      out: GPUBuffer,
      from?: GPUBuffer,
      half?: HalfRows,
    ) => Dispatch,
    source?: GPUBuffer,
  ) {
    if (source && fused) throw new Error("Residual: a source is for unfused runs (fused ones read their input)");
    this.#at = start;
    this.#source = source;
  }

  /** Where the residual is now (with `end` recorded: the run's output). */
  get buffer(): GPUBuffer {
    return this.#source ?? this.#at;
  }

  /** The input of the next matvec: the residual, with the pending post-norm (if any) as its prologue. */
  read(): LinearInput {
    const p = this.#pending;
    const half = this.#halfWritten;
    if (half) {
      this.#halfWritten = undefined;
      return { x: this.buffer, halfRowsWritten: half };
    }
    if (!p) return { x: this.buffer };
    const out = this.#at === this.pool[0] ? this.pool[1] : this.pool[0];
    const input = { x: this.#at, postNorm: { proj: p.proj, weight: p.weight, out, eps: this.eps } };
    this.#at = out;
    this.#pending = undefined;
    return input;
  }

  /**
   * x += RMSNorm(proj) * weight: the dispatch (unfused) or nothing (fused: the next `read` adds it). `proj` may be a
   * product's split-K partials, which the norm sums; with `half` (unfused) the norm also writes the new residual's
   * f16 rows there, and the next `read` says so.
   */
  add(proj: GPUBuffer | NormInput, weight: GPUBuffer, half?: HalfRows): Dispatch[] {
    const input = "splits" in proj ? proj : { x: proj, splits: 1 };
    if (!this.fused) {
      const from = this.#source;
      this.#source = undefined;
      this.#halfWritten = half;
      return [this.addNorm(input, weight, this.#at, from, half)];
    }
    if (input.splits !== 1 || half) {
      throw new Error("Residual: a pending post-norm sums no partials, writes no f16 rows");
    }
    if (this.#pending) throw new Error("Residual: two post-norms pending");
    this.#pending = { proj: input.x, weight };
    return [];
  }

  /**
   * For a last block that stores the last row only (`HydraTransformer`'s `#lastRowOps`, unfused runs): the buffer it
   * reads that row of the residual from (the run's input until a first post-norm) and the one it stores the new row
   * to, which is the run's output after it.
   */
  tail(): { from: GPUBuffer; to: GPUBuffer } {
    if (this.fused || this.#pending) throw new Error("Residual: a last-row block runs unfused");
    const from = this.buffer;
    this.#source = undefined;
    return { from, to: this.#at };
  }

  /** The end of the run: a pending post-norm added in place (its buffer is one of `pool`, never the run's input). */
  end(): Dispatch[] {
    const p = this.#pending;
    if (!p) return [];
    if (!this.pool.includes(this.#at)) throw new Error("Residual: a pending post-norm on a buffer the run only reads");
    this.#pending = undefined;
    return [this.addNorm({ x: p.proj, splits: 1 }, p.weight, this.#at)];
  }
}

/** One layer's K and V caches, [maxPos, d] each of `kvDtype`, position-major. */
interface KvLayer {
  k: GPUBuffer;
  v: GPUBuffer;
}

/** Options of one recorded forward pass. */
export interface ForwardOptions {
  /** Heads to run after the trunk (each into its own logits slice). */
  heads: readonly number[];
  /** Logits of the last row only (prefill), or of every row (decode, verification). */
  lastTokenOnly: boolean;
  /** Build every kernel gated by ctl[ACTIVE] (PoE rounds). */
  gated?: boolean;
}

/** A Hydra (or, with one head of depth 0, a plain OLMo-2) on the GPU. */
export class HydraTransformer {
  readonly config: ModelConfig;
  readonly nHeads: number;
  readonly headsDepth: number;
  readonly maxPos: number;
  readonly maxRows: number;
  readonly maxLogitRows: number;
  readonly kvDtype: KvDtype;
  readonly fuse: FuseOptions | false;
  readonly prefillMath: PrefillMath;
  /** Control block (kernels/control/ctl.ts). */
  readonly ctl: GPUBuffer;
  /** Token ids by position, u32 [maxPos + 1]. */
  readonly seq: GPUBuffer;
  /** Logits, f32: a pass over M logit rows stores head h's at [h, M, paddedVocab] (see `logitsSlice`). */
  readonly logits: GPUBuffer;
  /** Trunk outputs of up to maxLogitRows draft steps, f32 [maxLogitRows, d] (PoE verification input). */
  readonly trunkStates: GPUBuffer;
  readonly #kvTrunk: KvLayer[];
  readonly #kvHeads: KvLayer[][];
  readonly #act: Record<"h" | "hHead" | "alt" | "qkv" | "q" | "att" | "proj" | "ffn" | "normed" | "vmax", GPUBuffer>;
  readonly #rope: GPUBuffer;
  readonly #attnScratch: GPUBuffer | undefined;
  /** The QKV matvec's partial sums of squares of q and k (`FuseOptions.qkStats`), sized for fused passes' rows. */
  readonly #qkPartials: GPUBuffer | undefined;
  /** Each head's buffers for lock-step passes of up to `lockstepRows` rows (`heads`); none for one head. */
  readonly #lanes: Lane[] | undefined;
  /** Most rows a lock-step pass takes (`HydraShape.lockstepRows`, at least maxLogitRows, at most the passes' rows). */
  readonly lockstepRows: number;
  /** Whether a prefill that asks for the last row's logits only runs each tower's last block for that row alone. */
  readonly prefillTail: boolean;
  /** Whether a prefill's tensor attention writes o's f16 rows (`HydraShape.prefillAttentionRows`). */
  readonly prefillAttentionRows: boolean;
  /** Bytes prefetched beside each latency-bound dispatch of a decode pass (`HydraShape.prefetch`). */
  readonly prefetchBytes: number;
  readonly #own: GPUBuffer[] = [];
  readonly #cache = new DispatchCache();

  constructor(readonly gpu: Gpu, readonly weights: HydraWeights, shape: HydraShape) {
    const c = weights.config;
    this.config = c;
    this.nHeads = weights.heads.length;
    this.headsDepth = weights.heads[0]?.blocks.length ?? 0;
    this.maxPos = shape.maxPos;
    this.maxRows = shape.maxRows;
    this.maxLogitRows = shape.maxLogitRows ?? 1;
    this.kvDtype = shape.kvDtype ?? "bf16";
    this.prefillMath = shape.prefillMath ?? "f32";
    if (this.prefillMath === "f16" && !gpu.has("shader-f16")) {
      throw new UserError(
        "prefill_math f16 needs the shader-f16 feature, which this WebGPU device lacks; use prefill_math f32 " +
          "(--prefill-math f32).",
      );
    }
    this.fuse = shape.fuse === false ? false : { ...FUSE_DEFAULTS, ...shape.fuse };
    if (this.fuse && !(this.fuse.maxRows >= 1 && this.fuse.maxRows <= DECODE_MAX_ROWS)) {
      throw new Error(`fuse.maxRows ${this.fuse.maxRows} is outside 1..${DECODE_MAX_ROWS}`);
    }
    if (this.maxPos > c.maxContext) {
      throw new UserError(
        `A KV cache of ${this.maxPos} positions exceeds the model's context of ${c.maxContext}; shorten prompt_length, gen_length or poe_max_new_tokens.`,
      );
    }
    if (this.maxLogitRows > DECODE_MAX_ROWS) throw new Error(`maxLogitRows ${this.maxLogitRows} > ${DECODE_MAX_ROWS}`);
    const d = c.dModel, R = Math.max(this.maxRows, this.maxLogitRows);
    const buf = (label: string, bytes: number) => {
      const b = gpu.buffer(label, bytes);
      this.#own.push(b);
      return b;
    };
    this.ctl = buf("ctl", CTL_SLOTS * 4);
    this.seq = buf("seq", (this.maxPos + 1) * 4);
    this.logits = buf("logits", this.nHeads * this.maxLogitRows * c.paddedVocab * 4);
    this.trunkStates = buf("trunk states", this.maxLogitRows * d * 4);
    const kvRowBytes = d * kvElementBytes(this.kvDtype);
    const kv = (label: string): KvLayer => ({
      k: buf(`${label}.k`, this.maxPos * kvRowBytes),
      v: buf(`${label}.v`, this.maxPos * kvRowBytes),
    });
    this.#kvTrunk = weights.trunk.map((_, i) => kv(`kv trunk.${i}`));
    this.#kvHeads = weights.heads.map((h, hi) => h.blocks.map((_, j) => kv(`kv head${hi}.${j}`)));
    this.#act = {
      h: buf("h", R * d * 4),
      hHead: buf("h head", R * d * 4),
      alt: buf("h alt", Math.min(R, DECODE_MAX_ROWS) * d * 4), // fused passes' second residual buffer
      qkv: buf("qkv", R * 3 * d * 4),
      q: buf("q", R * d * 4),
      att: buf("att", R * d * 4),
      proj: buf("proj", R * d * 4),
      ffn: buf("ffn", R * c.ffnHidden * 4),
      normed: buf("normed", R * d * 4),
      vmax: buf("v max", R * 4), // each row's largest |v| (qk_norm_rope's, for the tensor attention's f16 rows)
    };
    this.#rope = gpu.upload("rope table", ropeTable(this.maxPos, c.headDim, c.ropeTheta));
    this.#own.push(this.#rope);
    const scratch = createAttentionDecodeScratch(gpu, {
      rows: DECODE_MAX_ROWS,
      nHeads: c.nHeads,
      headDim: c.headDim,
      maxPos: this.maxPos,
    });
    if (scratch) this.#own.push(scratch);
    this.#attnScratch = scratch;
    if (this.fuse && this.fuse.attention && this.fuse.qkStats) {
      let bytes = 0;
      for (let rows = 1; rows <= this.fuse.maxRows; rows++) {
        bytes = Math.max(bytes, rows * qkStatsLayout(d, this.#qkvGroupRows(rows)).bytesPerRow);
      }
      this.#qkPartials = buf("qk partials", bytes);
    }
    const prefetchMb = numberChoiceFromEnv(PREFETCH_ENV, [0, 2, 4, 8, 12, 16, 24, 32, 48, 64], "a prefetch size in MB");
    this.prefetchBytes = prefetchMb !== undefined ? prefetchMb * 2 ** 20 : shape.prefetch ?? PREFETCH_DEFAULT_BYTES;
    if (!(Number.isInteger(this.prefetchBytes) && this.prefetchBytes >= 0 && this.prefetchBytes % 4 === 0)) {
      throw new Error(`prefetch ${this.prefetchBytes} is not a whole number of 4-byte words`);
    }
    const tail = numberChoiceFromEnv(PREFILL_TAIL_ENV, [0, 1], "a switch");
    this.prefillTail = tail === undefined ? shape.prefillTail ?? true : tail === 1;
    const attRows = numberChoiceFromEnv(PREFILL_ATT_ROWS_ENV, [0, 1], "a switch");
    this.prefillAttentionRows = attRows === undefined ? shape.prefillAttentionRows ?? true : attRows === 1;
    const overlap = numberChoiceFromEnv(OVERLAP_HEADS_ENV, [0, 1], "a switch");
    const lanes = overlap === undefined ? shape.overlapHeads ?? true : overlap === 1;
    const lockstepEnv = numberChoiceFromEnv(LOCKSTEP_ROWS_ENV, [1, 2, 4, 8, 16, 32, 64, 128, 256], "a row count");
    const lockstep = lockstepEnv ?? shape.lockstepRows ?? LOCKSTEP_DEFAULT_ROWS;
    if (!(Number.isInteger(lockstep) && lockstep >= 1)) throw new Error(`lockstepRows ${lockstep} is not a row count`);
    this.lockstepRows = Math.min(R, Math.max(this.maxLogitRows, lockstep));
    if (lanes && this.nHeads > 1) {
      const L = this.lockstepRows, F = c.ffnHidden;
      this.#lanes = weights.heads.map((head, h) => ({
        blocks: head.blocks.map((_, j) => {
          const at = (name: string, width: number) => buf(`head${h}.${j} ${name}`, L * width * 4);
          const scratch = createAttentionDecodeScratch(gpu, {
            rows: Math.min(L, DECODE_MAX_ROWS), // above, the prefill attention, which needs none
            nHeads: c.nHeads,
            headDim: c.headDim,
            maxPos: this.maxPos,
          });
          if (scratch) this.#own.push(scratch);
          return {
            qkv: at("qkv", 3 * d),
            q: at("q", d),
            scratch,
            att: at("att", d),
            proj: at("proj", d),
            mid: at("mid", d),
            ffn: at("ffn", F),
            down: at("down", d),
            out: at("out", d),
          };
        }),
        normed: buf(`head${h} normed`, L * d * 4),
      }));
    }
  }

  /** Outputs per row group of the QKV matvec over `rows` rows (the layout of its QK statistics). */
  #qkvGroupRows(rows: number): number {
    return matvecGroupRows({ rows, k: this.config.dModel, n: 3 * this.config.dModel });
  }

  /** Bytes of weights on the GPU. */
  get weightBytes(): number {
    return weightsBytes(this.weights);
  }

  /** Bytes of one cached K or V element. */
  get kvBytes(): number {
    return kvElementBytes(this.kvDtype);
  }

  /** Bytes of everything else this model allocated (KV caches, activations, logits). */
  get stateBytes(): number {
    return this.#own.reduce((s, b) => s + b.size, 0);
  }

  /** Where a pass over `rows` logit rows stores head `h`'s logits, f32 [rows, paddedVocab]. */
  logitsSlice(h: number, rows: number): BufferSlice {
    const size = rows * this.config.paddedVocab * 4;
    return { buffer: this.logits, offset: h * size, size };
  }

  /** Logits of heads first..first+count-1 of a pass over `rows` rows, contiguous [count, rows, paddedVocab]. */
  logitsSlices(first: number, count: number, rows: number): BufferSlice {
    const size = rows * this.config.paddedVocab * 4;
    return { buffer: this.logits, offset: first * size, size: count * size };
  }

  /**
   * The trunk over `rows` positions from ctl[POS]: embedding then the trunk blocks; its output is in `h`. With
   * `lastRowOnly` (the caller reads only the last row of `h`) a prefill's last block stops at its K/V append for all
   * rows but its last (`#lastRowBlock`, where `#lastRowTail`): the other rows of `h` then hold the block before's output.
   */
  trunk(rows: number, gated = false, lastRowOnly = false): Dispatch[] {
    const tail = lastRowOnly && this.weights.trunk.length > 0 && this.#lastRowTail(rows, true);
    return this.#cache.get(`trunk ${rows} ${gated} ${tail}`, () => {
      const k = this.#bind(rows, gated), a = this.#act, blocks = this.weights.trunk;
      // Fused, the residual ends pending on the pool buffer it did not start in: start in alt to end in h.
      const x = k.residual(k.fused.postNorm && blocks.length > 0 ? a.alt : a.h, [a.h, a.alt]);
      const whole = tail ? blocks.slice(0, -1) : blocks;
      const last = blocks.length - 1;
      const pass = [
        k.embed(x.buffer),
        ...whole.flatMap((b, i) => this.#block(b, this.#kvTrunk[i], x, rows, gated, blocks[i + 1])),
        ...(tail ? this.#lastRowBlock(blocks[last], this.#kvTrunk[last], x, rows, gated) : []),
        ...x.end(),
      ];
      if (x.buffer !== a.h) throw new Error("trunk: the residual did not end in h");
      return pass;
    });
  }

  /**
   * Head `h` over `rows` rows whose trunk output is in `input` (`h` after `trunk`, or `trunkStates`): its blocks on a
   * copy of the input, its final norm and lm_head into `logitsSlice(slot, lastTokenOnly ? 1 : rows)` (slot = h unless
   * given: PoE puts the draft head's logits in slot 0 and the verifiers' in 1.., contiguous for the jury).
   */
  head(
    h: number,
    rows: number,
    o: { lastTokenOnly: boolean; input?: "h" | "trunkStates"; gated?: boolean; slot?: number; posBack?: number },
  ): Dispatch[] {
    const input = o.input ?? "h", gated = o.gated ?? false, slot = o.slot ?? h, back = o.posBack ?? 0;
    return this.#cache.get(`head ${h} ${rows} ${o.lastTokenOnly} ${input} ${gated} ${slot} ${back}`, () => {
      const c = this.config, a = this.#act, head = this.weights.heads[h];
      const outRows = this.#logitRows(rows, o.lastTokenOnly);
      const all = this.#bind(rows, gated, undefined, back), out = this.#bind(outRows, gated);
      const src = input === "h" ? a.h : this.trunkStates;
      // The input stays for the next head. Unfused, the blocks read it until the first post-norm stores input + norm
      // to hHead, then add in place there; fused, the first matvec reads it and the residual moves to hHead and alt.
      const x = all.fused.postNorm ? all.residual(src, [a.hHead, a.alt]) : all.residual(a.hHead, [a.hHead, a.alt], src);
      // only the last row's logits: the last block for that row alone (`#lastRowBlock`)
      const tail = head.blocks.length > 0 && this.#lastRowTail(rows, o.lastTokenOnly, back);
      const last = head.blocks.length - 1;
      return [
        ...head.blocks.flatMap((b, j) =>
          tail && j === last
            ? this.#lastRowBlock(b, this.#kvHeads[h][j], x, rows, gated)
            : this.#block(b, this.#kvHeads[h][j], x, rows, gated, head.blocks[j + 1], back)
        ),
        ...x.end(),
        out.norm(x.buffer, head.norm, a.normed, { xRowOffset: rows - outRows }),
        ...out.linear(head.lmHead, a.normed, this.logitsSlice(slot, outRows), c.dModel, c.paddedVocab),
      ];
    });
  }

  /**
   * `residual_forward`: the trunk once, then each of `o.heads`, over `rows` positions from ctl[POS]. Where only the last
   * row's logits are asked for and no head has blocks of its own (the baseline's prefill), only the trunk's last row is
   * read: its last block runs for that row alone (`trunk`'s `lastRowOnly`, `HydraShape.prefillTail`).
   */
  residualForward(rows: number, o: ForwardOptions): Dispatch[] {
    const lastRowOnly = o.lastTokenOnly && o.heads.every((h) => this.weights.heads[h].blocks.length === 0);
    return [
      ...this.trunk(rows, o.gated, lastRowOnly),
      ...this.heads(o.heads, rows, { lastTokenOnly: o.lastTokenOnly, gated: o.gated }),
    ];
  }

  /**
   * Heads `hs` over `rows` rows, each as `head` records it (into `logitsSlice(slots[i])`, slots = hs unless given),
   * in lock-step where it can be: two heads or more, at most `lockstepRows` rows (by default a decode step or a
   * verification, not a prefill), without the post-norm and QK-statistics fusions (which share buffers between heads).
   * Op by op across the heads, each op's dispatches followed by one read barrier over what they wrote: the heads run
   * together.
   */
  heads(
    hs: readonly number[],
    rows: number,
    o: { lastTokenOnly: boolean; input?: "h" | "trunkStates"; gated?: boolean; slots?: readonly number[] },
  ): Dispatch[] {
    const slots = o.slots ?? hs;
    if (slots.length !== hs.length) throw new Error(`heads(): ${hs.length} heads, ${slots.length} slots`);
    const { lastTokenOnly, input, gated } = o;
    return this.lockstep(hs.map((head, i) => ({ head, rows, lastTokenOnly, input, slot: slots[i] })), gated);
  }

  /**
   * Heads' passes in lock-step (`heads` for passes that differ: a PoE round's last draft step beside its verification):
   * op by op across the passes (passes with fewer ops drop out), each op's dispatches followed by one read barrier over
   * what they wrote. Each head appears at most once (it has one lane of buffers). With one pass, or where lock-step
   * cannot take a pass (no lanes, more rows than `lockstepRows`, the post-norm or QK-statistics fusion), the passes run
   * one after the other, as `head` records each.
   */
  lockstep(passes: readonly HeadPass[], gated = false): Dispatch[] {
    if (new Set(passes.map((p) => p.head)).size !== passes.length) throw new Error("lockstep(): a head twice");
    const fits = (p: HeadPass) => {
      const fused = this.#fusedAt(p.rows);
      return p.rows <= this.lockstepRows && !fused.postNorm && !fused.qkStats;
    };
    if (!this.#lanes || passes.length < 2 || !passes.every(fits)) {
      return passes.flatMap((p) => this.head(p.head, p.rows, { ...p, gated }));
    }
    return this.#cache.get(`lockstep ${JSON.stringify(passes)} ${gated}`, () => {
      const ops = passes.map((p) => this.#laneOps(p, gated));
      return range(Math.max(...ops.map((o) => o.length))).flatMap((s) => {
        const now = ops.flatMap((o) => s < o.length ? [o[s]] : []);
        const writes = now.flatMap((op) => op.writes);
        return [
          ...now.flatMap((op) => op.dispatches),
          ...(writes.length > 0 ? readBarrier(this.gpu, { ctl: this.ctl, buffers: writes, gated }) : []),
        ];
      });
    });
  }

  /**
   * Head `h`'s ops in a lock-step pass, on its lane's buffers: `#block`'s kernels one op a line, the residual added
   * out of place (each block reads x_in and writes mid and out), then the final norm and the lm_head.
   */
  #laneOps(p: HeadPass, gated: boolean): LaneOp[] {
    const c = this.config, d = c.dModel, F = c.ffnHidden, h = p.head, rows = p.rows;
    const head = this.weights.heads[h], lane = this.#lanes![h];
    const outRows = this.#logitRows(rows, p.lastTokenOnly);
    const out = this.#bind(outRows, gated);
    const op = laneOp;
    let x = (p.input ?? "h") === "h" ? this.#act.h : this.trunkStates;
    // only the last row's logits: the last block for that row alone (`#lastRowOps`)
    const tail = this.#lastRowTail(rows, p.lastTokenOnly, p.posBack ?? 0);
    const ops = head.blocks.flatMap((b, j) => {
      const L = lane.blocks[j], kv = this.#kvHeads[h][j], xIn = x;
      if (tail && j === head.blocks.length - 1) {
        x = L.out;
        return this.#lastRowOps(b, kv, rows, gated, { x: xIn }, { from: xIn, to: L.out }, L);
      }
      const k = this.#bind(rows, gated, L, p.posBack ?? 0);
      const appends = k.fused.attention ? [kv.k, kv.v] : [];
      x = L.out;
      return [
        ...op(k.linear(b.qkv, xIn, L.qkv, d, 3 * d), L.qkv),
        ...op(k.qkNormRope(b.qkNorm, kv), L.q, kv.k, kv.v), // fused: nothing, the attention does it
        ...attentionOps(k.attention(kv, b.qkNorm), L.scratch, L.att, appends),
        ...op(k.linear(b.o, L.att, L.proj, d, d), L.proj),
        ...op([k.norm(L.proj, b.attnNorm, L.mid, { residualFrom: xIn })], L.mid),
        ...op(k.linear(b.gateUp, L.mid, L.ffn, d, F, Epilogue.SWIGLU), L.ffn),
        ...op(k.linear(b.down, L.ffn, L.down, F, d), L.down),
        ...op([k.norm(L.down, b.ffNorm, L.out, { residualFrom: L.mid })], L.out),
      ];
    });
    return [
      ...ops,
      ...op([out.norm(x, head.norm, lane.normed, { xRowOffset: rows - outRows })], lane.normed),
      ...op(out.linear(head.lmHead, lane.normed, this.logitsSlice(p.slot ?? h, outRows), d, c.paddedVocab)),
    ];
  }

  /** Copies the trunk output row 0 (`h`) into row `i` of `trunkStates` (a draft step's state, for verification). */
  saveTrunkState(i: number, gated = false): Dispatch {
    const bytes = this.config.dModel * 4;
    return this.#cache.get(`save ${i} ${gated}`, () => [
      this.#bind(1, gated).copy(this.#act.h, { buffer: this.trunkStates, offset: i * bytes, size: bytes }),
    ])[0];
  }

  /**
   * One OLMo-2 block on residual `x` (rows at positions ctl[POS]..), appending to `kv`: the forward pass of the
   * module comment, one kernel a line. Fused, the lines marked so record nothing: their work runs in a neighbour.
   */
  #block(
    b: BlockWeights,
    kv: KvLayer,
    x: Residual,
    rows: number,
    gated: boolean,
    next?: BlockWeights,
    posBack = 0,
  ): Dispatch[] {
    const k = this.#bind(rows, gated, undefined, posBack), a = this.#act, d = this.config.dModel;
    const F = this.config.ffnHidden;
    // prefill: o's input as its f16 rows from the tensor attention, scaled by qk_norm_rope's bound on |v|
    // (HydraShape.prefillAttentionRows), in place of o's row-scale pre-pass
    const oRows = k.oRows();
    // `beside(ds, w)`: after each latency-bound dispatch of ds, a prefetch of w's next bytes (HydraShape.prefetch)
    return [
      // fused: adds the pending post-norm of the previous block first; with qkStats also writes q's and k's partial
      // sums of squares for the attention's QK-norm
      // prefill: split-K partials left to qk_norm_rope
      ...k.linear(b.qkv, { ...x.read(), qkStats: k.qkStats?.matvec }, a.qkv, d, 3 * d, Epilogue.PLAIN, k.intoQkNorm),
      ...k.qkNormRope(b.qkNorm, kv, oRows?.vmax), // fused: nothing, the attention does it
      ...k.beside(k.attention(kv, b.qkNorm, oRows), b.o), // fused: QK-norm + RoPE + K/V append in the split pass
      // prefill: split-K partials left to the norm
      ...k.linear(b.o, { x: a.att, halfRowsWritten: oRows }, a.proj, d, d, Epilogue.PLAIN, k.intoNorm),
      // fused: nothing, pending for gate_up's prologue; prefill: also gate_up's f16 rows
      ...k.beside(
        x.add(k.normInput(a.proj, d, d), b.attnNorm, k.halfRows(d, F, Epilogue.SWIGLU)),
        b.gateUp,
      ),
      ...k.linear(b.gateUp, x.read(), a.ffn, d, F, Epilogue.SWIGLU),
      ...k.linear(b.down, a.ffn, a.proj, F, d, Epilogue.PLAIN, k.intoNorm),
      // fused: nothing, pending for the next qkv (or the run's end); prefill: also the next qkv's f16 rows
      ...k.beside(
        x.add(k.normInput(a.proj, F, d), b.ffNorm, next && k.halfRows(d, 3 * d)),
        next?.qkv,
      ),
    ];
  }

  /**
   * Whether a tower's pass over `rows` rows ends with its last block for the last row alone (`#lastRowOps`): only the
   * last row's logits asked for, `prefillTail` on, no rows back (a verification's), and a prefill (the GEMMs' rows,
   * unfused: its residual stays in one buffer) whose rows are whole storage-binding offsets apart (the last row is
   * bound as a slice).
   */
  #lastRowTail(rows: number, lastTokenOnly: boolean, posBack = 0): boolean {
    const fused = this.#fusedAt(rows);
    const rowBytes = this.config.dModel * 4;
    return lastTokenOnly && posBack === 0 && this.prefillTail && rows > MATVEC_MAX_ROWS && !fused.postNorm &&
      !fused.attention && rowBytes % this.gpu.device.limits.minStorageBufferOffsetAlignment === 0;
  }

  /**
   * `#block` for a pass of which only the last row's output is read: QKV, QK-norm, RoPE and the K/V append for every
   * row (the cache keeps them all), then the attention, the products and the post-norms for the last row alone, at its
   * position (ctl[POS] + rows - 1: the decode attention over all the keys, the matvecs), reading that row of the
   * residual from `from` and storing the new one to that row of `to` (`Residual.tail`; a lock-step lane: its input and
   * `out`). The last layer of a 128-token prefill then costs a decode step's products in place of four GEMMs over 128
   * rows. As ops with the buffers each writes, for a lock-step pass (`lane`); `#lastRowBlock` flattens them.
   */
  #lastRowOps(
    b: BlockWeights,
    kv: KvLayer,
    rows: number,
    gated: boolean,
    x: LinearInput,
    { from, to }: { from: GPUBuffer; to: GPUBuffer },
    lane?: LaneBlock,
  ): LaneOp[] {
    const d = this.config.dModel, F = this.config.ffnHidden;
    const k = this.#bind(rows, gated, lane), one = this.#bind(1, gated, lane, 0, rows - 1);
    const a = lane ?? this.#act;
    // the residual after the attention, row 0: a lane's own, else alt (free in an unfused pass); down's output: a
    // lane's own, else proj (free again once the first post-norm read it)
    const mid = lane?.mid ?? this.#act.alt, down = lane?.down ?? a.proj;
    const lastRow = (buffer: GPUBuffer): BufferSlice => ({ buffer, offset: (rows - 1) * d * 4, size: d * 4 });
    const op = laneOp;
    return [
      ...op(k.linear(b.qkv, x, a.qkv, d, 3 * d, Epilogue.PLAIN, !lane && k.intoQkNorm), a.qkv), // lanes: reduced
      ...op(k.qkNormRope(b.qkNorm, kv), a.q, kv.k, kv.v),
      // the last row's query (q's row rows - 1) over every key
      ...attentionOps(one.attention(kv, b.qkNorm), lane ? lane.scratch : this.#attnScratch, a.att, []),
      ...op(one.linear(b.o, a.att, a.proj, d, d), a.proj),
      ...op([one.norm(a.proj, b.attnNorm, mid, { residualFrom: lastRow(from) })], mid),
      ...op(one.linear(b.gateUp, mid, a.ffn, d, F, Epilogue.SWIGLU), a.ffn),
      ...op(one.linear(b.down, a.ffn, down, F, d), down),
      ...op([one.norm(down, b.ffNorm, lastRow(to), { residualFrom: mid })], to),
    ];
  }

  /** `#lastRowOps` on residual `x` (unfused), as dispatches: the new last row stored where `x` then ends. */
  #lastRowBlock(b: BlockWeights, kv: KvLayer, x: Residual, rows: number, gated: boolean): Dispatch[] {
    const input = x.read();
    return this.#lastRowOps(b, kv, rows, gated, input, x.tail()).flatMap((o) => o.dispatches);
  }

  /** The fusions a pass over `rows` rows takes (`HydraShape.fuse`, up to its `maxRows`). */
  #fusedAt(rows: number): { attention: boolean; postNorm: boolean; qkStats: boolean; prefillNorm: boolean } {
    const f = this.fuse === false || rows > this.fuse.maxRows ? undefined : this.fuse;
    return {
      attention: f?.attention ?? false,
      postNorm: f?.postNorm ?? false,
      qkStats: (f?.attention && f.qkStats) ?? false,
      prefillNorm: this.fuse !== false && this.fuse.prefillNorm && rows > MATVEC_MAX_ROWS,
    };
  }

  /** Logit rows of a head's pass over `rows` rows (1 with `lastTokenOnly`); at most the model's maxLogitRows. */
  #logitRows(rows: number, lastTokenOnly: boolean): number {
    const out = lastTokenOnly ? 1 : rows;
    if (out > this.maxLogitRows) {
      throw new Error(`head: ${out} logit rows, the model was built for ${this.maxLogitRows}`);
    }
    return out;
  }

  /**
   * The kernels of a pass over `rows` rows, bound to this model's GPU, control block, shapes, activations and gating,
   * so that `#block` and `head` record one kernel a line.
   */
  #bind(rows: number, gated: boolean, lane?: LaneBlock, posBack = 0, qRow = 0) {
    const gpu = this.gpu, ctl = this.ctl, c = this.config, maxPos = this.maxPos;
    // the attention's buffers: the shared activations, or a lock-step lane's
    const a = lane ?? this.#act, scratch = lane ? lane.scratch : this.#attnScratch;
    // `qRow` > 0 (`#lastRowBlock`): the queries are normed, rotated and their K/V appended already; nothing fused
    const fused = qRow > 0
      ? { ...this.#fusedAt(rows), attention: false, postNorm: false, qkStats: false }
      : this.#fusedAt(rows);
    const partials = this.#qkPartials;
    if (fused.qkStats && !partials) throw new Error("qkStats: the model has no partials buffer");
    const qkStats = fused.qkStats && partials
      ? {
        matvec: { partials, d: c.dModel },
        attention: { partials, groupRows: this.#qkvGroupRows(rows) },
      }
      : undefined;
    const norm = (
      x: GPUBuffer,
      weight: GPUBuffer,
      out: GPUBuffer | BufferSlice,
      o: {
        residual?: boolean;
        xRowOffset?: number;
        residualFrom?: GPUBuffer | BufferSlice;
        splitK?: number;
        half?: HalfRows;
      } = {},
    ) => rmsnorm(gpu, { ctl, x, weight, out, rows, dim: c.dModel, eps: c.rmsNormEps, ...o, gated });
    // a product's plan (kernels/matmul/linear.ts), for the post-norms beside it (`fused.prefillNorm`)
    const plan = (k: number, n: number, epilogue: number = Epilogue.PLAIN): LinearPlan =>
      linearPlan(gpu, { rows, k, n, epilogue, gated, prefillMath: this.prefillMath });
    // what the dispatch after a product of shape [n, k] into `y` reads: its split-K partials where it leaves them
    // (`fused.prefillNorm` and split), else y
    const productOutput = (y: GPUBuffer, k: number, n: number): NormInput => {
      const p = fused.prefillNorm ? plan(k, n) : undefined;
      return p?.partials ? { x: p.partials, splits: p.splitK } : { x: y, splits: 1 };
    };
    // `qRow`: the attention's queries are q's rows from qRow (rows sitting at ctl[POS] + qRow - posBack)
    const attention = {
      ctl,
      q: qRow === 0 ? a.q : { buffer: a.q, offset: qRow * c.dModel * 4, size: rows * c.dModel * 4 },
      out: a.att,
      rows,
      nHeads: c.nHeads,
      headDim: c.headDim,
      kvDtype: this.kvDtype,
      gated,
      posBack: posBack - qRow,
    };
    return {
      /** What this pass fuses. */
      fused,
      /** The QK statistics' buffer as the QKV matvec writes it and the fused attention reads it (`fused.qkStats`). */
      qkStats,
      /**
       * The residual stream of a run of blocks, from `start`, moving between the `pool` buffers when fused; unfused with
       * `source`, read from there until its first post-norm (`Residual`).
       */
      residual: (start: GPUBuffer, pool: [GPUBuffer, GPUBuffer], source?: GPUBuffer) =>
        new Residual(
          start,
          pool,
          fused.postNorm,
          c.rmsNormEps,
          (p, w, out, from, half) =>
            norm(p.x, w, out, { ...(from ? { residualFrom: from } : { residual: true }), splitK: p.splits, half }),
          source,
        ),
      /** x = the embedding rows of seq[POS..]. */
      embed: (x: GPUBuffer) =>
        embedding(gpu, {
          ctl,
          seq: this.seq,
          table: this.weights.embed,
          x,
          rows,
          dim: c.dModel,
          tableRows: c.paddedVocab,
          gated,
        }),
      /** dst = src (rows of width d). */
      copy: (src: GPUBuffer, dst: GPUBuffer | BufferSlice) =>
        copyVec4(gpu, { ctl, src, dst, vec4Count: (rows * c.dModel) / 4, gated }),
      /**
       * y = x W^T for W [n, k]; with the SWIGLU epilogue W holds gate and up and y = silu(x Wgate^T) * (x Wup^T). One
       * dispatch, or two for the tensor-core GEMM (its row-scale pre-pass first). `x` with a pending post-norm: the
       * matvec adds it in its prologue.
       */
      linear: (
        weight: GPUBuffer,
        x: GPUBuffer | LinearInput,
        y: GPUBuffer | BufferSlice,
        k: number,
        n: number,
        epilogue?: number,
        leavePartials = false,
      ) =>
        linear(gpu, {
          ctl,
          weight,
          ...("x" in x ? x : { x }),
          y,
          rows,
          k,
          n,
          epilogue,
          gated,
          prefillMath: this.prefillMath,
          leavePartials,
        }),
      /** Whether a product into a post-norm leaves its split-K partials for the norm to sum (`fused.prefillNorm`). */
      intoNorm: fused.prefillNorm,
      /** Whether the QKV product leaves its split-K partials for qk_norm_rope to sum (`fused.prefillNorm`, unfused attention). */
      intoQkNorm: fused.prefillNorm && !fused.attention,
      /**
       * The post-norm's input after a product of shape [n, k] into `y` (with `intoNorm`): its split-K partials where it
       * is split, else y.
       */
      normInput: productOutput,
      /**
       * Where the post-norm before a product of shape [n, k] writes its f16 rows (`fused.prefillNorm`, where the
       * product is the tensor-core GEMM), else undefined.
       */
      halfRows: (k: number, n: number, epilogue: number = Epilogue.PLAIN): HalfRows | undefined =>
        fused.prefillNorm ? plan(k, n, epilogue).halfRows : undefined,
      /**
       * Where the attention writes the o product's input as its f16 rows, and where qk_norm_rope writes the bound they
       * are scaled by (`HydraShape.prefillAttentionRows`, where the attention is the tensor kernel and o the
       * tensor-core GEMM), else undefined.
       */
      oRows: (): (HalfRows & { vmax: GPUBuffer }) | undefined => {
        if (!this.prefillAttentionRows || rows <= DECODE_MAX_ROWS || posBack !== 0 || qRow !== 0 || lane) return;
        if (prefillAttentionKernel(gpu, { rows, nHeads: c.nHeads, headDim: c.headDim }) !== "tensor") return;
        const half = plan(c.dModel, c.dModel).halfRows;
        return half && { ...half, vmax: this.#act.vmax };
      },
      /**
       * From qkv: q = RoPE(QKNorm(q)); K = RoPE(QKNorm(k)) and V = v written to `kv` at the rows' positions; with
       * `fused.prefillNorm` from the QKV product's split-K partials where it is split. Fused: nothing (the attention does
       * it).
       */
      qkNormRope: (normWeights: GPUBuffer, kv: KvLayer, vmax?: GPUBuffer): Dispatch[] => {
        if (fused.attention) return [];
        // a lock-step lane's qkv is reduced (`#laneOps` leaves no partials)
        const qkv = lane ? { x: a.qkv, splits: 1 } : productOutput(a.qkv, c.dModel, 3 * c.dModel);
        return [qkNormRope(gpu, {
          ctl,
          qkv: qkv.x,
          splitK: qkv.splits,
          normWeights,
          ropeTable: this.#rope,
          qOut: a.q,
          kCache: kv.k,
          vCache: kv.v,
          rows,
          dim: c.dModel,
          headDim: c.headDim,
          maxPos,
          eps: c.rmsNormEps,
          kvDtype: this.kvDtype,
          gated,
          posBack,
          vmax,
        })];
      },
      /**
       * att = causal attention of q over K, V: the decode kernel up to DECODE_MAX_ROWS rows, the prefill one above
       * (`prefillAttention`: tensor cores on Dawn from TENSOR_PREFILL_MIN_ROWS rows and enough heads, else FMA;
       * HYDRA_PREFILL_ATTENTION=fma|tensor forces one).
       * Fused: from qkv, with QK-norm (`normWeights`), RoPE and the K/V append inside.
       */
      attention: (kv: KvLayer, normWeights: GPUBuffer, halfRows?: HalfRows & { vmax: GPUBuffer }): Dispatch[] => {
        const caches = { kCache: kv.k, vCache: kv.v };
        if (rows > DECODE_MAX_ROWS) {
          if (posBack !== 0) throw new Error(`attention: posBack over ${rows} rows (the prefill attention has none)`);
          return [prefillAttention(gpu, { ...attention, ...caches, halfRows })];
        }
        if (halfRows) throw new Error("attention: the decode kernel writes no f16 rows");
        const qkNorm = fused.attention
          ? { qkv: a.qkv, normWeights, ropeTable: this.#rope, eps: c.rmsNormEps, stats: qkStats?.attention }
          : undefined;
        return attentionDecode(gpu, {
          ...attention,
          ...caches,
          qkNormRope: qkNorm,
          scratch,
          maxPos,
        });
      },
      /** out = RMSNorm(x) (`residual`: out += RMSNorm(x)), from row `xRowOffset` of x. */
      norm,
      /**
       * `ds` (latency-bound dispatches), each followed by a prefetch of the next `prefetchBytes` of `weight` into L2
       * (kernels/memory/prefetch.ts): it writes nothing, so it runs beside the dispatch before it. Decode passes only
       * (at most DECODE_MAX_ROWS rows); `ds` as they are without a weight or with no prefetch. Beside a 128-token
       * prefill's attention and post-norms it was slower on Dawn (H200, session AG, `deno task profile --config
       * prefill --whole`): the 7B's pass 12.42 ms without, 12.46 / 12.63 / 12.99 with 8 / 16 / 32 MiB; the 1B's 4.20
       * -> 4.28 with 16.
       */
      beside: (ds: readonly Dispatch[], weight: GPUBuffer | undefined): Dispatch[] => {
        const P = this.prefetchBytes;
        if (!weight || P === 0 || rows > DECODE_MAX_ROWS) return [...ds];
        return ds.flatMap((d, i) => [d, ...prefetch(gpu, { ctl, src: weight, offset: i * P, bytes: P, gated })]);
      },
    };
  }

  /** Frees the KV caches, activations and (unless `keepWeights`) the weights. */
  destroy(keepWeights = false): void {
    for (const b of this.#own) b.destroy();
    if (!keepWeights) destroyWeights(this.weights);
    this.#cache.clear();
  }
}
