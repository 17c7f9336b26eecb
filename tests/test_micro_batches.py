"""Training micro-batches: bounded by count and, on a CPU, by padded tokens, and the trained adapter does not
depend on how a step is split (the step's loss is the sum of its micro-batches' token losses over the step's
token count)."""
from __future__ import annotations

import torch

from lessdb.runs.config import LoraSettings, TrainingSettings
from lessdb.models.tiny import tiny_llama, tiny_tokenizer
from lessdb.models.tokenization import encode_conversation, pad_token_id
from lessdb.runs.trainer import LoraTrainer, build_lora_model, micro_batches


def test_micro_batches_longest_first_within_count_and_token_cap():
    lengths = [30, 64, 10, 64, 50, 20]
    got = micro_batches([0, 1, 2, 3, 4, 5], lengths, 4, max_tokens=128)
    assert sorted(i for mb in got for i in mb) == [0, 1, 2, 3, 4, 5]
    assert [i for mb in got for i in mb] == [1, 3, 4, 0, 5, 2]          # longest first, ties by index
    assert all(len(mb) <= 4 and max(lengths[i] for i in mb) * len(mb) <= 128 for mb in got)
    assert got[0] == [1, 3]                                                # 2 x 64 fills the cap
    assert micro_batches([0, 1, 2, 3, 4, 5], lengths, 4) == [[1, 3, 4, 0], [5, 2]]   # no cap: count only


def _train(examples, micro: int, cap: int | None, tmp_path, monkeypatch):
    import lessdb.runs.trainer as training

    monkeypatch.setattr(training, "token_budget", lambda device: cap)
    model = build_lora_model(tiny_llama(0), LoraSettings(r=4, alpha=16, dropout=0.0), seed=0)
    settings = TrainingSettings(epochs=1, batch_size=len(examples), micro_batch_size=micro, warmup_ratio=0.0,
                                lr=1e-2, max_seq_length=128)
    trainer = LoraTrainer(model, examples, settings, tmp_path / f"run-{micro}-{cap}",
                          pad_token_id=pad_token_id(tiny_tokenizer()), device="cpu", progress=False)
    (result,) = trainer.train()
    return result.train_loss, {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def test_trained_adapter_does_not_depend_on_the_micro_batch_split(tmp_path, monkeypatch):
    tok = tiny_tokenizer()
    examples = [encode_conversation(tok, [{"role": "user", "content": "q" * (2 + 5 * i)},
                                          {"role": "assistant", "content": "answer " * (1 + i % 4)}], 128)
                for i in range(6)]
    longest = max(len(e.input_ids) for e in examples)
    whole_loss, whole = _train(examples, micro=6, cap=None, tmp_path=tmp_path, monkeypatch=monkeypatch)
    # a cap of the longest length: no two examples fit together, so every pass holds one example
    split_loss, split = _train(examples, micro=6, cap=longest, tmp_path=tmp_path, monkeypatch=monkeypatch)
    init = dict(build_lora_model(tiny_llama(0), LoraSettings(r=4, alpha=16, dropout=0.0), seed=0).named_parameters())
    assert any(not torch.equal(whole[n], init[n]) for n in whole)          # the step did change the adapter
    assert abs(whole_loss - split_loss) < 1e-5
    for name in whole:
        torch.testing.assert_close(split[name], whole[name], rtol=1e-4, atol=1e-6)
