"""Conversations to tokens: Tulu and chat-template formats, label masking, truncation, exclusion."""
from __future__ import annotations

import pytest
import torch

from lessdb.models.tiny import tiny_llama, tiny_tokenizer
from lessdb.models.tokenization import (IGNORE_INDEX, collate, conversation_format, encode_conversation,
                                 tokenizer_id)

CONV = [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4."}]
MULTI = [{"role": "system", "content": "Be brief."},
         {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
         {"role": "user", "content": "Bye"}, {"role": "assistant", "content": "Goodbye."}]

# A ChatML-like template (SmolLM2's shape) set on the tiny tokenizer for the chat-template path.
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def labelled_text(tok, enc) -> str:
    return tok.decode([t for t, l in zip(enc.input_ids, enc.labels) if l != IGNORE_INDEX])


def test_tulu_format_labels_only_assistant_content_and_eos():
    tok = tiny_tokenizer()
    assert conversation_format(tok) == "tulu"
    enc = encode_conversation(tok, CONV, 512)
    assert tok.decode(enc.input_ids) == "<|user|>\nWhat is 2+2?\n<|assistant|>\n4.</s>"
    assert labelled_text(tok, enc) == "4.</s>"
    assert enc.completion_tokens == len("4.") + 1  # byte tokens + EOS
    assert enc.prompt_tokens == len(enc.input_ids) - enc.completion_tokens
    assert not enc.truncated


def test_tulu_multi_turn_labels_every_assistant_turn():
    tok = tiny_tokenizer()
    enc = encode_conversation(tok, MULTI, 512)
    assert tok.decode(enc.input_ids).startswith("<|system|>\nBe brief.\n<|user|>\nHi\n<|assistant|>\nHello!</s>\n")
    # open-instruct labels "content + EOS + newline" of a non-final turn, "content + EOS" of the last
    assert labelled_text(tok, enc) == "Hello!</s>\nGoodbye.</s>"


def test_chat_template_path_labels_assistant_turns_and_end_of_turn():
    tok = tiny_tokenizer()
    tok.chat_template = CHATML
    assert conversation_format(tok) == "chat_template"
    enc = encode_conversation(tok, MULTI, 512)
    text = tok.decode(enc.input_ids)
    assert text == tok.apply_chat_template(MULTI, tokenize=False)
    assert labelled_text(tok, enc) == "Hello!<|im_end|>\nGoodbye.<|im_end|>\n"
    assert tokenizer_id(tok) != tokenizer_id(tiny_tokenizer())


def test_truncation_and_all_prompt_example_is_excluded():
    tok = tiny_tokenizer()
    long_prompt = [{"role": "user", "content": "x" * 300}, {"role": "assistant", "content": "answer"}]
    enc = encode_conversation(tok, long_prompt, 64)
    assert len(enc.input_ids) == 64 and len(enc.labels) == 64
    assert enc.truncated and enc.full_length > 64
    assert enc.completion_tokens == 0  # the caller must exclude it
    only_prompt = [{"role": "user", "content": "no answer here"}]
    assert encode_conversation(tok, only_prompt, 64).completion_tokens == 0
    partial = encode_conversation(tok, [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a" * 100}], 40)
    assert partial.truncated and 0 < partial.completion_tokens < 100


def test_changing_prompt_labels_changes_nothing_in_the_loss():
    """Only assistant positions carry a loss: whatever the labels under prompt positions say (or the logits
    there predict), the training loss is unchanged; changing one completion label does change it."""
    from lessdb.runs.trainer import token_ce_sum

    tok = tiny_tokenizer()
    model = tiny_llama(0)
    enc = encode_conversation(tok, MULTI, 512)
    batch = collate([enc], tok.pad_token_id)
    labels = batch["labels"]
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.detach()
    base, n = token_ce_sum(logits, labels)
    assert n == enc.completion_tokens and n == len("Hello!</s>\nGoodbye.</s>") - len("</s>") * 2 + 2
    # independent computation: mean CE over the labelled positions only, by hand
    logp = torch.log_softmax(logits[0].double(), dim=-1)
    manual = -sum(logp[t - 1, labels[0, t]] for t in range(1, labels.shape[1]) if labels[0, t] != IGNORE_INDEX)
    assert abs(base.item() - manual.item()) < 1e-3
    assert abs(base.item() / n - model(**batch).loss.item()) < 1e-5  # HF's own masked mean agrees
    prompt_pos = [t for t in range(1, labels.shape[1]) if labels[0, t] == IGNORE_INDEX]
    assert len(prompt_pos) > 10
    # the ids a prompt position "would" have as labels are -100: put arbitrary logits there -> same loss
    noisy = logits.clone()
    for t in prompt_pos:
        noisy[0, t - 1] = torch.randn_like(noisy[0, t - 1]) * 10
    assert token_ce_sum(noisy, labels)[0].item() == pytest.approx(base.item(), abs=1e-4)
    # a different prompt of the same token length: the completion labels are identical, prompt ones -100
    other = encode_conversation(tok, [{**m, "content": m["content"].upper()} if m["role"] != "assistant" else m
                                      for m in MULTI], 512)
    assert other.input_ids != enc.input_ids and other.labels == enc.labels
    changed = labels.clone()
    comp = [t for t in range(1, labels.shape[1]) if labels[0, t] != IGNORE_INDEX]
    changed[0, comp[-1]] = (changed[0, comp[-1]] + 7) % 260
    assert abs(token_ce_sum(logits, changed)[0].item() - base.item()) > 1e-4


def test_collate_right_pads_and_masks():
    tok = tiny_tokenizer()
    a = encode_conversation(tok, CONV, 512)
    b = encode_conversation(tok, MULTI, 512)
    batch = collate([a, b], tok.pad_token_id)
    assert batch["input_ids"].shape == (2, len(b.input_ids))
    assert batch["attention_mask"][0].sum().item() == len(a.input_ids)
    assert (batch["input_ids"][0, len(a.input_ids):] == tok.pad_token_id).all()
    assert (batch["labels"][0, len(a.input_ids):] == IGNORE_INDEX).all()
    assert batch["labels"].dtype == torch.long


def test_long_conversations_tokenize_only_their_head_with_identical_result(monkeypatch):
    """Long texts are cut at a newline before tokenizing; the kept tokens equal those of the whole text."""
    import lessdb.models.tokenization as T

    tok = tiny_tokenizer()
    tok.chat_template = CHATML
    long_conv = [{"role": "user", "content": "\n".join(f"line {i} of the question" for i in range(300))},
                 {"role": "assistant", "content": "\n".join(f"answer line {i}" for i in range(300))}]
    for max_len in (64, 300, 2000, 20000):
        head = encode_conversation(tok, long_conv, max_len)
        monkeypatch.setattr(T, "HEAD_CHARS_PER_TOKEN", 10**9)  # forces whole-text tokenization
        whole = encode_conversation(tok, long_conv, max_len)
        monkeypatch.undo()
        assert (head.input_ids, head.labels, head.truncated) == (whole.input_ids, whole.labels, whole.truncated)
        assert head.completion_tokens == whole.completion_tokens
