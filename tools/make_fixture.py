#!/usr/bin/env python3
"""Make the tiny HF OLMo-2 reference fixture that tests/model checks the WebGPU model against.

Run on a machine with PyTorch + transformers + safetensors (the GPU machine has them; no GPU is needed):
    python3 tools/make_fixture.py OUT_DIR
Writes OUT_DIR/ (committed as tests/fixtures/olmo2_tiny/):
    config.json, model.safetensors      a 4-layer OLMo-2 (d 128, 2 heads of 64, MLP 256, vocab 512), bf16 weights,
                                        random norms around 1 so every norm matters
    adapter_{0,1,2}/                    PEFT LoRA adapters on layers 2-3 (all seven projections); adapter_1 uses rsLoRA
                                        and a rank_pattern/alpha_pattern, adapter_2 targets only q/v/down
    reference.json                      for each prompt: last-position logits and a greedy continuation of the base
                                        model, of the model with each adapter merged, of the PoE jury (heads 1, 2)
                                        and of the naive mean of the three heads

Reference numerics: weights are bf16 (merged adapters: W + s * B @ A computed in f32 and rounded to bf16, as the
suite does at load); the forward pass runs in f32 with eager attention.
"""
import json, math, os, sys
import torch
from safetensors.torch import save_file
from transformers import Olmo2Config, Olmo2ForCausalLM

torch.manual_seed(1234)
out = sys.argv[1] if len(sys.argv) > 1 else "olmo2_tiny"
os.makedirs(out, exist_ok=True)

V, D, L, H, F = 512, 128, 4, 2, 256
cfg = Olmo2Config(vocab_size=V, hidden_size=D, num_hidden_layers=L, num_attention_heads=H, num_key_value_heads=H,
                  intermediate_size=F, max_position_embeddings=256, rms_norm_eps=1e-6, rope_theta=500000.0,
                  tie_word_embeddings=False, attention_bias=False, pad_token_id=1, bos_token_id=None, eos_token_id=2,
                  attn_implementation="eager")
if getattr(cfg, "rope_parameters", None) is not None:  # transformers 5 spelling
    cfg.rope_parameters = {"rope_type": "default", "rope_theta": 500000.0}
model = Olmo2ForCausalLM(cfg).eval()
inv_freq = model.model.rotary_emb.inv_freq
assert abs(float(inv_freq[1]) - 500000.0 ** (-2 / 64)) < 1e-6, f"rope theta not applied: {inv_freq[:3]}"
with torch.no_grad():
    for name, p in model.named_parameters():
        if p.ndim == 1:  # norms: random around 1 so that a wrong norm placement shows
            p.copy_(torch.empty_like(p).uniform_(0.5, 1.5))
        elif "embed_tokens" in name:
            p.normal_(0, 1.0)
        else:  # std chosen so logits are of unit scale
            p.normal_(0, 1.0 / math.sqrt(p.shape[1]))
model = model.to(torch.bfloat16)
model.save_pretrained(out, safe_serialization=True)
base_sd = {k: v.clone() for k, v in model.state_dict().items()}

MODULES = {"q_proj": "self_attn", "k_proj": "self_attn", "v_proj": "self_attn", "o_proj": "self_attn",
           "gate_proj": "mlp", "up_proj": "mlp", "down_proj": "mlp"}
ADAPTERS = [
    dict(r=8, lora_alpha=16, use_rslora=False, targets=list(MODULES), rank_pattern={}, alpha_pattern={}),
    dict(r=8, lora_alpha=8, use_rslora=True, targets=list(MODULES), rank_pattern={"down_proj": 4},
         alpha_pattern={"q_proj": 32}),
    dict(r=4, lora_alpha=8, use_rslora=False, targets=["q_proj", "v_proj", "down_proj"], rank_pattern={},
         alpha_pattern={}),
]
HEAD_LAYERS = [2, 3]


def lookup(pattern, module, default):
    for key, value in pattern.items():
        if module == key or module.endswith("." + key):
            return value
    return default


merged_sds = []
for i, a in enumerate(ADAPTERS):
    adir = os.path.join(out, f"adapter_{i}")
    os.makedirs(adir, exist_ok=True)
    tensors, sd = {}, {k: v.clone() for k, v in base_sd.items()}
    for layer in HEAD_LAYERS:
        for mod in a["targets"]:
            full = f"model.layers.{layer}.{MODULES[mod]}.{mod}"
            w = base_sd[full + ".weight"]
            r = lookup(a["rank_pattern"], full, a["r"])
            alpha = lookup(a["alpha_pattern"], full, a["lora_alpha"])
            A = torch.randn(r, w.shape[1]) * 0.3 / math.sqrt(w.shape[1])
            B = torch.randn(w.shape[0], r) * 0.3 / math.sqrt(r)
            tensors[f"base_model.model.{full}.lora_A.weight"] = A.contiguous()
            tensors[f"base_model.model.{full}.lora_B.weight"] = B.contiguous()
            s = alpha / math.sqrt(r) if a["use_rslora"] else alpha / r
            sd[full + ".weight"] = (w.float() + s * (B @ A)).to(torch.bfloat16)
    save_file(tensors, os.path.join(adir, "adapter_model.safetensors"))
    with open(os.path.join(adir, "adapter_config.json"), "w") as f:
        json.dump({"peft_type": "LORA", "base_model_name_or_path": "olmo2_tiny", "r": a["r"],
                   "lora_alpha": a["lora_alpha"], "use_rslora": a["use_rslora"], "use_dora": False,
                   "fan_in_fan_out": False, "bias": "none", "target_modules": a["targets"],
                   "layers_to_transform": HEAD_LAYERS, "rank_pattern": a["rank_pattern"],
                   "alpha_pattern": a["alpha_pattern"], "task_type": "CAUSAL_LM"}, f, indent=1)
    merged_sds.append(sd)


def f32_model(sd):
    m = Olmo2ForCausalLM(cfg).eval()
    m.load_state_dict({k: v.float() for k, v in sd.items()})
    return m


@torch.no_grad()
def greedy(score_fn, prompt, n):
    ids = list(prompt)
    for _ in range(n):
        ids.append(int(score_fn(ids).argmax()))
    return ids[len(prompt):]


def last_logits(m):
    return lambda ids: m(torch.tensor([ids])).logits[0, -1]


prompts = [[5, 17, 300, 42, 99, 7, 511], [int(x) for x in torch.randint(3, V, (33,))]]
N_NEW = 24
base = f32_model(base_sd)
heads = [f32_model(sd) for sd in merged_sds]


def jury(ids):
    return torch.log_softmax(sum(torch.log_softmax(last_logits(h)(ids), -1) for h in heads[1:]), -1)


def naive(ids):
    return sum(last_logits(h)(ids) for h in heads) / len(heads)


def top2_gap(score_fn, prompt, cont):
    """Smallest gap between the top two scores along the greedy path (how robust the reference is)."""
    gaps, ids = [], list(prompt)
    for t in cont:
        s = torch.sort(score_fn(ids), descending=True).values
        gaps.append(float(s[0] - s[1]))
        ids.append(t)
    return min(gaps)


ref = {"n_new": N_NEW, "heads_depth": len(HEAD_LAYERS), "draft_head": 0, "cases": []}
with torch.no_grad():
    for p in prompts:
        case = {"prompt": p}
        case["base"] = {"last_logits": last_logits(base)(p).tolist(), "greedy": greedy(last_logits(base), p, N_NEW)}
        case["base"]["min_top2_gap"] = top2_gap(last_logits(base), p, case["base"]["greedy"])
        case["adapters"] = []
        for h in heads:
            g = greedy(last_logits(h), p, N_NEW)
            case["adapters"].append({"last_logits": last_logits(h)(p).tolist(), "greedy": g,
                                     "min_top2_gap": top2_gap(last_logits(h), p, g)})
        g = greedy(jury, p, N_NEW)
        case["jury"] = {"last_logprobs": jury(p).tolist(), "greedy": g, "min_top2_gap": top2_gap(jury, p, g)}
        g = greedy(naive, p, N_NEW)
        case["naive"] = {"last_logits": naive(p).tolist(), "greedy": g, "min_top2_gap": top2_gap(naive, p, g)}
        ref["cases"].append(case)
        print("prompt", len(p), "base greedy", case["base"]["greedy"][:8], "gap", case["base"]["min_top2_gap"])
with open(os.path.join(out, "reference.json"), "w") as f:
    json.dump(ref, f)
print("torch", torch.__version__, "wrote", sorted(os.listdir(out)))
