/**
 * What the attention kernels share: the online-softmax step as WGSL (generated for each kernel's names of its row and
 * key counts: one generator, no copies), the shape checks of their builders, and the workgroup-memory budget.
 *
 * A workgroup owns ROWS query rows and walks the keys in tiles of KEYS. For each tile it writes the scaled scores
 * into `scores[r * KEYS + j]`, barriers, and calls `softmax_tile(t)`, which turns them in place into
 * p = exp(s - m_new) (0 for masked keys), where m_new is the row's running max over all keys seen so far, and sets
 * `alpha[r] = exp(m_old - m_new)`, the factor the caller must rescale its accumulators by before adding p * V.
 * `m_run` and `l_run` hold each row's running max and sum of exp. A row that has seen no valid key keeps the finite
 * sentinel NEG_BIG as its max (so exp(m_old - m_new) is never exp(-inf + inf) = NaN) and a sum of 0.
 *
 * Masking: score (r, j) is valid when r < rows_valid and key tile_first + j <= min(first_pos + r, last_key), i.e.
 * causal (row r sits at position first_pos + r) and never past last_key. The kernel sets these private variables.
 * @module
 */

/** WGSL of the online-softmax step; `rows` and `keys` name the kernel's overrides for ROWS and KEYS. */
export function onlineSoftmaxWgsl(rows: string, keys: string): string {
  return `
// ---- online softmax (kernels/attention/shared.ts), ROWS = ${rows}, KEYS = ${keys} ----
// Needs the overrides WG (threads) and ROW_LANES (threads per row in the row reductions: a power of two with
// ROW_LANES * (ROWS rounded up to a power of two) <= WG).
const NEG_BIG: f32 = -3.0e38; // "no key seen yet": finite, so exp(NEG_BIG - NEG_BIG) = 1 and exp(NEG_BIG - s) = 0
var<private> first_pos: u32;  // position of row 0
var<private> rows_valid: u32; // rows >= rows_valid are padding
var<private> last_key: u32;   // no key after this one is valid for any row
var<private> tile_first: u32; // key of column 0 of the current tile
var<workgroup> scores: array<f32, ${rows} * ${keys}>; // [ROWS, KEYS]: scores in, probabilities out
var<workgroup> row_red: array<f32, WG>;
var<workgroup> m_run: array<f32, ${rows}>;
var<workgroup> l_run: array<f32, ${rows}>;
var<workgroup> alpha: array<f32, ${rows}>;

fn key_valid(r: u32, j: u32) -> bool {
  return r < rows_valid && tile_first + j <= min(first_pos + r, last_key);
}

// Resets the running max and sum (visible to all threads after the caller's next barrier).
fn softmax_init(t: u32) {
  for (var r = t; r < ${rows}; r += WG) {
    m_run[r] = NEG_BIG;
    l_run[r] = 0.0;
  }
}

// The max (or sum) of v over the ROW_LANES threads of t's row, returned to all of them.
fn row_reduce(v: f32, t: u32, take_max: bool) -> f32 {
  if (ROW_LANES == 1u) { return v; }
  let lane = t % ROW_LANES;
  row_red[t] = v;
  workgroupBarrier();
  for (var st = ROW_LANES / 2u; st > 0u; st /= 2u) {
    if (lane < st) {
      let a = row_red[t];
      let b = row_red[t + st];
      row_red[t] = select(a + b, max(a, b), take_max);
    }
    workgroupBarrier();
  }
  let total = row_red[t - lane];
  workgroupBarrier();
  return total;
}

fn softmax_tile(t: u32) {
  let r = t / ROW_LANES;
  let lane = t % ROW_LANES;
  let row = r < ${rows};
  var m_old = NEG_BIG;
  var mx = NEG_BIG;
  if (row) {
    m_old = m_run[r];
    for (var j = lane; j < ${keys}; j += ROW_LANES) {
      if (key_valid(r, j)) { mx = max(mx, scores[r * ${keys} + j]); }
    }
  }
  let m_new = max(m_old, row_reduce(mx, t, true));
  var sum = 0.0;
  if (row) {
    for (var j = lane; j < ${keys}; j += ROW_LANES) {
      let i = r * ${keys} + j;
      let p = select(0.0, exp(scores[i] - m_new), key_valid(r, j));
      scores[i] = p;
      sum += p;
    }
  }
  sum = row_reduce(sum, t, false);
  if (row && lane == 0u) {
    let a = exp(m_old - m_new);
    alpha[r] = a;
    l_run[r] = l_run[r] * a + sum;
    m_run[r] = m_new;
  }
  workgroupBarrier();
}
// ---- end of online softmax ----
`;
}

/** Smallest power of two >= n (n >= 1). */
export function nextPowerOfTwo(n: number): number {
  let p = 1;
  while (p < n) p *= 2;
  return p;
}

/** Workgroup memory a kernel may use: the WebGPU default limit, so the kernels run on every adapter. */
export const WORKGROUP_BYTES = 16384;

/**
 * ROW_LANES for `rows` rows and tiles of `keys` keys in a workgroup of `wg` threads: as many lanes per row as the
 * workgroup allows, but no more than about one per 8 keys (each tree level costs a barrier).
 */
export function rowLanes(wg: number, rows: number, keys: number): number {
  return Math.max(1, Math.min(Math.floor(wg / nextPowerOfTwo(rows)), nextPowerOfTwo(Math.ceil(keys / 8))));
}

/** Throws, naming the builder `who`, unless heads, head_dim and workgroup size are ones the attention kernels run. */
export function checkHeadShape(who: string, nHeads: number, headDim: number, workgroupSize: number): void {
  if (!Number.isInteger(nHeads) || nHeads < 1) throw new Error(`${who}: ${nHeads} heads is not a positive integer`);
  if (workgroupSize !== nextPowerOfTwo(workgroupSize) || workgroupSize < 32 || workgroupSize > 256) {
    throw new Error(`${who}: workgroup size ${workgroupSize} is not a power of two from 32 to 256`);
  }
  if (headDim !== nextPowerOfTwo(headDim) || headDim < 8 || headDim > 4 * workgroupSize) {
    throw new Error(`${who}: head_dim ${headDim} is not a power of two from 8 to ${4 * workgroupSize}`);
  }
}
