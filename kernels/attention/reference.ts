/**
 * The CPU reference of OLMo-2's causal attention (plain multi-head, n_kv_heads == n_heads), shared by the decode and
 * prefill kernels' tests. Accumulation in f64.
 * @module
 */

/**
 * Causal softmax attention of `rows` query rows at positions pos0 .. pos0 + rows - 1 against a position-major cache.
 *
 * `q` is [rows, D] and `kCache`, `vCache` are [>= pos0 + rows, D] with D = nHeads * headDim (head h in columns
 * h * headDim ..). Row m attends keys 0 .. pos0 + m inclusive with scale 1 / sqrt(headDim). Returns [rows, D].
 */
export function attentionReference(
  q: Float32Array,
  kCache: Float32Array,
  vCache: Float32Array,
  rows: number,
  pos0: number,
  nHeads: number,
  headDim: number,
): Float32Array {
  const d = nHeads * headDim;
  if (q.length < rows * d) throw new Error(`attentionReference: q holds ${q.length} values, needs ${rows * d}`);
  if (kCache.length < (pos0 + rows) * d || vCache.length < (pos0 + rows) * d) {
    throw new Error(`attentionReference: the caches must hold ${pos0 + rows} rows of ${d} values`);
  }
  const scale = 1 / Math.sqrt(headDim);
  const out = new Float32Array(rows * d);
  const scores = new Float64Array(pos0 + rows);
  const acc = new Float64Array(headDim);
  for (let m = 0; m < rows; m++) {
    const last = pos0 + m;
    for (let h = 0; h < nHeads; h++) {
      const qb = m * d + h * headDim;
      let max = -Infinity;
      for (let k = 0; k <= last; k++) {
        const kb = k * d + h * headDim;
        let s = 0;
        for (let i = 0; i < headDim; i++) s += q[qb + i] * kCache[kb + i];
        scores[k] = s * scale;
        if (scores[k] > max) max = scores[k];
      }
      acc.fill(0);
      let sum = 0;
      for (let k = 0; k <= last; k++) {
        const p = Math.exp(scores[k] - max);
        sum += p;
        const vb = k * d + h * headDim;
        for (let i = 0; i < headDim; i++) acc[i] += p * vCache[vb + i];
      }
      for (let i = 0; i < headDim; i++) out[qb + i] = acc[i] / sum;
    }
  }
  return out;
}
