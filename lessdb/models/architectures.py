"""Model shapes by name, built from a config with random weights: no download, no model package, no tokenizer.

For measuring what lessdb's compute costs on a machine (bench/gpu_check.py, which predicts each measurement's
cost from `flops_per_token`): throughput does not depend on the weights' values, only on the shapes, so a GPU box
with torch + transformers alone can measure the real SmolLM2-135M's shape, or a ~1B / ~8B Llama's, without any
file. `smollm2-135m` is the config the bundled
GGUF converts to (tests/test_models.py compares them); the Llama shapes are Llama-3.2-1B's and Llama-3-8B's
published configs (RoPE scaling left out: it changes no FLOP).
"""
from __future__ import annotations

import torch

ARCHITECTURES: dict[str, dict] = {
    "smollm2-135m": dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, head_dim=64, max_position_embeddings=8192,
                         rms_norm_eps=1e-5, rope_parameters={"rope_theta": 100000.0, "rope_type": "default"},
                         tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2),
    "llama-1b": dict(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                     num_attention_heads=32, num_key_value_heads=8, head_dim=64, max_position_embeddings=8192,
                     rms_norm_eps=1e-5, rope_parameters={"rope_theta": 500000.0, "rope_type": "default"},
                     tie_word_embeddings=True, bos_token_id=128000, eos_token_id=128001, pad_token_id=128001),
    "llama-8b": dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                     num_attention_heads=32, num_key_value_heads=8, head_dim=128, max_position_embeddings=8192,
                     rms_norm_eps=1e-5, rope_parameters={"rope_theta": 500000.0, "rope_type": "default"},
                     tie_word_embeddings=False, bos_token_id=128000, eos_token_id=128001, pad_token_id=128001),
}


def architecture_config(name: str, **overrides):
    """The LlamaConfig of a named shape ("tiny": lessdb.models.tiny's), with fields overridden (e.g. fewer layers)."""
    from transformers import LlamaConfig

    if name == "tiny":
        from .tiny import tiny_llama_config

        config = tiny_llama_config()
        for key, value in overrides.items():
            setattr(config, key, value)
        return config
    if name not in ARCHITECTURES:
        raise KeyError(f"unknown architecture {name!r}; known: tiny, {', '.join(ARCHITECTURES)}")
    return LlamaConfig(**{**ARCHITECTURES[name], **overrides})


def flops_per_token(cfg, max_len: int, lora_params: int, labelled: float) -> float:
    """Forward + backward FLOPs per token of a frozen-base LoRA pass of a Llama-shaped `cfg` on sequences of
    `max_len`: 2N forward and 2N for the input gradients over the body, causal attention (QKᵀ and AV, forward and
    backward), the LM head at the `labelled` share of positions only (forward, and its input gradient), and the
    per-example LoRA gradients (2 FLOPs per LoRA weight per token)."""
    h, layers = cfg.hidden_size, cfg.num_hidden_layers
    head_dim = getattr(cfg, "head_dim", None) or h // cfg.num_attention_heads
    q = cfg.num_attention_heads * head_dim
    kv = cfg.num_key_value_heads * head_dim
    body = layers * (h * (q + 2 * kv) + q * h + 3 * h * cfg.intermediate_size)
    attention = layers * 2 * 2 * max_len * q / 2
    head = 2 * 2 * cfg.vocab_size * h * labelled
    return 4 * body + 3 * attention + head + 2 * lora_params


def random_causal_lm(config, device="cpu", dtype: torch.dtype = torch.float32, seed: int = 0):
    """A LlamaForCausalLM with random weights (seeded), allocated and initialised on `device` directly (a 1B
    model initialised on a CPU and copied over would cost more than the measurement), in eval mode."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    return model.eval()
