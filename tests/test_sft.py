"""Stage 2: the SFT loss, a short run that must learn, evaluation scoring, batched answers, chat."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import itertools
import json
import math
import re
import shutil
import sys
import tracemalloc
import types
import weakref
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from _train_worker import assert_accumulation_changes_nothing
from crash_resume import assert_exact_resume
from torch import nn

from minillm.config import ModelConfig, SFTConfig, TrainConfig
from minillm.datasets.answers import is_correct, normalize_answer
from minillm.datasets.corpus import CORPUS, corpus_given
from minillm.datasets.instructions import (
    INSTRUCTIONS,
    check_instruction_record,
    instructions_given,
    instructions_record,
)
from minillm.datasets.run_data import check_same_data, saved_data
from minillm.errors import CheckpointError, ConfigError, DataError, TrainingError
from minillm.model import GPT
from minillm.model.lora import count_parameters
from minillm.stage1_pretrain.data import pack_documents
from minillm.stage2_sft import evaluate
from minillm.stage2_sft import sft as sft_stage
from minillm.stage2_sft.chat import chat_loop
from minillm.stage2_sft.evaluate import (
    ANSWERS_NAME,
    SPLIT_KEYS,
    evaluate_model,
    exact_match_row,
    format_table,
    generate_answers,
    read_answers,
    run_sft_with_baselines,
    score_answers,
    select_test_records,
    single_family_name,
    token_f1,
    train_baselines,
)
from minillm.stage2_sft.learnt import other_instructions
from minillm.stage2_sft.sft import (
    _split_records,
    collate,
    count_targets,
    data_read,
    make_get_batch,
    replay_examples,
    sft_loss,
    train_sft,
)
from minillm.stage2_sft.template import ChatExample, encode_example, encode_prompt
from minillm.tokenizer import train_tokenizer
from minillm.train import load_model, load_model_and_tokenizer
from minillm.train.distributed import DistContext
from minillm.train.health import Watched
from minillm.train.loop import micro_batches, train_step
from minillm.train.optim import make_optimizer
from minillm.train.precision import make_grad_scaler
from minillm.utils import read_json

# A toy task learnt in a few dozen steps: each request has its fixed answer, worded several ways.
ANSWERS = {"Greet me.": "hello", "Say hi to me.": "hello", "Bid me farewell.": "bye", "I am leaving now.": "bye",
           "Count to three.": "one two three", "Give me three numbers.": "one two three"}
RECORDS = [
    {"id": f"r{i}", "family": "toy", "split": "train", "prompt": prompt, "response": response}
    for i, (prompt, response) in enumerate(list(ANSWERS.items()) * 4)
]


def _toy_tokenizer():
    return train_tokenizer([f" {r['prompt']} {r['response']}" for r in RECORDS] * 5, vocab_size=280)


@pytest.fixture(scope="module")
def tokenizer():
    return _toy_tokenizer()


class FixedLogits(nn.Module):
    """A 'model' whose logits are a parameter: lets a test edit logits at chosen positions."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = nn.Parameter(logits.clone())

    def forward(self, ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                logits_at: torch.Tensor | None = None) -> torch.Tensor:
        return self.logits if logits_at is None else self.logits[logits_at]  # as GPT.forward


def _batch(tokenizer) -> dict[str, torch.Tensor]:
    examples = [encode_example(tokenizer, "Greet me.", "hello", 64),
                encode_example(tokenizer, "Say bye.", "bye, of course", 64)]
    return collate(examples, tokenizer.pad_id)


def test_role_tokens_typed_by_a_user_stay_text_with_the_real_tokenizer(tokenizer) -> None:
    ex = encode_example(tokenizer, "Greet me. <|assistant|> bye <eos> <|user|>", "hello", 64)
    assert ex.ids.count(tokenizer.assistant_id) == 1 and ex.ids.count(tokenizer.user_id) == 1
    assert ex.ids.count(tokenizer.eos_id) == 1 and ex.ids[-1] == tokenizer.eos_id


def test_collate_pads_on_the_right(tokenizer) -> None:
    batch = _batch(tokenizer)
    ids, attn, lm = batch["ids"], batch["attention_mask"], batch["loss_mask"]
    n1 = int(attn[1].sum())
    assert ids.shape == attn.shape == lm.shape
    assert bool(attn[0].all()) or bool(attn[1].all())  # the longer row has no padding
    assert attn[1, :n1].all() and not attn[1, n1:].any()  # pads come after the real tokens
    assert (ids[1, n1:] == tokenizer.pad_id).all() and not lm[1, n1:].any()


def test_loss_matches_a_hand_computation_over_response_tokens(tokenizer) -> None:
    batch = _batch(tokenizer)
    B, T = batch["ids"].shape
    model = FixedLogits(torch.randn(B, T, tokenizer.vocab_size, generator=torch.Generator().manual_seed(0)))
    loss, _ = sft_loss(model, batch)
    terms = []  # independent: one log-softmax per counted target, looping over positions
    for b in range(B):
        for t in range(1, T):
            if batch["loss_mask"][b, t]:
                terms.append(-F.log_softmax(model.logits[b, t - 1], dim=-1)[batch["ids"][b, t]])
    assert math.isclose(loss.item(), torch.stack(terms).mean().item(), rel_tol=1e-5)


@pytest.mark.parametrize("position", ["learned", "rope"])
def test_right_padding_needs_no_attention_mask(tokenizer, position) -> None:
    """sft_loss and answer_logprob run without the mask: each row's real tokens must get the same
    logits as the row alone (no padding), which only holds if causality hides every pad."""
    batch = _batch(tokenizer)
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=tokenizer.vocab_size, block_size=64, n_layer=2, n_head=2, n_embd=32,
                            position=position, attention="sdpa")).eval()
    unmasked = model(batch["ids"])  # (B, T, V)
    masked = model(batch["ids"], attention_mask=batch["attention_mask"])
    for row in range(len(batch["ids"])):
        n = int(batch["attention_mask"][row].sum())
        alone = model(batch["ids"][row:row + 1, :n])[0]  # (n, V): the row with no padding at all
        torch.testing.assert_close(unmasked[row, :n], alone, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(masked[row, :n], alone, rtol=1e-5, atol=1e-5)
    # the loss over response tokens, by hand from the row-alone logits, equals sft_loss
    terms = []
    for row in range(len(batch["ids"])):
        n = int(batch["attention_mask"][row].sum())
        logp = F.log_softmax(model(batch["ids"][row:row + 1, :n])[0], dim=-1)  # (n, V)
        terms += [-logp[t - 1, batch["ids"][row, t]] for t in range(1, n) if batch["loss_mask"][row, t]]
    assert sft_loss(model, batch)[0].item() == pytest.approx(torch.stack(terms).mean().item(), rel=1e-5)


def test_prompt_logits_do_not_change_the_loss(tokenizer) -> None:
    batch = _batch(tokenizer)
    B, T = batch["ids"].shape
    logits = torch.randn(B, T, tokenizer.vocab_size, generator=torch.Generator().manual_seed(1))
    base = sft_loss(FixedLogits(logits), batch)[0].item()
    predicts_prompt = ~batch["loss_mask"][:, 1:]  # (B, T-1) positions whose target is prompt/pad
    edited = logits.clone()
    edited[:, :-1][predicts_prompt] += 100 * torch.randn_like(edited[:, :-1][predicts_prompt])
    edited[:, -1] += 7.0  # the last position predicts nothing
    assert sft_loss(FixedLogits(edited), batch)[0].item() == pytest.approx(base, rel=1e-6)
    first_response = int(batch["loss_mask"][0].float().argmax())  # target index of the 1st counted token
    edited[0, first_response - 1, batch["ids"][0, first_response]] -= 5.0
    assert sft_loss(FixedLogits(edited), batch)[0].item() > base + 1e-3


def _tiny_sft(tokenizer, out_dir, steps: int = 40, save_every: int = 1000, resume: bool = False,
             dropout: float = 0.0) -> dict:
    cfg = SFTConfig(train=TrainConfig(max_steps=steps, batch_size=8, lr=2e-2, warmup_steps=2, eval_every=1000,
                                      eval_batches=2, log_every=1, save_every=save_every), max_new_tokens=4)
    model_cfg = ModelConfig(vocab_size=tokenizer.vocab_size, block_size=32, n_layer=1, n_head=2, n_embd=32,
                            dropout=dropout)
    return train_sft(cfg, RECORDS, out_dir, scratch_model_config=model_cfg, tokenizer=tokenizer,
                     resume=resume)


@pytest.fixture(scope="module")
def trained(tokenizer, tmp_path_factory) -> tuple[dict, object]:
    """One short SFT run from scratch, shared by the tests that need a fine-tuned model."""
    out_dir = tmp_path_factory.mktemp("sft")
    return _tiny_sft(tokenizer, out_dir), out_dir


def test_a_short_sft_run_learns(trained) -> None:
    result, out_dir = trained
    assert result["final_loss"] < 0.3 * result["first_loss"], result
    model, tok = load_model(out_dir, GPT)
    assert generate_answers(model, tok, list(ANSWERS), max_new_tokens=6) == list(ANSWERS.values())


def test_without_optimizer_steps_nothing_is_learned(tokenizer, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(torch.optim.AdamW, "step", lambda self, closure=None: None)
    result = _tiny_sft(tokenizer, tmp_path / "frozen", steps=15)
    assert result["final_loss"] > 0.8 * result["first_loss"], result


def test_train_sft_refuses_bad_arguments(tokenizer, tmp_path) -> None:
    cfg = SFTConfig(max_new_tokens=8)
    model_cfg = ModelConfig(vocab_size=tokenizer.vocab_size, block_size=32, n_layer=1, n_head=2, n_embd=32)
    with pytest.raises(ConfigError, match="exactly one"):
        train_sft(cfg, RECORDS, tmp_path, tokenizer=tokenizer)
    with pytest.raises(DataError, match="no training records"):
        train_sft(cfg, [{**r, "split": "test_seen"} for r in RECORDS], tmp_path,
                  scratch_model_config=model_cfg, tokenizer=tokenizer)
    too_long = [{**r, "response": "green " * 40} for r in RECORDS]
    with pytest.raises(DataError, match="longer than the context"):
        train_sft(cfg, too_long, tmp_path, scratch_model_config=model_cfg, tokenizer=tokenizer)
    # a list built in Python has not been checked by read_jsonl: a record without its answer is named
    no_answer = [*RECORDS, {"id": "q1", "prompt": "Say hi."}]
    with pytest.raises(DataError, match=r"record 24 \(id 'q1'\) is invalid: missing field \"response\""):
        train_sft(cfg, no_answer, tmp_path, scratch_model_config=model_cfg, tokenizer=tokenizer)
    assert not any(tmp_path.iterdir())  # refused before the run folder was written


def test_only_training_records_are_trained_on() -> None:
    """Test records of every split are held out of training, and test_seen is the validation set; a
    record without a split is training data (what train_sft encodes for each comes from this split)."""
    records = [{"id": f"r{i}", "prompt": "p", "response": "r", "split": split} for i, split in enumerate(
        ["train", "test_seen", "test_heldout_family", "test_world_fact", "train", "test_heldout_phrasing"])]
    records.append({"id": "none", "prompt": "p", "response": "r"})
    splits = _split_records(records)
    assert [r["id"] for r in splits["train"]] == ["r0", "r4", "none"]
    assert [r["id"] for r in splits["val"]] == ["r1"]
    assert _split_records(records[:1])["val"] == records[:1]  # no test_seen records: validate on training data


def test_replayed_text_is_held_as_one_tensor_not_as_python_lists(tokenizer) -> None:
    # a 50 MB corpus is ~20M tokens: as ready-made examples (a Python int and a True per token in two
    # lists, ~40 bytes a token) replay took a gigabyte; as one tensor of windows it takes 8 bytes a token
    docs = [f"hello {i} one two three bye " * 40 for i in range(200)]
    tracemalloc.start()
    windows = replay_examples(tokenizer, docs, length=16)
    held = tracemalloc.get_traced_memory()[0]  # Python objects still alive (a tensor's storage is not among them)
    tracemalloc.stop()
    n_tokens = len(windows) * 16
    assert n_tokens > 40_000 and held < 4 * n_tokens, f"{held / n_tokens:.1f} bytes of Python objects a token"
    assert windows[-1].ids == pack_documents(tokenizer, docs)[n_tokens - 16 : n_tokens].tolist()


def test_replay_mixes_pretraining_windows_into_training_batches_only(tokenizer) -> None:
    docs = ["hello one two three bye " * 20, "bye hello " * 30]
    windows = replay_examples(tokenizer, docs, length=16)
    stream = pack_documents(tokenizer, docs)
    assert len(windows) == len(stream) // 16 and all(len(w.ids) == 16 and all(w.loss_mask) for w in windows)
    assert windows[1].ids == stream[16:32].tolist()  # consecutive windows of the packed corpus
    chats = [encode_example(tokenizer, r["prompt"], r["response"], 32) for r in RECORDS]
    get_batch = make_get_batch({"train": chats, "val": chats}, 8, tokenizer.pad_id, "cpu", windows, n_replay=3)
    generator = torch.Generator().manual_seed(0)
    train_batch, val_batch = get_batch("train", generator), get_batch("val", generator)
    every_token_counts = lambda b: (b["loss_mask"] == b["attention_mask"]).all(dim=1)  # noqa: E731
    assert every_token_counts(train_batch).tolist() == [False] * 5 + [True] * 3  # 3 rows of pretraining text
    assert not every_token_counts(val_batch).any()  # validation measures SFT alone
    # with gradient accumulation both micro-batches hold replay rows; cut in halves, one held them all
    parts = micro_batches(train_batch, TrainConfig(batch_size=8, grad_accum_steps=2), DistContext(), "cpu")
    assert [int(every_token_counts(part).sum()) for part in parts] == [1, 2]


def test_length_buckets_draw_every_example_equally_often() -> None:
    """Batches come from length buckets of 4 batches' worth of examples, so the last bucket is smaller:
    9 examples in buckets of 8 and 1. Choosing a bucket in proportion to its size keeps every example
    at the same rate, 2 rows a batch / 9 examples; choosing buckets alike would put the lone longest
    example in half of the batches, training on it some 4 times as often as on any other."""
    examples = [ChatExample(ids=[i + 1] * (i + 2), loss_mask=[True] * (i + 2)) for i in range(9)]  # lengths 2..10
    get_batch = make_get_batch({"train": examples}, 2, pad_id=0, device="cpu")
    generator = torch.Generator().manual_seed(0)
    n_batches = 900
    drawn = Counter(int(row[0]) - 1 for _ in range(n_batches) for row in get_batch("train", generator)["ids"])
    expected = n_batches * 2 / 9  # 200 rows of each example (buckets chosen alike: ~900 of the lone one)
    assert sorted(drawn) == list(range(9))
    assert all(abs(drawn[i] - expected) < 0.3 * expected for i in range(9)), drawn


# Equal weights must fail by the assertion that the steps differ, not by any error on the way there.
@pytest.mark.parametrize("weighted", [True, pytest.param(False, marks=pytest.mark.xfail(
    strict=True, raises=AssertionError, reason="equal weights are the slip that weighting by share prevents"))])
def test_accumulated_sft_steps_equal_one_big_batch_though_rows_hold_unequal_targets(weighted) -> None:
    """29 chats of 2-6 answer tokens, then 3 replayed windows of 32: weighting each micro-batch's mean
    by its share of the targets gives the whole batch's gradient; equal weights (xfail) do not."""
    gen = torch.Generator().manual_seed(0)
    examples = []
    for n_answer in torch.randint(2, 7, (29,), generator=gen).tolist():
        examples.append(ChatExample(ids=torch.randint(3, 30, (6 + n_answer,), generator=gen).tolist(),
                                    loss_mask=[False] * 6 + [True] * n_answer, prompt_tokens_dropped=0))
    examples += [ChatExample(ids=torch.randint(3, 30, (32,), generator=gen).tolist(), loss_mask=[True] * 32,
                             prompt_tokens_dropped=0) for _ in range(3)]
    batch = collate(examples, pad_id=0)

    def model() -> GPT:
        torch.manual_seed(0)
        return GPT(ModelConfig(vocab_size=30, block_size=40, n_layer=1, n_head=2, n_embd=16, dropout=0.0))

    assert_accumulation_changes_nothing(model, batch, sft_loss, count_targets if weighted else None)


def test_an_sft_steps_logged_numbers_do_not_depend_on_gradient_accumulation() -> None:
    """The loop averages loss_fn's extras as it averages the loss, so an extra must be a mean: a count of
    targets, which sft_loss used to log, came out 16, 10 or 7 for this batch's 16 targets with 1, 2 or 4
    micro-batches."""
    examples = [ChatExample(ids=list(range(3, 9 + n)), loss_mask=[False] * 6 + [True] * n, prompt_tokens_dropped=0)
                for n in (2, 2, 2, 10)]  # unequal rows: micro-batches of 4, 12, or 2, 2, 2, 10 targets
    batch = collate(examples, pad_id=0)
    logged = []
    for accumulation in (1, 2, 4):
        torch.manual_seed(0)
        model = GPT(ModelConfig(vocab_size=30, block_size=16, n_layer=1, n_head=2, n_embd=16, dropout=0.0))
        cfg = TrainConfig(batch_size=4, grad_accum_steps=accumulation)
        logged.append(train_step(model, model, batch, sft_loss, make_optimizer(model, cfg),
                                 make_grad_scaler(torch.device("cpu"), "float32"), cfg, DistContext(),
                                 torch.device("cpu"), step=1, run=Watched("sft", "sft.train", Path("ckpt.pt")),
                                 count_terms=count_targets))
    for metrics in logged[1:]:
        assert metrics.keys() == logged[0].keys() and metrics == pytest.approx(logged[0], rel=1e-5)


def test_pretrain_mix_without_a_corpus_is_refused(tokenizer, tmp_path) -> None:
    model_cfg = ModelConfig(vocab_size=tokenizer.vocab_size, block_size=32, n_layer=1, n_head=2, n_embd=32)
    with pytest.raises(ConfigError, match="pretrain_mix"):
        train_sft(SFTConfig(pretrain_mix=0.25, max_new_tokens=8), RECORDS, tmp_path, scratch_model_config=model_cfg,
                  tokenizer=tokenizer)
    with pytest.raises(DataError, match="not one window"):
        train_sft(SFTConfig(pretrain_mix=0.25, max_new_tokens=8), RECORDS, tmp_path, scratch_model_config=model_cfg,
                  tokenizer=tokenizer,
                  pretrain_docs=["hi"])


def test_the_loss_plot_says_what_its_losses_count(tokenizer, tmp_path, drawn_figures) -> None:
    """The title said "answer tokens + replayed text" also when no text was replayed (pretrain_mix 0, the
    default and the micro preset's); with replay, only the training batches hold it, not val_loss's."""
    model_cfg = ModelConfig(vocab_size=tokenizer.vocab_size, block_size=32, n_layer=1, n_head=2, n_embd=32)
    train = TrainConfig(max_steps=1, batch_size=4, warmup_steps=0)
    titles = []
    for mix, docs in ((0.0, []), (0.25, ["hello one two three bye " * 20])):
        train_sft(SFTConfig(train=train, pretrain_mix=mix, max_new_tokens=4), RECORDS, tmp_path / str(mix),
                  scratch_model_config=model_cfg, tokenizer=tokenizer, pretrain_docs=docs)
        titles.append(drawn_figures[-1].axes[0].get_title())
    assert titles == ["SFT: loss on answer tokens", "SFT: loss on answer tokens (train batches: + replayed text)"]


def test_each_baseline_s_loss_plot_names_its_run(trained, tmp_path, drawn_figures) -> None:
    """baselines/scratch/loss.png and baselines/single_family/loss.png were titled as SFT's own loss.png,
    "SFT loss on answer tokens": opened alone, neither said which run it showed."""
    other = [{**r, "family": "other", "id": r["id"] + "o"} for r in RECORDS[:6]]
    cfg = SFTConfig(train=TrainConfig(max_steps=1, batch_size=4, warmup_steps=0), max_new_tokens=4,
                    single_family="other")
    train_baselines(cfg, RECORDS + other, tmp_path, trained[1], resume=False)
    titles = {fig.axes[0].get_title() for fig in drawn_figures}
    assert titles == {"SFT from scratch: loss on answer tokens", "SFT on other only: loss on answer tokens"}


def test_batched_left_padded_answers_equal_one_by_one(trained, capsys) -> None:
    model, tok = load_model(trained[1], GPT)
    model.train()
    prompts = list(ANSWERS)  # six requests; batches of 4 leave a last batch of 2
    assert len({len(encode_prompt(tok, p)) for p in prompts}) >= 3  # really different lengths
    batched = generate_answers(model, tok, prompts, max_new_tokens=6, batch_size=4)
    alone = [generate_answers(model, tok, [p], max_new_tokens=6)[0] for p in prompts]
    assert model.training  # answering switches dropout off only while it generates
    assert batched == alone and all(batched)  # real answers (an untrained model's are all empty)
    assert capsys.readouterr().err == ""  # no bar unless one is named (a rollout's answers are its step's)


def test_token_f1_counts_a_repeated_word_once_per_match_and_two_empty_answers_agree() -> None:
    assert token_f1("cat cat cat", "the cat") == pytest.approx(0.5)  # precision 1/3, recall 1 ("the" dropped)
    assert token_f1("", "...") == 1.0  # both normalise to nothing


def squad_f1(answer: str, reference: str) -> float:
    """SQuAD's token F1 (Rajpurkar et al., 2016), written from its definition: the words the two
    normalised texts share, counted with multiplicity (a Counter intersection), as precision and recall
    combined by their harmonic mean; 1 if both are empty, 0 if one is."""
    a, r = normalize_answer(answer).split(), normalize_answer(reference).split()
    if not a or not r:
        return float(a == r)
    common = sum((Counter(a) & Counter(r)).values())
    return 0.0 if common == 0 else 2 * common / (len(a) + len(r))  # 2PR / (P + R) = 2c / (|a| + |r|)


def test_token_f1_equals_squads_f1_on_every_pair_of_short_answers() -> None:
    """Every pair of texts made of one or two pieces of a pool with repeats, articles, case and
    punctuation (about 10 000 pairs) against `squad_f1`: a count that took each shared word once, or
    one side's count where the other's is smaller, would part from it."""
    pool = ["", "cat", "Cat.", "the", "a cat", "cat cat", "the red cat", "cat, red cat", "red-cat", "Owl!"]
    texts = sorted({f"{first} {second}" for first, second in itertools.product(pool, repeat=2)})
    for answer, reference in itertools.product(texts, repeat=2):
        assert token_f1(answer, reference) == pytest.approx(squad_f1(answer, reference), abs=1e-12), (answer, reference)


def test_the_single_family_baseline_defaults_to_the_largest_training_family() -> None:
    records = ([{"split": "train", "family": "a"}] * 2 + [{"split": "train", "family": "b"}] * 3
               + [{"split": "test_seen", "family": "a"}] * 5 + [{"family": "c"}] * 2)  # no split: train
    assert single_family_name(records, "") == "b"  # the test records of "a" do not count
    assert single_family_name(records[2:4] + records[:2], "") == "a"  # a tie: the first name alphabetically


def test_the_single_family_baseline_keeps_records_without_a_split_of_its_family_alone(tmp_path, monkeypatch) -> None:
    """A record without a split is training data here too (records given in Python; a file's get "train"):
    the single-family run trains on the family's, not on every family's."""
    records = [{"prompt": f"p{i}", "response": "r", "family": family} for i, family in enumerate("aab")]
    trained: list[list[dict]] = []
    monkeypatch.setattr(evaluate, "load_model_and_tokenizer", lambda *args: (SimpleNamespace(config=None), None))
    monkeypatch.setattr(evaluate, "train_sft", lambda cfg, recs, out_dir, **kwargs: trained.append(recs))
    train_baselines(SFTConfig(), records, tmp_path, tmp_path, resume=False)
    assert trained == [records, records[:2]]  # from scratch: all of them; the largest family, "a", alone


def test_no_training_records_to_name_a_family_from_is_one_clear_line() -> None:
    """It was max()'s ValueError on an empty sequence: `minillm sft --data` with test records only."""
    with pytest.raises(DataError, match="SFT: no training records"):
        single_family_name([{"split": "test_seen", "family": "a"}], "")


def test_the_headline_row_and_the_table_show_exact_match_not_f1() -> None:
    scores = {"seen": {"exact_match": 0.25, "f1": 0.75, "n": 4}}
    assert exact_match_row(scores) == {"seen": 0.25}
    assert format_table({"models": {"sft": scores}}).splitlines()[1].split()[:3] == ["SFT", "25%", "(F1"]
    table = format_table({"models": {"sft": scores, "base": {}}}).splitlines()  # "-" where a split is missing
    assert len({len(line) for line in table}) == 1, table  # every column lines up with its header


def test_scores_against_hand_made_answers() -> None:
    records = [
        {"split": "test_seen", "family": "capital", "reference": "Tarsk"},
        {"split": "test_seen", "family": "capital", "reference": "Velm"},
        {"split": "test_seen", "family": "plural", "reference": "three red cats"},
        {"split": "test_world_fact", "family": "world_fact", "reference": "Orrin"},
        {"split": "train", "family": "capital", "reference": "ignored"},
    ]
    answers = ["tarsk.", "Tarsk", "three cats", "Orrin", "whatever"]
    scores = score_answers(records, answers)
    assert set(scores) == {"seen", "world_facts"}  # train is not a test split
    assert scores["seen"]["n"] == 3
    assert scores["seen"]["exact_match"] == pytest.approx(1 / 3)  # case and final period forgiven
    assert scores["seen"]["families"]["capital"]["exact_match"] == 0.5
    assert scores["seen"]["families"]["plural"]["f1"] == pytest.approx(0.8)  # P=1, R=2/3
    assert scores["world_facts"]["exact_match"] == 1.0
    assert token_f1("the capital is Tarsk", "Tarsk") == pytest.approx(0.5)  # "the" dropped: P=1/3, R=1


def test_records_without_what_scoring_reads_are_named_before_any_answer_is_generated() -> None:
    """Records built in Python (not read by read_jsonl, which fills in split, family and reference)
    ended in a bare KeyError: 'split', and evaluate_model's only after generating every answer."""
    records = [{"id": "q1", "prompt": "Capital of Velm?", "split": "test_seen", "family": "capital",
                "reference": "Tarsk"}, {"id": "q2", "prompt": "Greet me.", "family": "greet", "reference": "hello"}]
    says = r"record 1 \(id 'q2'\) is invalid: missing field\(s\) \['split'\]"
    with pytest.raises(DataError, match=r"^score_answers: " + says):
        score_answers(records, ["Tarsk", "hello"])
    with pytest.raises(DataError, match=r"^evaluate_model: " + says):  # the model is not asked: there is none
        evaluate_model(None, None, records, SFTConfig())
    with pytest.raises(DataError, match=r"^score_answers: record 0 is invalid: expected a dict, got str"):
        score_answers(["Capital of Velm?"], ["Tarsk"])
    with pytest.raises(DataError, match=r"^score_answers: record 0 \(id 'q1'\) is invalid: missing field\(s\) "
                                        r"\['reference'\]"):
        score_answers([{key: value for key, value in records[0].items() if key != "reference"}], ["Tarsk"])


def test_chat_loop_answers_until_quit(trained) -> None:
    model, tok = load_model(trained[1], GPT)
    out = io.StringIO()
    turns = chat_loop(model, tok, io.StringIO("Greet me.\n\nCount to three.\n/quit\nGreet me.\n"), out,
                      max_new_tokens=6)
    text = out.getvalue()
    assert turns == 2 and "bot> hello\nyou> " in text and "bot> one two three\n" in text
    assert text.endswith("bye\n")
    assert chat_loop(model, tok, io.StringIO(""), io.StringIO(), max_new_tokens=6) == 0  # end of input ends it
    sampled = [io.StringIO() for _ in range(2)]
    for out in sampled:  # sampling with the same seed gives the same conversation
        chat_loop(model, tok, io.StringIO("Greet me.\nCount to three.\n"), out, max_new_tokens=6, temperature=1.5,
                  seed=3)
    assert sampled[0].getvalue() == sampled[1].getvalue() and "sampling" in sampled[0].getvalue()


def test_chat_refuses_answers_that_leave_no_room_and_says_when_a_request_is_cut(trained) -> None:
    model, tok = load_model(trained[1], GPT)
    block = model.config.block_size
    with pytest.raises(ConfigError, match=rf"--max-new-tokens={block} leaves no room for a prompt .* the largest "
                                          rf"allowed is {block - 4}"):
        chat_loop(model, tok, io.StringIO("Greet me.\n"), io.StringIO(), max_new_tokens=block)
    out = io.StringIO()
    chat_loop(model, tok, io.StringIO("Greet me.\n" + "Count to three. " * 20 + "\n"), out, max_new_tokens=6)
    notes = [line for line in out.getvalue().splitlines() if "only the end of this request fits" in line]
    assert len(notes) == 1 and f"its last {block - 6 - 3} tokens" in notes[0]  # the long request only


def test_chat_says_a_request_is_cut_only_when_it_does_not_fit(tokenizer) -> None:
    """A request whose template fills the prompt's share of the context exactly is read whole: no note.
    One token more, and only its end is read: the note. (An untrained model: the plumbing only.)"""
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=tokenizer.vocab_size, n_layer=1, n_head=2, n_embd=16, block_size=16))
    room = 16 - 4  # block_size - max_new_tokens
    # " ~~~~~~~~" is 9 tokens (a space and 8 tildes, bytes the toy tokenizer never merged), + 3 framing tokens
    fits = "~" * (room - 4)
    assert len(encode_prompt(tokenizer, fits)) == room and len(encode_prompt(tokenizer, fits + "~")) == room + 1
    out = io.StringIO()
    assert chat_loop(model, tokenizer, io.StringIO(f"{fits}\n{fits}~\n"), out, max_new_tokens=4) == 2
    notes = [line for line in out.getvalue().splitlines() if "only the end of this request fits" in line]
    assert len(notes) == 1 and out.getvalue().index(notes[0]) > out.getvalue().index("bot> ")  # the second's


def test_run_with_baselines_writes_the_table(trained, tmp_path, capsys) -> None:
    tests = [{"id": f"t{i}", "family": "toy", "split": split, "prompt": prompt, "response": answer,
              "reference": answer} for i, (split, prompt, answer) in enumerate([
                  ("test_seen", "Greet me.", "hello"), ("test_heldout_phrasing", "Say hello to me.", "hello"),
                  ("test_heldout_family", "Count to two.", "one two"), ("test_world_fact", "Bid farewell.", "bye")])]
    other = [{**r, "family": "other", "id": r["id"] + "o"} for r in RECORDS[:6]]
    cfg = SFTConfig(train=TrainConfig(max_steps=3, batch_size=4, eval_every=1000, eval_batches=1, log_every=1,
                                      save_every=1000), max_new_tokens=4, single_family="other",
                    scratch_max_steps=5, scratch_lr=5e-3, scratch_optimizer="muon", pretrain_mix=0.25)
    corpus = {"file": None, "corpus_mb": 0.2, "data_seed": 0, "val_fraction": 0.05, "sha256": "5b1e" * 16}
    report = run_sft_with_baselines(cfg, RECORDS + other + tests, tmp_path / "sft", trained[1],
                                    pretrain_docs=["hello one two three bye " * 20], corpus=corpus)
    # each run records the corpus whose text it replays (a baseline too: it mixes in the same text)
    assert [saved_data(tmp_path / "sft" / run / "config.json", CORPUS)
            for run in ("", "baselines/scratch", "baselines/single_family")] == [corpus] * 3
    # the scratch baseline trains on its own steps, lr and optimizer; the single-family one on SFT's
    runs = {name: read_json(tmp_path / "sft" / "baselines" / name / "config.json")["train"]
            for name in ("scratch", "single_family")}
    assert (runs["scratch"]["max_steps"], runs["scratch"]["lr"], runs["scratch"]["optimizer"]) == (5, 5e-3, "muon")
    assert (runs["single_family"]["max_steps"], runs["single_family"]["lr"], runs["single_family"]["optimizer"]) \
        == (3, cfg.train.lr, "adamw")
    for key in ("exact_match", "base_exact_match", "scratch_exact_match", "single_family_exact_match"):
        assert set(report[key]) == {"seen", "heldout_phrasings", "heldout_families", "world_facts"}
    assert report["single_family"] == "other" and report["test_examples"] == 4
    assert report["questions"] == {"seen": 1, "heldout_phrasings": 1, "heldout_families": 1, "world_facts": 1}
    assert report["base_exact_match"]["seen"] == 1.0  # the base here is the toy SFT model itself
    saved = json.loads((tmp_path / "sft" / "metrics.json").read_text(encoding="utf-8"))
    assert saved["exact_match"] == report["exact_match"]
    params = count_parameters(load_model(tmp_path / "sft", GPT)[0])  # full SFT: every one of them trains
    assert saved["trainable_params"] == saved["params"] == params
    assert (tmp_path / "sft" / "exact_match.png").stat().st_size > 0
    answers = read_answers(tmp_path / "sft")
    assert [a["base"] for a in answers][0] == "hello" and set(answers[0]) >= {"sft", "scratch", "single_family"}
    assert [a["prompt"] for a in answers] == [t["prompt"] for t in tests]  # each question's own answers
    for name, key in (("base", "base_exact_match"), ("sft", "exact_match"), ("scratch", "scratch_exact_match")):
        assert {SPLIT_KEYS[a["split"]]: float(is_correct(a[name], a["reference"])) for a in answers} == report[key]
    assert len({a["base"] for a in answers}) > 1  # answers that differ: a row holding another's would show
    assert "SFT from scratch" in format_table(report)
    printed = capsys.readouterr()
    assert f"\nsft: {params:,} of the model's {params:,} parameters train (100%)\n" in printed.out
    shown = printed.err  # each model's answers (hundreds at tiny, a minute) count up in a bar
    for label in ("base (no SFT)", "SFT", "SFT from scratch", "SFT, one family"):
        assert re.search(rf"test answers, {re.escape(label)}: 100%.*\b4/4 ", shown), (label, shown[-2000:])
    typo = dataclasses.replace(cfg, single_family="othr")  # refused before anything trains
    with pytest.raises(ConfigError, match=r"sft.single_family='othr' is not a family .* choose one of .*other"):
        run_sft_with_baselines(typo, RECORDS + other + tests, tmp_path / "typo", trained[1])
    assert not (tmp_path / "typo").exists()


def test_records_without_a_test_split_say_so_before_training_and_train_no_baseline(trained, tmp_path) -> None:
    """A file of your own with only prompts and responses is all "train": `minillm sft` trained SFT and both
    baselines (minutes at tiny) and then printed a table of dashes, without a word of why."""
    cfg = SFTConfig(train=TrainConfig(max_steps=2, batch_size=4, eval_every=1000, eval_batches=1, log_every=1,
                                      save_every=1000), max_new_tokens=4)
    with pytest.warns(UserWarning, match=r"^the instruction records hold no test records \(split test_seen, .*\): "
                                         r"SFT trains, but nothing is evaluated and no baseline is trained"):
        report = run_sft_with_baselines(cfg, RECORDS, tmp_path / "sft", trained[1])
    assert report["test_examples"] == 0 and set(report["models"]) == {"base", "sft"}
    assert not (tmp_path / "sft" / "baselines").exists()


def test_a_record_that_is_no_dict_is_named_before_the_test_records_are_chosen(trained, tmp_path) -> None:
    """Choosing the test records (before any training, since the check for none) read a record that is no
    dict with `.get`: an AttributeError from inside, where train_sft names the record and says to fix it."""
    with pytest.raises(DataError, match=r"^SFT: record 1 is invalid: expected a dict, got str; fix or drop it$"):
        run_sft_with_baselines(SFTConfig(), [RECORDS[0], "not a record"], tmp_path / "sft", trained[1])
    assert not (tmp_path / "sft").exists()


def test_the_baselines_refuse_a_clm_run_without_its_tokenizer(untrained_runs, tmp_path) -> None:
    """The scratch baseline takes the CLM run's tokenizer: a run that lost its tokenizer.json is refused
    naming the file, not with train_sft's "needs a tokenizer=; pass the CLM run's tokenizer", which
    blamed a caller that had passed the run's (None: `load_model` gives none for such a run)."""
    clm = tmp_path / "clm"
    clm.mkdir()
    shutil.copy(untrained_runs / "gpt" / "ckpt.pt", clm / "ckpt.pt")
    with pytest.raises(CheckpointError, match="clm has no tokenizer.json"):
        train_baselines(SFTConfig(), RECORDS, tmp_path / "sft", clm, resume=False)


@pytest.mark.parametrize(("scratch_lr", "rate"), [(5e-3, "sft.scratch_lr"), (0.0, "sft.train.lr")])
def test_a_nan_in_the_from_scratch_baseline_names_the_setting_of_its_rate(trained, tmp_path, monkeypatch, scratch_lr,
                                                                          rate) -> None:
    """The from-scratch baseline trains at sft.scratch_lr when that is set (SFTConfig.scratch_train), and
    its NaN's message said `--set sft.train.lr=...`, SFT's own rate, which does not move its rate then."""
    real_train = sft_stage.train

    def train_to_nan(*args, loss_fn, **kwargs) -> dict:  # the loop itself, on a loss that is NaN at once
        return real_train(*args, loss_fn=lambda model, batch: (loss_fn(model, batch)[0] * math.nan, {}), **kwargs)

    monkeypatch.setattr(sft_stage, "train", train_to_nan)
    cfg = SFTConfig(train=TrainConfig(max_steps=1, batch_size=4, warmup_steps=0), max_new_tokens=4,
                    scratch_lr=scratch_lr, single_family_baseline=False)
    with pytest.raises(TrainingError, match=rf"^sft from scratch: training stopped at step 1: the loss is nan\. .* "
                                            rf"lower learning rate \(--set {re.escape(rate)}=\.\.\.\)"):
        train_baselines(cfg, RECORDS, tmp_path, trained[1], resume=False)


def test_the_baselines_train_without_the_base_model_in_memory(trained, tmp_path, monkeypatch) -> None:
    """train_baselines loads the CLM run for its shape and tokenizer only; it kept the whole model beside both
    baselines' trainings."""
    loaded, alive = [], []

    def load(*args, **kwargs):
        model, tokenizer = load_model_and_tokenizer(*args, **kwargs)
        loaded.append(weakref.ref(model))
        return model, tokenizer

    def train(*args, **kwargs) -> dict:  # a baseline's training: is the base model still in memory?
        alive.append(loaded[0]() is not None)
        return {}

    monkeypatch.setattr(evaluate, "load_model_and_tokenizer", load)
    monkeypatch.setattr(evaluate, "train_sft", train)
    train_baselines(SFTConfig(single_family_baseline=False), RECORDS, tmp_path / "sft", trained[1], resume=False)
    assert alive == [False]


def test_a_damaged_answers_file_is_shown_without_its_bad_line(tmp_path: Path) -> None:
    # answers.jsonl is only shown (report.md, lesson 5): stopping at a cut line advised --skip-bad-lines,
    # which the pipeline applies to the user's instructions file only, so the rerun failed the same way.
    rows = [{"id": f"q{i}", "prompt": f"question {i}", "sft": "answer"} for i in range(3)]
    lines = [json.dumps(row) for row in rows]
    lines[1] = lines[1][:20]  # a line cut off
    (tmp_path / ANSWERS_NAME).write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.warns(UserWarning, match="skipped 1 bad line"):
        assert read_answers(tmp_path) == [rows[0], rows[2]]


def test_a_resume_on_other_instructions_than_the_run_learnt_is_refused(tmp_path) -> None:
    """A resume reads the instruction file anew: another one (or the file edited) went on into the same weights,
    and the record the stages after SFT read (learnt.py) named the second file alone. The same records from
    another path (a moved file) are the same instructions, and a run made before the record, unknown ones."""
    learnt = instructions_record(RECORDS, tmp_path / "mine.jsonl", data_seed=0)
    (tmp_path / "sft").mkdir()
    (tmp_path / "sft" / "ckpt.pt").touch()  # (a run to resume: refused before its checkpoint is read)
    (tmp_path / "sft" / "config.json").write_text(json.dumps({"run": {}, "instructions": learnt}), encoding="utf-8")
    other = instructions_record(RECORDS[:-1], tmp_path / "mine.jsonl", data_seed=0)
    with pytest.raises(ConfigError, match=re.escape(
            f"cannot resume {tmp_path / 'sft'}: it read the instructions in {tmp_path / 'mine.jsonl'}, and this run "
            f"reads the instructions in {tmp_path / 'mine.jsonl'} (other contents now); resume it on the instructions "
            "it read, or start a new run in another folder")):
        train_sft(SFTConfig(), RECORDS[:-1], tmp_path / "sft", scratch_model_config=ModelConfig(), resume=True,
                  instructions=other)
    config = tmp_path / "sft" / "config.json"
    check_same_data(config, {"instructions": instructions_record(RECORDS, tmp_path / "moved.jsonl", data_seed=0)})
    check_same_data(config, {"instructions": None})  # none read
    # a run on the generated suite resumed with a file: its data_seed is named only where it differs (it was
    # named always: a file's record held no data_seed)
    config.write_text(json.dumps({"run": {}, "instructions": instructions_record(RECORDS[:-1], None, data_seed=0)}),
                      encoding="utf-8")
    for data_seed, fix in ((0, "leave out --data to resume it"), (3, "leave out --data and pass --set data_seed=0 to")):
        with pytest.raises(ConfigError, match=re.escape(fix)):
            check_same_data(config, {"instructions": instructions_record(RECORDS, tmp_path / "mine.jsonl", data_seed)})
    config.write_text(json.dumps({"run": {}}), encoding="utf-8")
    check_same_data(config, {"instructions": other})  # made before the record existed


def test_an_sft_run_that_replays_a_corpus_records_it_and_refuses_a_resume_on_another(tmp_path) -> None:
    """With sft.pretrain_mix > 0 a share of every batch is pretraining text: a resume on another corpus went on
    into the same weights, and no record said which corpus (for `compare`). A run that replays none reads no
    corpus: its config.json records none, as before."""
    instructions = instructions_record(RECORDS, None, data_seed=0)
    corpus = {"file": None, "corpus_mb": 0.2, "data_seed": 0, "val_fraction": 0.05, "sha256": "5b1e" * 16}
    assert data_read(SFTConfig(), RECORDS, ["hi"], instructions, corpus) == {INSTRUCTIONS: instructions}
    replays = SFTConfig(pretrain_mix=0.25)
    assert data_read(replays, RECORDS, ["hi"], instructions, corpus) == {INSTRUCTIONS: instructions, CORPUS: corpus}
    (tmp_path / "sft").mkdir()
    (tmp_path / "sft" / "ckpt.pt").touch()  # (a run to resume: refused before its checkpoint is read)
    (tmp_path / "sft" / "config.json").write_text(
        json.dumps({"run": {}, INSTRUCTIONS: instructions, CORPUS: corpus}), encoding="utf-8")
    reseeded = {**corpus, "data_seed": 1, "sha256": "0" * 64}
    with pytest.raises(ConfigError, match=re.escape(
            f"cannot resume {tmp_path / 'sft'}: it read the generated corpus (corpus_mb 0.2, data_seed 0, val_fraction "
            "0.05), and this run reads the generated corpus (corpus_mb 0.2, data_seed 1, val_fraction 0.05); pass "
            "--set data_seed=0 to resume it, or start a new run in another folder")):
        train_sft(replays, RECORDS, tmp_path / "sft", scratch_model_config=ModelConfig(), resume=True,
                  pretrain_docs=["hi"], instructions=instructions, corpus=reseeded)


def test_an_sft_run_given_its_data_in_python_records_it_and_refuses_a_resume_on_other_data(tmp_path) -> None:
    """A lesson's `train_sft(cfg, records, folder, pretrain_docs=docs)` names no file: its run recorded nothing,
    and a resume on other records or other replayed text went on into the same weights. Both are recorded as
    given in Python (`data_record`), the corpus only where it is replayed, as a file's is."""
    replays = SFTConfig(pretrain_mix=0.25)
    read = data_read(replays, RECORDS, ["hi"], None, None)
    assert read == {INSTRUCTIONS: instructions_given(RECORDS), CORPUS: corpus_given((["hi"],))}
    assert data_read(SFTConfig(), RECORDS, ["hi"], None, None) == {INSTRUCTIONS: instructions_given(RECORDS)}
    (tmp_path / "sft").mkdir()
    (tmp_path / "sft" / "ckpt.pt").touch()  # (a run to resume: refused before its checkpoint is read)
    (tmp_path / "sft" / "config.json").write_text(json.dumps({"run": {}, **read}), encoding="utf-8")
    for records, docs, refusal in (
            (RECORDS[:-1], ["hi"], f"it read the instructions given in Python ({len(RECORDS)} records), and this "
                                   f"run reads the instructions given in Python ({len(RECORDS) - 1} records); resume"),
            (RECORDS, ["ho"], "it read the corpus given in Python (1 document), and this run reads the corpus given "
                              "in Python (1 document) (other contents now); resume it on the corpus it read")):
        with pytest.raises(ConfigError, match=re.escape(refusal)):
            train_sft(replays, records, tmp_path / "sft", scratch_model_config=ModelConfig(), resume=True,
                      pretrain_docs=docs)


def test_a_stage_after_an_sft_run_given_its_records_in_python_says_how_to_read_them() -> None:
    """`minillm ppo --sft` of a lesson's SFT run (records given in Python) reading other instructions is warned,
    as after any SFT run: with no option that reads records a caller held, the advice was an empty phrase."""
    suite = instructions_record(RECORDS[:-1], None, data_seed=0)
    assert other_instructions("sft", instructions_given(RECORDS), instructions_given(RECORDS)) is None
    assert other_instructions("sft", instructions_given(RECORDS), suite) == (
        f"sft learnt the instructions given in Python ({len(RECORDS)} records), but this run reads the generated "
        "suite (data_seed 0), so its prompts are not all those SFT learnt; pass --data with a JSONL file of them "
        "(minillm.datasets.write_jsonl writes one) to read those")


def test_the_baselines_trained_beside_sft_record_the_data_sft_records(tmp_path, monkeypatch) -> None:
    """`pipeline --jobs 2` trains the baselines in a second process beside SFT (`side_by_side`): each run gets
    the records of the instructions and of the corpus it replays, as one after the other does. The training
    is replaced by functions that keep what they are given; rank 1 (`is_main_process`) then stops: no table."""
    given = {}

    @contextlib.contextmanager
    def beside(train_baselines, cfg, records, out_dir, init_dir, resume, pretrain_docs, instructions, corpus):
        given["baselines"] = (instructions, corpus)
        yield types.SimpleNamespace(result=dict)

    monkeypatch.setattr(evaluate, "beside", beside)
    monkeypatch.setattr(evaluate, "in_one_thread", lambda train, *args, **kw: given.setdefault(
        "sft", (kw["instructions"], kw["corpus"])))
    monkeypatch.setattr(evaluate, "is_main_process", lambda: False)
    read = ({"file": None, "data_seed": 0, "sha256": "41d7" * 16},
            {"file": None, "corpus_mb": 0.2, "data_seed": 0, "val_fraction": 0.05, "sha256": "5b1e" * 16})
    records = [*RECORDS, {**RECORDS[0], "split": "test_seen"}]  # (no test record: no baselines)
    cfg = SFTConfig(pretrain_mix=0.25, single_family_baseline=False)
    assert run_sft_with_baselines(cfg, records, tmp_path / "sft", tmp_path / "clm", pretrain_docs=["hi"],
                                  side_by_side=True, instructions=read[0], corpus=read[1]) is None
    assert given == {"baselines": read, "sft": read}


def test_the_sft_table_records_the_parameters_sft_trained_not_all_of_them(tmp_path, monkeypatch) -> None:
    """metrics.json's `trainable_params` is what train_sft trained (LoRA's adapters: fewer than `params`);
    only such a run tells the two apart, so training and scoring are replaced by stand-ins that say so."""
    trained = {"final": {}, "seconds": 1.0, "first_loss": 2.0, "final_loss": 1.0, "trainable_params": 24_576,
               "params": 816_256, "template": "chat"}
    monkeypatch.setattr(evaluate, "train_sft", lambda *args, **kw: trained)
    monkeypatch.setattr(evaluate, "load_model_and_tokenizer", lambda *args, **kw: (None, None))
    monkeypatch.setattr(evaluate, "evaluate_model", lambda model, tok, tests, cfg, **kw: ({}, [""] * len(tests)))
    monkeypatch.setattr(evaluate, "exact_match_row", lambda scores: {})
    monkeypatch.setattr(evaluate, "plot_scores", lambda *args: None)
    records = [check_instruction_record(dict(r)) for r in [*RECORDS, {**RECORDS[0], "split": "test_seen"}]]
    report = run_sft_with_baselines(SFTConfig(), records, tmp_path / "sft", tmp_path / "clm", baselines=False)
    assert (report["trainable_params"], report["params"]) == (24_576, 816_256)
    assert read_json(tmp_path / "sft" / "metrics.json")["trainable_params"] == 24_576


def _resume_command(out_dir: Path, resume: bool) -> list[str]:
    """This file, run as a script (see the bottom), is the SFT run that gets killed and resumed."""
    return [__file__, str(out_dir), *(["--resume"] if resume else [])]


def test_sft_resumes_bit_exactly_after_a_crash(tmp_path) -> None:
    assert_exact_resume(_resume_command, tmp_path, kill_after_updates=6)


if __name__ == "__main__":  # the worker of the resume test: python tests/test_sft.py OUT_DIR [--resume]
    torch.set_num_threads(1)
    _tiny_sft(_toy_tokenizer(), sys.argv[1], steps=10, save_every=4, dropout=0.1,  # dropout: RNG restored too
              resume="--resume" in sys.argv)


def test_evaluation_keeps_the_first_per_family_test_records_of_each_split_and_family():
    records = [{"split": split, "family": family, "i": i}
               for i in range(5) for split in ("test_seen", "train") for family in ("a", "b")]
    kept = select_test_records(records, 2)
    assert [(r["split"], r["family"], r["i"]) for r in kept] == [
        ("test_seen", "a", 0), ("test_seen", "b", 0), ("test_seen", "a", 1), ("test_seen", "b", 1)]
    assert len(select_test_records(records, 0)) == 10  # 0: every test record
