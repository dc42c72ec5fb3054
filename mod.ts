/**
 * Public API of the OLMo-2 / Hydra / PoE inference benchmark suite: the WebGPU runtime and kernels, the model, the
 * PoE decoder and the benchmark functions.
 * @module
 */

export * from "./common/errors.ts";
export * from "./kernels/runtime.ts";
export * from "./kernels/timing.ts";
export * from "./kernels/bf16.ts";
export * from "./kernels/control/ctl.ts";
export * from "./kernels/control/step.ts";
export * from "./kernels/control/poe_accept.ts";
export * from "./kernels/norm/rmsnorm.ts";
export * from "./kernels/matmul/matvec.ts";
export * from "./kernels/matmul/gemm.ts";
export * from "./kernels/matmul/linear.ts";
export * from "./kernels/embed/embedding.ts";
export * from "./kernels/attention/qk_norm_rope.ts";
export * from "./kernels/attention/decode.ts";
export * from "./kernels/attention/prefill.ts";
export * from "./kernels/attention/reference.ts";
export * from "./kernels/logits/argmax.ts";
export * from "./kernels/logits/log_softmax.ts";
export * from "./kernels/logits/combine.ts";
export * from "./kernels/weights/random.ts";
export * from "./kernels/weights/lora_merge.ts";
export * from "./kernels/weights/finite_check.ts";
export * from "./kernels/memory/copy.ts";
export * from "./model/config.ts";
export * from "./model/safetensors.ts";
export * from "./model/checkpoint.ts";
export * from "./model/lora.ts";
export * from "./model/weights.ts";
export * from "./model/finite_checks.ts";
export * from "./model/ensemble.ts";
export * from "./model/hydra.ts";
export * from "./model/generate.ts";
export * from "./poe/tokenizer.ts";
export * from "./poe/chat_template.ts";
export * from "./poe/prompt.ts";
export * from "./poe/poe.ts";
export * from "./bench/harness.ts";
export * from "./bench/stats.ts";
export * from "./bench/config.ts";
export * from "./bench/results_types.ts";
export * from "./bench/schema.ts";
export * from "./bench/metrics.ts";
export * from "./bench/results.ts";
export * from "./bench/bandwidth.ts";
export * from "./bench/configurations.ts";
export * from "./bench/poe_model.ts";
export * from "./bench/poe_costs.ts";
export * from "./bench/poe_sweep.ts";
export * from "./bench/headline.ts";
export * from "./bench/summary.ts";
export * from "./bench/table.ts";
export * from "./bench/compare.ts";
export * from "./bench/progress.ts";
export * from "./bench/run_folder.ts";
export * from "./bench/contexts.ts";
export * from "./bench/peers.ts";
export * from "./bench/plan.ts";
export * from "./bench/process.ts";
export * from "./bench/provenance.ts";
export * from "./bench/lock.ts";
export * from "./bench/run_log.ts";
export * from "./bench/runs.ts";
