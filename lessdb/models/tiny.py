"""A tiny randomly initialised Llama and a byte-level tokenizer, built locally (no download).

Used by tests and by `--model tiny` for smoke runs: the real pipeline, real peft, real gradients, in
milliseconds. The tokenizer has no chat template, so conversations use the Tulu format.
"""
from __future__ import annotations

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>"]


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """Byte-level tokenizer: 4 specials + 256 byte tokens, no merges."""
    byte_tokens = list(pre_tokenizers.ByteLevel.alphabet())
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + sorted(byte_tokens))}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", bos_token="<s>",
                                   eos_token="</s>", unk_token="<unk>")


def tiny_llama_config(vocab_size: int = 260, hidden_size: int = 64, layers: int = 2) -> LlamaConfig:
    return LlamaConfig(vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=hidden_size * 2,
                       num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                       max_position_embeddings=1024, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                       tie_word_embeddings=False)


def tiny_llama(seed: int = 0, **config_overrides) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    model = LlamaForCausalLM(tiny_llama_config(**config_overrides))
    model.eval()
    return model
