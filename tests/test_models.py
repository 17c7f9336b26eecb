"""Base models: tiny, a local HF directory, and (slow, still in CI) the real bundled SmolLM2."""
from __future__ import annotations

import pytest
import torch

from lessdb.runs.config import LoraSettings, TrainingSettings
from lessdb.errors import LessdbError
from lessdb.models.loading import (DEFAULT_MODEL, load_base_model, smollm2_gguf_path, state_dict_sha256)
from lessdb.storage import meta_runs
from lessdb.models.tiny import tiny_llama, tiny_tokenizer
from lessdb.models.tokenization import IGNORE_INDEX, conversation_format, encode_conversation, pad_token_id
from lessdb.runs.trainer import LoraTrainer, build_lora_model


def test_tiny_model_is_deterministic_and_recorded(workspace):
    a = load_base_model(workspace, "tiny")
    b = load_base_model(workspace, "tiny")
    assert a.sha256 == b.sha256 == state_dict_sha256(tiny_llama(0))
    assert a.sha256 != state_dict_sha256(tiny_llama(1))
    models = meta_runs.list_models(workspace)
    assert len(models) == 1 and models[0]["name"] == "tiny" and models[0]["n_params"] == a.n_params


def test_local_hf_directory_loads_with_its_weights_hash(workspace, tmp_path):
    model_dir = tmp_path / "my-model"
    tiny_llama(3).save_pretrained(model_dir)
    tiny_tokenizer().save_pretrained(model_dir)
    loaded = load_base_model(workspace, str(model_dir))
    assert loaded.source.startswith("dir:") and loaded.name == str(model_dir.resolve())
    assert state_dict_sha256(loaded.model) == state_dict_sha256(tiny_llama(3))
    assert len(loaded.sha256) == 64
    with pytest.raises(LessdbError, match="never downloaded"):
        load_base_model(workspace, "HuggingFaceTB/SmolLM2-135M")


@pytest.mark.slow
def test_real_smollm2_loads_caches_and_trains_one_step(workspace, tmp_path):
    gguf = smollm2_gguf_path()
    assert gguf.name.endswith(".gguf") and gguf.stat().st_size > 50_000_000
    first = load_base_model(workspace, DEFAULT_MODEL)  # converts the GGUF once (~20-30 s)
    converted = workspace.models_dir / first.source[len("gguf:"):] / "model.safetensors"
    written = converted.stat().st_mtime_ns
    again = load_base_model(workspace, DEFAULT_MODEL)  # from the workspace's safetensors copy, not converted again
    assert again.sha256 == first.sha256 and again.source == first.source and first.source.startswith("gguf:")
    assert converted.stat().st_mtime_ns == written
    del first
    model, tok = again.model, again.tokenizer
    assert model.config.model_type == "llama" and 130e6 < again.n_params < 140e6
    # bench/gpu_check.py builds this shape from lessdb.models.architectures when the package is absent: the same config
    from lessdb.models.architectures import architecture_config

    shape = architecture_config(DEFAULT_MODEL).to_dict()
    differs = {k: (v, model.config.to_dict().get(k)) for k, v in shape.items()
               if k not in ("_name_or_path", "transformers_version", "dtype", "architectures", "rms_norm_eps")
               and model.config.to_dict().get(k) != v}
    assert not differs and abs(shape["rms_norm_eps"] - model.config.rms_norm_eps) < 1e-9, differs
    assert conversation_format(tok) == "chat_template"
    conv = [{"role": "user", "content": "What is the capital of France?"},
            {"role": "assistant", "content": "The capital of France is Paris."}]
    enc = encode_conversation(tok, conv, 256)
    labelled = tok.decode([t for t, l in zip(enc.input_ids, enc.labels) if l != IGNORE_INDEX])
    assert labelled == "The capital of France is Paris.<|im_end|>\n"
    # the head-only tokenization of long texts equals whole-text tokenization with the real BPE tokenizer
    import lessdb.models.tokenization as T

    long_conv = [{"role": "user", "content": "\n".join(f"Point {i}: explain why sky is blue, briefly." for i in range(200))},
                 {"role": "assistant", "content": "Rayleigh scattering.\n" * 200}]
    head = encode_conversation(tok, long_conv, 256)
    saved, T.HEAD_CHARS_PER_TOKEN = T.HEAD_CHARS_PER_TOKEN, 10**9
    try:
        whole = encode_conversation(tok, long_conv, 256)
    finally:
        T.HEAD_CHARS_PER_TOKEN = saved
    assert (head.input_ids, head.labels) == (whole.input_ids, whole.labels) and head.truncated
    # one real optimizer step of LoRA on it
    peft_model = build_lora_model(model, LoraSettings(r=8, alpha=32), seed=0)
    settings = TrainingSettings(epochs=1, batch_size=1, micro_batch_size=1, warmup_ratio=0.0, lr=1e-3,
                                max_seq_length=256)
    before = {n: p.detach().clone() for n, p in peft_model.named_parameters() if p.requires_grad}
    trainer = LoraTrainer(peft_model, [enc], settings, tmp_path / "run", pad_token_id=pad_token_id(tok),
                          device="cpu", progress=False)
    (result,) = trainer.train()
    assert torch.isfinite(torch.tensor(result.train_loss)) and 0 < result.train_loss < 5  # it knows Paris
    changed = [n for n, p in peft_model.named_parameters() if p.requires_grad and not torch.equal(before[n], p)]
    assert any(".lora_B." in n for n in changed)
