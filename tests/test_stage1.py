"""Stage 1: the MLM and CLM losses against hand computations, short runs that must learn, bad input."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from _plots import inside_its_figure
from _train_worker import assert_accumulation_changes_nothing
from crash_resume import assert_exact_resume
from torch import nn

from minillm.config import CLMConfig, MLMConfig, ModelConfig, TrainConfig, to_dict
from minillm.datasets import generate_corpus, split_documents
from minillm.datasets.corpus import corpus_given
from minillm.errors import ConfigError, DataError, ModelInputError
from minillm.model import GPT, Bert
from minillm.stage1_pretrain import clm as clm_module
from minillm.stage1_pretrain.clm import clm_loss, generate_text, perplexity, train_clm, unigram_perplexity
from minillm.stage1_pretrain.data import consecutive_windows, open_pretraining_run, pack_documents, random_windows
from minillm.stage1_pretrain.masking import IGNORE_INDEX
from minillm.stage1_pretrain.mlm import (
    FLASH_FLOOD,
    batch_loss,
    blank_last_word,
    count_blanks,
    demo_sentence,
    evaluate_mlm,
    fill_mask,
    mask_for_mlm,
    masked_accuracy,
    mlm_loss,
    plot_fill_mask,
    train_mlm,
    unigram_masked_loss,
)
from minillm.tokenizer import train_tokenizer
from minillm.train import load_model, save_checkpoint

SMALL_MODEL = dict(n_layer=1, n_head=2, n_embd=32, block_size=32)  # a model that learns in 30 steps on a CPU


@pytest.fixture(scope="module")
def corpus() -> tuple[list[str], list[str]]:
    """(train, validation) documents: 50 KB of generated text, a tenth held out."""
    docs = generate_corpus(seed=0, size_mb=0.05)
    return split_documents(docs, val_fraction=0.1, seed=0)


@pytest.fixture(scope="module")
def tokenizer(corpus):
    return train_tokenizer(corpus[0], 320, progress=False)  # 256 bytes, 6 special tokens, 58 merges


def _train_cfg(**kw) -> TrainConfig:
    """30 steps at a high rate (1e-2), so that a small model learns visibly; no evaluation and no
    checkpoint before the end (every 1000 steps), every step's loss logged."""
    base = dict(max_steps=30, batch_size=16, lr=1e-2, warmup_steps=3, eval_every=1000, eval_batches=2,
                log_every=1, save_every=1000, seed=0)
    return TrainConfig(**{**base, **kw})


def _mlm_cfg(**train_kw) -> MLMConfig:
    model = ModelConfig(norm="post", activation="gelu", layer_norm_eps=1e-12, **SMALL_MODEL)  # BERT's block
    return MLMConfig(model=model, train=_train_cfg(**train_kw))


def _clm_cfg(**train_kw) -> CLMConfig:
    return CLMConfig(model=ModelConfig(**SMALL_MODEL), train=_train_cfg(**train_kw))


def _train_losses(run_dir: Path) -> list[float]:
    """The training loss of every logged step of the run in run_dir, in order (from metrics.jsonl)."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    return [row["loss"] for row in rows if row.get("split") == "train"]


# --------------------------------------------------------------------------------------------------
# The losses, against independent computations.


def test_mlm_loss_is_cross_entropy_at_chosen_positions_only():
    logits = torch.tensor([[[2.0, 0.0, -1.0], [0.5, 0.5, 3.0], [1.0, 2.0, 0.0]]])  # (1, 3, V=3)
    labels = torch.tensor([[0, IGNORE_INDEX, 1]])

    def nll(row: list[float], target: int) -> float:  # -log softmax(row)[target], by hand
        return -(row[target] - math.log(sum(math.exp(v) for v in row)))

    expected = (nll([2.0, 0.0, -1.0], 0) + nll([1.0, 2.0, 0.0], 1)) / 2
    assert float(mlm_loss(logits, labels)) == pytest.approx(expected, rel=1e-6)


def test_mlm_loss_ignores_unchosen_positions():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 6, 10, generator=g)
    labels = torch.randint(0, 10, (2, 6), generator=g)
    labels[:, ::2] = IGNORE_INDEX
    unchosen = labels == IGNORE_INDEX
    changed = logits.clone()
    changed[unchosen] = torch.randn(int(unchosen.sum()), 10, generator=g) * 100
    assert torch.equal(mlm_loss(logits, labels), mlm_loss(changed, labels))
    changed[~unchosen] += torch.randn(int((~unchosen).sum()), 10, generator=g)
    assert not torch.allclose(mlm_loss(logits, labels), mlm_loss(changed, labels))


# Equal weights must fail by the assertion that the steps differ, not by any error on the way there.
@pytest.mark.parametrize("weighted", [True, pytest.param(False, marks=pytest.mark.xfail(
    strict=True, raises=AssertionError, reason="equal weights are the slip that weighting by share prevents"))])
def test_accumulated_mlm_steps_equal_one_big_batch_though_windows_hold_unequal_blanks(weighted):
    """Window r of 8 has r + 1 blanks: weighting each micro-batch's mean by its share of the blanks
    gives the whole batch's gradient; equal weights (xfail) do not."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 40, (8, 16), generator=g)  # (B, T)
    labels = torch.full_like(ids, IGNORE_INDEX)
    for r in range(8):
        labels[r, :r + 1] = ids[r, :r + 1]  # the blanks' answers; the input keeps them (as BERT's 10% kept)
    batch = {"input_ids": ids, "labels": labels}
    assert count_blanks(batch) == sum(range(1, 9))

    def model() -> Bert:
        torch.manual_seed(0)
        return Bert(ModelConfig(vocab_size=40, norm="post", activation="gelu", **SMALL_MODEL))

    assert_accumulation_changes_nothing(model, batch, batch_loss, count_blanks if weighted else None)


def test_train_mlm_weights_its_micro_batches_by_their_blanks(tmp_path, corpus, tokenizer):
    """One step of train_mlm, with the batch whole and in 4 micro-batches: the same step."""
    steps = []
    for k in (1, 4):
        train_mlm(_mlm_cfg(max_steps=1, grad_accum_steps=k), tokenizer, *corpus, tmp_path / str(k))
        metrics = (tmp_path / str(k) / "metrics.jsonl").read_text(encoding="utf-8")
        rows = [json.loads(line) for line in metrics.splitlines()]
        steps.append(next(row for row in rows if row.get("split") == "train"))
    assert steps[1]["grad_norm"] == pytest.approx(steps[0]["grad_norm"], rel=1e-4)
    assert steps[1]["loss"] == pytest.approx(steps[0]["loss"], rel=1e-4)


def test_mlm_loss_with_nothing_chosen_is_zero_not_nan():
    logits = torch.randn(1, 4, 5)
    assert float(mlm_loss(logits, torch.full((1, 4), IGNORE_INDEX))) == 0.0


class Predicts(nn.Module):
    """A stand-in model: at every position its logits favour `answer(ids)`, a (B, T) tensor of ids, by
    `margin` over every other token (margin 0: equal logits, whose perplexity is the vocabulary size)."""

    def __init__(self, vocab_size: int, answer: Callable[[torch.Tensor], torch.Tensor], margin: float = 1e4) -> None:
        super().__init__()
        self.vocab_size, self.answer, self.margin = vocab_size, answer, margin
        self.anchor = nn.Parameter(torch.zeros(()))  # so that the model has a device

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.margin * F.one_hot(self.answer(ids), self.vocab_size).float() + self.anchor  # (B, T, V)


def test_clm_loss_shifts_targets_and_perplexity_of_uniform_model_is_vocab_size():
    stream = torch.arange(1, 50) % 7
    uniform = Predicts(7, answer=torch.zeros_like, margin=0.0)
    assert perplexity(uniform, stream, block_size=8, batch_size=4)["val_perplexity"] == pytest.approx(7.0)

    knows_the_next = Predicts(7, answer=lambda ids: (ids + 1) % 7)  # loss 0 iff the shift is right
    ids = (torch.arange(9) % 7)[None]  # (1, T+1): 0 1 2 ... each token is the previous + 1
    with torch.no_grad():
        assert float(clm_loss(knows_the_next, ids)) == pytest.approx(0.0, abs=1e-6)


def test_perplexity_is_exp_of_the_mean_nll_over_every_scored_token():
    """Against a loop over the stream's tokens: a model that favours token (x + 1) % 7 after x by 1.5 is
    right on some tokens of a random stream and wrong on others, so windows differ in loss; 5 windows
    in batches of 3 end with a short batch, where a mean of the batches' means would weigh each token
    of the short batch 3/2 as much. Scored are tokens 1 .. 5 * 8 (each window's first is context)."""
    stream = torch.randint(7, (45,), generator=torch.Generator().manual_seed(0))  # room for 5 windows of 9
    model = Predicts(7, answer=lambda ids: (ids + 1) % 7, margin=1.5)
    nll = [-F.log_softmax(1.5 * F.one_hot((stream[i - 1] + 1) % 7, 7).double(), dim=-1)[stream[i]].item()
           for i in range(1, 41)]  # every target, predicted from the token before it
    result = perplexity(model, stream, block_size=8, batch_size=3)
    assert result["val_tokens"] == 40
    assert result["val_loss"] == pytest.approx(sum(nll) / 40, rel=1e-6)
    assert result["val_perplexity"] == pytest.approx(math.exp(sum(nll) / 40), rel=1e-6)


def test_unigram_perplexity_matches_hand_computation():
    train_stream, val_stream = torch.tensor([0, 0, 0, 1]), torch.tensor([2, 0, 1])
    # add-one counts over V=3: (4, 2, 1) / 7; block_size 2 scores val tokens 0 and 1 (the first is context)
    expected = math.exp(-(math.log(4 / 7) + math.log(2 / 7)) / 2)
    assert unigram_perplexity(train_stream, val_stream, 3, block_size=2) == pytest.approx(expected)


def test_packing_frames_each_document_and_windows_score_every_token_once(tokenizer):
    stream = pack_documents(tokenizer, ["one two", "three"])
    expected = [tokenizer.bos_id, *tokenizer.encode("one two"), tokenizer.eos_id,
                tokenizer.bos_id, *tokenizer.encode("three"), tokenizer.eos_id]
    assert stream.tolist() == expected
    windows = consecutive_windows(torch.arange(21), 5, 4, max_windows=100)  # (5, 5): T=4 targets each
    assert windows[:, 1:].flatten().tolist() == list(range(1, 21))


# --------------------------------------------------------------------------------------------------
# Short runs that must learn (they fail if backward or optimizer.step() is broken).


def test_tiny_mlm_run_learns(tmp_path, corpus, tokenizer, drawn_figures):
    metrics = train_mlm(_mlm_cfg(), tokenizer, *corpus, tmp_path)
    losses = _train_losses(tmp_path)
    assert len(losses) == 30
    assert sum(losses[-5:]) / 5 < losses[0] - 1.0, losses  # the last 5 steps' mean a nat below the first step
    assert metrics["val_masked_loss"] < math.log(tokenizer.vocab_size) - 1.0  # far from a uniform guess
    assert 0.0 <= metrics["val_masked_accuracy"] <= 1.0 and metrics["val_masked_positions"] > 0
    assert len(metrics["fill_mask_top5"]) == 5
    assert (tmp_path / "fill_mask.png").stat().st_size > 0
    assert json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))["val_masked_accuracy"] == \
        metrics["val_masked_accuracy"]
    specials = set(tokenizer.special_tokens.values())
    counts = Counter(i for i in pack_documents(tokenizer, corpus[0]).tolist() if i not in specials)
    assert metrics["unigram_prediction"] == tokenizer.id_to_piece(counts.most_common(1)[0][0])
    shares = [c / sum(counts.values()) for c in counts.values()]  # answering each blank with these frequencies
    assert metrics["unigram_masked_loss"] == pytest.approx(-sum(p * math.log(p) for p in shares))
    [dashed] = [line for fig in drawn_figures for line in fig.axes[0].lines if line.get_linestyle() == "--"][-1:]
    assert list(dashed.get_ydata()) == [metrics["unigram_masked_loss"]] * 2
    assert f"unigram loss {metrics['unigram_masked_loss']:.2f}" in dashed.get_label()


def test_the_unigram_masked_loss_is_the_cross_entropy_of_the_frequencies_with_themselves():
    """Tokens "a a b c" (ids 2, 2, 3, 4; the specials 0 and 1 are never a blank): guessing a 1/2, b 1/4,
    c 1/4 at every blank scores ln 2 at half of them and ln 4 at the rest, 1.5 ln 2 on average."""
    assert unigram_masked_loss(torch.tensor([0.0, 0.0, 2.0, 1.0, 1.0])) == pytest.approx(1.5 * math.log(2))


def test_tiny_clm_run_learns(tmp_path, corpus, tokenizer):
    metrics = train_clm(_clm_cfg(), tokenizer, *corpus, tmp_path)
    losses = _train_losses(tmp_path)
    assert sum(losses[-5:]) / 5 < losses[0] - 1.0, losses
    # Guessing uniformly has perplexity V; 30 steps learn at least the token frequencies.
    assert metrics["val_perplexity"] < tokenizer.vocab_size / 3
    assert metrics["unigram_perplexity"] < tokenizer.vocab_size / 3
    assert len(metrics["samples"]) == len(clm_module.SAMPLE_PROMPTS)
    model, saved_tokenizer = load_model(tmp_path, GPT)
    assert saved_tokenizer.encode("the river") == tokenizer.encode("the river")
    text = generate_text(model, tokenizer, "The", max_new_tokens=10, seed=3)
    assert text.startswith("The") and text == generate_text(model, tokenizer, "The", max_new_tokens=10, seed=3)


@pytest.mark.parametrize("train", [train_mlm, train_clm])
def test_a_finished_run_resumed_logs_its_final_evaluation_once(tmp_path, corpus, tokenizer, train):
    """A pipeline killed after a stage-1 step's final evaluation was logged, and before it recorded the
    step, resumes the run at its last step and evaluates again (as `--resume` of a finished run does):
    metrics.jsonl then held two "final" rows, and differed from an uninterrupted run's."""
    cfg = (_mlm_cfg if train is train_mlm else _clm_cfg)(max_steps=2, log_every=1000)
    train(cfg, tokenizer, *corpus, tmp_path)
    once = (tmp_path / "metrics.jsonl").read_text(encoding="utf-8")
    train(cfg, tokenizer, *corpus, tmp_path, resume=True)
    assert (tmp_path / "metrics.jsonl").read_text(encoding="utf-8") == once


def test_a_prompt_that_fills_the_window_is_named_as_such_not_as_max_new_tokens(tokenizer):
    """It was refused as "prompt (8) + max_new_tokens (1) = 9 exceeds block_size=8; shorten one of
    them", a max_new_tokens of 1 that nobody asked for (60 here) and that no shortening helps."""
    model = GPT(ModelConfig(vocab_size=tokenizer.vocab_size, n_layer=1, n_head=2, n_embd=16, block_size=8))
    prompt = "\x01" * 7  # 7 byte tokens: with <bos> they fill the 8-token window
    assert len(tokenizer.encode(prompt)) == 7
    for too_long in (prompt, prompt * 3):  # filling the window, and overflowing it
        with pytest.raises(ModelInputError, match="^the prompt is .* tokens with <bos>, and the model's context holds "
                                                  "8: no room is left to continue it; shorten the prompt to at most "
                                                  "6 tokens$"):
            generate_text(model, tokenizer, too_long, max_new_tokens=60)
    assert generate_text(model, tokenizer, prompt[:-1], max_new_tokens=60).startswith(prompt[:-1])  # room for 1


# --------------------------------------------------------------------------------------------------
# fill-mask.


KOREAN = ["오늘 서울에는 비가 많이 내리겠습니다. 내일 부산에는 바람이 강하게 불겠습니다.",
          "할머니는 시장에서 사과를 샀습니다. 아이들은 공원에서 공을 찼습니다.",
          "고양이가 창가에서 잠을 잤습니다. 기차는 정시에 역에 도착했습니다."] * 30


def test_blank_last_word_keeps_the_punctuation():
    assert blank_last_word("It rained all night.") == "It rained all [MASK]."
    assert blank_last_word("기차는 정시에 역에 도착했습니다.") == "기차는 정시에 역에 [MASK]."
    assert blank_last_word("Too short.") is None and blank_last_word("one two ...") is None


def test_the_demo_sentence_fits_the_window_and_comes_from_the_corpus_when_flash_floods_do_not(corpus, tokenizer):
    train_docs, val_docs = corpus
    assert demo_sentence(tokenizer, train_docs, val_docs, block_size=32) == FLASH_FLOOD  # the generated corpus
    korean = train_tokenizer(KOREAN, 300, progress=False)
    assert len(korean.encode(FLASH_FLOOD)) > 32  # the English demo does not fit a Korean tokenizer's window
    sentence = demo_sentence(korean, KOREAN, KOREAN[1:], block_size=32)
    assert sentence == "할머니는 시장에서 사과를 [MASK]."
    assert demo_sentence(korean, KOREAN, KOREAN, block_size=8) is None  # nothing fits: no demo, no crash


def test_a_validation_sentence_that_already_holds_a_blank_is_not_the_demo(tokenizer):
    """blank_last_word would give it a second [MASK], which fill_mask refuses: train_mlm used to end there."""
    assert blank_last_word("Type [MASK] where a word is hidden.") is None
    val = ["Type [MASK] where a word is hidden. The river rose in the night."]
    assert demo_sentence(tokenizer, val, val, block_size=32) == "The river rose in the [MASK]."


def test_clm_samples_only_the_prompts_that_fit_the_window(capsys):
    """A Korean tokenizer spells "A flash flood watch" in 19 tokens, more than a 16-token window
    holds: that prompt gets no sample, and a note says so."""
    tok = train_tokenizer(KOREAN, 300, progress=False)
    fits = [p for p in clm_module.SAMPLE_PROMPTS if len(tok.encode(p)) <= 14]  # <bos> + prompt + 1 new <= 16
    assert 0 < len(fits) < len(clm_module.SAMPLE_PROMPTS)
    model = GPT(ModelConfig(vocab_size=tok.vocab_size, n_layer=1, n_head=2, n_embd=16, block_size=16)).eval()
    samples = clm_module.sample_texts(model, tok, 16)
    assert len(samples) == len(fits)
    assert all(sample.startswith(prompt) for sample, prompt in zip(samples, fits, strict=True))
    assert "'A flash flood watch' leaves no room in the 16-token window" in capsys.readouterr().out


def test_clm_samples_of_a_corpus_of_your_own_start_from_its_text_not_our_worlds(tmp_path, corpus):
    """A run on a Korean (or any other) corpus used to sample "A flash flood watch" and "In the town
    of", our world's words, into its results and the pipeline's report.md. It starts from the
    opening words of its own validation documents now; the generated corpus keeps its prompts."""
    assert clm_module.sample_prompts(*corpus) == clm_module.SAMPLE_PROMPTS
    tok = train_tokenizer(KOREAN, 300, progress=False)
    cfg = CLMConfig(model=ModelConfig(n_layer=1, n_head=2, n_embd=16, block_size=32),
                    train=_train_cfg(max_steps=1, batch_size=4))
    metrics = train_clm(cfg, tok, KOREAN, KOREAN[1:6], tmp_path)
    prompts = ["", "할머니는 시장에서 사과를", "고양이가 창가에서 잠을", "오늘 서울에는 비가"]  # of 5 documents
    assert json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))["samples"] == metrics["samples"]
    assert len(metrics["samples"]) == len(prompts)
    assert all(sample.startswith(prompt) for sample, prompt in zip(metrics["samples"], prompts, strict=True))


def test_clm_sample_prompts_are_the_first_three_words_of_distinct_validation_documents():
    """Three prompts besides the empty one, each said once, none ending in the space a 20-character cut left."""
    docs = ["one two three four", "one two three five", "abcdefghijklmnopqrs tuv wxyz", "eta theta iota", "x y z"]
    assert clm_module.sample_prompts(docs, docs) == ("", "one two three", "abcdefghijklmnopqrs", "eta theta iota")


def test_clm_samples_of_a_corpus_written_without_spaces_start_from_its_first_characters():
    """Chinese or Japanese has no spaces: "the first three words" of a document were all of it, so a
    sample started from a whole validation document, or, too long for the window, was a note quoting it."""
    docs = ["今天北京下了一场大雨，河水上涨，很多人留在家里看书。晚上雨停了。", "我的猫喜欢在窗边睡觉。"]
    first_20 = "今天北京下了一场大雨，河水上涨，很多人留"
    assert clm_module.sample_prompts(docs, docs) == ("", first_20, "我的猫喜欢在窗边睡觉。")


@pytest.mark.filterwarnings("ignore:no font with Korean")  # said once per process; tested in test_train_loop
@pytest.mark.parametrize("block_size", [32, 8])
def test_mlm_on_a_korean_corpus_finishes_and_writes_results(tmp_path, block_size):
    """Issue 25: a finished run used to exit 2 because the English demo overflowed the window."""
    tok = train_tokenizer(KOREAN, 300, progress=False)
    cfg = MLMConfig(model=ModelConfig(norm="post", activation="gelu", n_layer=1, n_head=2, n_embd=16,
                                      block_size=block_size),
                    train=_train_cfg(max_steps=2, batch_size=4))
    metrics = train_mlm(cfg, tok, KOREAN, KOREAN[:6], tmp_path)
    saved = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    assert saved["val_masked_accuracy"] == metrics["val_masked_accuracy"]
    # the periodic check on part of the validation split and the final full evaluation have different names
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    [check] = [row for row in rows if row["split"] == "val"]
    assert "val_subset_masked_accuracy" in check and "val_masked_accuracy" not in check
    assert "subset_unigram_masked_accuracy" in check and "unigram_masked_accuracy" not in check
    assert rows[-1]["split"] == "final" and rows[-1]["val_masked_accuracy"] == saved["val_masked_accuracy"]
    if block_size == 32:
        assert saved["fill_mask_prompt"].endswith("[MASK].") and len(saved["fill_mask_top5"]) == 5
        assert (tmp_path / "fill_mask.png").is_file()
    else:
        assert saved["fill_mask_prompt"] is None and saved["fill_mask_top5"] == []


def test_fill_mask_ranking_is_sorted_probabilities(tmp_path, tokenizer):
    torch.manual_seed(0)
    model = Bert(ModelConfig(vocab_size=tokenizer.vocab_size, **SMALL_MODEL))
    ranking = fill_mask(model, tokenizer, "The river [MASK] floods.", top_k=10)
    probs = [p for _, p in ranking]
    assert len(ranking) == 10 and probs == sorted(probs, reverse=True)
    assert all(p > 0 for p in probs) and sum(probs) <= 1.0 + 1e-6
    plot_fill_mask(ranking, tmp_path / "bars.png")
    assert (tmp_path / "bars.png").stat().st_size > 0


def test_fill_mask_chart_makes_its_folder_and_keeps_a_long_sentence_in_sight(tmp_path, drawn_figures):
    """`fill-mask --plot charts/x.png` printed its ranking and then failed on the missing folder; and a
    sentence wider than the chart ran off both its sides, the [MASK] with it."""
    sentence = ("The [MASK] will be cloudy on Tuesday with a chance of rain in the afternoon and strong winds "
                "from the north.")
    path = tmp_path / "charts" / "fill_mask.png"
    plot_fill_mask([(" day", 0.3), (" week", 0.2)], path, title=sentence)
    [fig] = drawn_figures
    assert path.is_file() and inside_its_figure(fig, fig.axes[0].title)


@pytest.mark.parametrize("text", ["[MASK] comes first.", "The river [MASK] floods.", "It ends with [MASK]"])
def test_fill_mask_reads_the_logits_at_the_blank(tokenizer, text):
    copies_its_input = Predicts(tokenizer.vocab_size, answer=lambda ids: ids)
    [(piece, _)] = fill_mask(copies_its_input, tokenizer, text, top_k=1)
    assert piece == tokenizer.id_to_piece(tokenizer.mask_id)


def test_fill_mask_gives_the_softmax_probabilities_at_the_blank(tokenizer):
    """At the blank this model's logit is 2 for <mask> and 0 for each of the V - 1 other tokens, so the
    softmax gives <mask> e^2 / (e^2 + V - 1) and the next best 1 / (e^2 + V - 1), by hand. The chart of
    lesson 02 shows these numbers: sorted and positive is not enough (a doubled logit is that too)."""
    V = tokenizer.vocab_size
    copies_its_input = Predicts(V, answer=lambda ids: ids, margin=2.0)
    ranking = fill_mask(copies_its_input, tokenizer, "The river [MASK] floods.", top_k=2)
    z = math.exp(2.0) + V - 1
    assert ranking[0][0] == tokenizer.id_to_piece(tokenizer.mask_id)
    assert [p for _, p in ranking] == pytest.approx([math.exp(2.0) / z, 1 / z], rel=1e-5)


def test_masked_accuracy_of_always_the_same_token_is_the_unigram_baseline(corpus, tokenizer):
    stream = pack_documents(tokenizer, corpus[1])
    token = int(stream[5])
    always = Predicts(tokenizer.vocab_size, answer=lambda ids: torch.full_like(ids, token))
    cfg = _mlm_cfg()
    metrics = evaluate_mlm(always, cfg, tokenizer, stream, most_frequent_id=token)
    assert metrics["val_masked_accuracy"] == metrics["unigram_masked_accuracy"] > 0
    # the blanks are BERT's whatever rates the run trains with: the same blanks, the same score
    other_rates = dataclasses.replace(cfg, mask_prob=0.4, mask_token_prob=1.0, random_token_prob=0.0)
    assert evaluate_mlm(always, other_rates, tokenizer, stream, most_frequent_id=token) == metrics


@pytest.mark.parametrize("mask_token_prob,random_token_prob", [(1.0, 0.0), (0.0, 1.0)])
def test_a_run_masks_with_its_own_configs_rates(corpus, tokenizer, mask_token_prob, random_token_prob):
    """mask_for_mlm hands each of cfg's rates to its own parameter: all <mask>, or all random tokens."""
    cfg = dataclasses.replace(_mlm_cfg(), mask_prob=0.5, mask_token_prob=mask_token_prob,
                              random_token_prob=random_token_prob)
    ids = consecutive_windows(pack_documents(tokenizer, corpus[1]), 32, 32, 8)  # (8, 32)
    masked = mask_for_mlm(ids, cfg, tokenizer, torch.Generator().manual_seed(0))
    shown = masked.input_ids[masked.chosen]  # what the chosen positions show
    assert 0.4 < masked.chosen.float().mean() < 0.6
    assert (shown == tokenizer.mask_id).float().mean() == mask_token_prob


def test_the_unigram_baseline_guesses_the_blanks_original_tokens_not_what_they_show(corpus, tokenizer):
    """The baseline answers the most frequent token at every blank: it is right as often as that token
    is a blank's original (its label), about its share of the text; the blanks mostly show <mask>, so
    scoring it against what they show would put the baseline near 0 and flatter every model."""
    stream = pack_documents(tokenizer, corpus[1])
    ordinary = stream[~torch.isin(stream, torch.tensor(list(tokenizer.special_tokens.values())))]
    token = int(torch.bincount(ordinary).argmax())
    share = (ordinary == token).float().mean().item()
    always = Predicts(tokenizer.vocab_size, answer=lambda ids: torch.full_like(ids, token))
    metrics = evaluate_mlm(always, _mlm_cfg(), tokenizer, stream, most_frequent_id=token)
    assert metrics["unigram_masked_accuracy"] == metrics["val_masked_accuracy"] > share / 2


@pytest.mark.parametrize("text", ["no blank here", "two [MASK] blanks [MASK]"])
def test_fill_mask_needs_exactly_one_blank(tokenizer, text):
    model = Bert(ModelConfig(vocab_size=tokenizer.vocab_size, **SMALL_MODEL))
    with pytest.raises(ModelInputError, match=r"exactly one \[MASK\]"):
        fill_mask(model, tokenizer, text)


# --------------------------------------------------------------------------------------------------
# Bad input.


def test_corpus_too_small_for_one_batch_says_how_many_tokens(tmp_path, tokenizer):
    """And names the stage's settings as --set takes them (it said "a smaller block_size / batch_size"), and a
    window's tokens as a reader counts them: CLM's block and its last position's target, MLM's block alone."""
    docs = ["A short note.", "Another one."]
    with pytest.raises(DataError, match=r"train split has \d+ tokens but one batch \(16 windows of 32\+1 tokens\) "
                                        r"needs 528; .* lower --set "
                                        r"clm\.model\.block_size or clm\.train\.batch_size$"):
        train_clm(_clm_cfg(), tokenizer, docs, docs, tmp_path)
    with pytest.raises(DataError, match=r"train split has \d+ tokens but one batch \(16 windows of 32 tokens\) "
                                        r"needs 512; .* lower --set "
                                        r"mlm\.model\.block_size or mlm\.train\.batch_size$"):
        train_mlm(_mlm_cfg(), tokenizer, docs, docs, tmp_path)


def test_one_window_of_validation_text_is_enough_and_the_run_keeps_its_corpus_record(tmp_path, corpus, tokenizer):
    """open_pretraining_run, which MLM and CLM share: training needs a batch of windows, the validation split
    only one window (16 windows of 32+1 tokens and one); the corpus record it returns is the one config.json
    keeps and a resume is checked against, and the config takes the tokenizer's vocabulary size."""
    val = next(corpus[1][:n] for n in range(1, len(corpus[1]) + 1)
               if len(pack_documents(tokenizer, corpus[1][:n])) >= 33)  # the fewest documents that fill one window
    record = {"file": None, "sha256": "5b1e"}
    cfg, out_dir, read, streams = open_pretraining_run("clm", _clm_cfg(), tokenizer, corpus[0], val, tmp_path,
                                                       resume=False, corpus=record, extra_tokens=1)
    assert 33 <= len(streams["val"]) < 16 * 33 and read == {"corpus": record} and out_dir == tmp_path
    assert cfg.model.vocab_size == tokenizer.vocab_size != _clm_cfg().model.vocab_size


def test_documents_given_in_python_are_recorded_and_a_resume_on_others_is_refused(tmp_path, corpus, tokenizer):
    """A lesson's `train_clm(cfg, tokenizer, train_docs, val_docs, folder)` names no file: its run recorded no
    corpus, and `resume=True` on other documents went on into the same weights. MLM and CLM record documents
    given in Python as such (run_data's `data_record`), and refuse a resume on others before packing them."""
    cfg, _, read, _ = open_pretraining_run("clm", _clm_cfg(), tokenizer, corpus[0], corpus[1], tmp_path / "clm",
                                           resume=False, corpus=None, extra_tokens=1)
    assert read == {"corpus": corpus_given(corpus)}
    save_checkpoint(tmp_path / "clm" / "ckpt.pt", {"stage": "clm"})  # (a run to resume: refused before it loads)
    tokenizer.save(tmp_path / "clm" / "tokenizer.json")
    (tmp_path / "clm" / "config.json").write_text(json.dumps({"run": to_dict(cfg), **read}), encoding="utf-8")
    open_pretraining_run("clm", _clm_cfg(), tokenizer, *corpus, tmp_path / "clm", resume=True, corpus=None,
                         extra_tokens=1)  # the same documents: resumed
    fewer = corpus[0][:-1]
    with pytest.raises(ConfigError, match=re.escape(
            f"it read the corpus given in Python ({sum(map(len, corpus))} documents), and this run reads the corpus "
            f"given in Python ({sum(map(len, corpus)) - 1} documents); resume it on the corpus it read")):
        open_pretraining_run("clm", _clm_cfg(), tokenizer, fewer, corpus[1], tmp_path / "clm", resume=True,
                             corpus=None, extra_tokens=1)


def test_a_stream_shorter_than_one_window_is_refused_with_both_lengths():
    uniform = Predicts(7, answer=torch.zeros_like, margin=0.0)
    with pytest.raises(DataError, match=r"evaluated split has 10 tokens but one window of 33 tokens needs 33"):
        perplexity(uniform, torch.arange(10) % 7, block_size=32, batch_size=4)
    with pytest.raises(DataError, match=r"evaluated split has 10 tokens"):
        unigram_perplexity(torch.arange(10), torch.arange(10), 50, block_size=32)
    with pytest.raises(DataError, match=r"sampled split has 10 tokens but one window of 32 tokens"):
        random_windows(torch.arange(10), 32, 4, torch.Generator())


def test_resume_with_other_settings_names_the_fields(tmp_path, corpus, tokenizer):
    train_mlm(_mlm_cfg(max_steps=2), tokenizer, *corpus, tmp_path)
    changed = dataclasses.replace(_mlm_cfg(max_steps=2), mask_prob=0.3)
    with pytest.raises(ConfigError, match=r"mask_prob: 0.15 -> 0.3"):
        train_mlm(changed, tokenizer, *corpus, tmp_path, resume=True)
    other_tokenizer = train_tokenizer(corpus[0], 300, progress=False)
    with pytest.raises(ConfigError, match=r"tokenizer"):
        train_mlm(_mlm_cfg(max_steps=2), other_tokenizer, *corpus, tmp_path, resume=True)


def _pretrain_clm_command(optimizer: str) -> Callable[[Path, bool], list[str]]:
    def command(out_dir: Path, resume: bool) -> list[str]:
        return ["-m", "minillm", "pretrain", "clm", "--preset", "micro", "--out", str(out_dir),
                "--set", "clm.train.max_steps=12", "--set", "clm.train.save_every=4",
                "--set", "clm.train.eval_every=5", "--set", f"clm.train.optimizer={optimizer}",
                *(["--resume"] if resume else [])]
    return command


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_clm_killed_mid_run_resumes_bit_exactly(tmp_path, optimizer):
    # Muon with AdamW makes two optimizer updates per step: killed after step 6 of 12 either way
    updates_per_step = 2 if optimizer == "muon" else 1
    assert_exact_resume(_pretrain_clm_command(optimizer), tmp_path, kill_after_updates=6 * updates_per_step)


def test_random_windows_can_start_at_every_offset_the_last_included():
    windows = random_windows(torch.arange(6), 5, 200, torch.Generator().manual_seed(0))  # (200, 5)
    assert set(windows[:, 0].tolist()) == {0, 1}  # the only two windows of 5 in 6 tokens
    assert all(torch.equal(w, torch.arange(w[0], w[0] + 5)) for w in windows)
    exact = random_windows(torch.arange(5), 5, 3, torch.Generator())  # a stream exactly one window long
    assert torch.equal(exact, torch.arange(5).repeat(3, 1))


def test_masked_accuracy_counts_the_masked_positions_only():
    logits = torch.zeros(1, 4, 5)
    logits[0, 1, 3] = 1.0  # right: label 3
    logits[0, 2, 0] = 1.0  # wrong: label 4
    labels = torch.tensor([[IGNORE_INDEX, 3, 4, IGNORE_INDEX]])
    assert masked_accuracy(logits, labels) == (1, 2)


class CopiesAtBlanks(nn.Module):
    """A stand-in encoder that predicts each position's own input token, called as batch_loss calls it:
    model(ids, logits_at=chosen) -> (M, V) logits at the chosen positions only."""

    def __init__(self, vocab_size: int) -> None:
        super().__init__()
        self.vocab_size = vocab_size

    def forward(self, ids: torch.Tensor, logits_at: torch.Tensor) -> torch.Tensor:
        return F.one_hot(ids[logits_at], self.vocab_size).float()  # (M, V)


def test_the_logged_masked_accuracy_is_the_fraction_of_blanks_guessed_right():
    """batch_loss's masked_acc is logged and averaged over micro-batches as a mean, so it must be a
    fraction in [0, 1], not a count: here 3 of the 5 blanks show their own token (BERT's kept 10%),
    and a model that copies its input guesses exactly those, 3/5."""
    ids = torch.tensor([[5, 6, 7, 8, 9, 10], [11, 12, 13, 14, 15, 16]])  # (B, T) what the encoder sees
    labels = torch.full_like(ids, IGNORE_INDEX)
    labels[0, 1], labels[0, 4], labels[1, 0] = 6, 9, 11  # blanks that show their answer
    labels[1, 3], labels[1, 5] = 2, 3  # blanks that show another token (<mask> or a random one)
    _, extra = batch_loss(CopiesAtBlanks(20), {"input_ids": ids, "labels": labels})
    right = sum(int(ids[r, t] == labels[r, t]) for r in range(2) for t in range(6) if labels[r, t] != IGNORE_INDEX)
    assert extra["masked_acc"] == pytest.approx(right / 5) == pytest.approx(0.6)


def test_resume_may_start_fresh_and_may_train_for_more_steps(tmp_path, corpus, tokenizer):
    run = tmp_path / "run"
    train_clm(_clm_cfg(max_steps=2), tokenizer, *corpus, run, resume=True)  # nothing to resume yet: a new run
    more = train_clm(_clm_cfg(max_steps=4), tokenizer, *corpus, run, resume=True)  # only train.* changed
    losses = _train_losses(run)
    assert more["steps"] == 4 and len(losses) == 4
    assert more["train_tokens"] == len(pack_documents(tokenizer, corpus[0]))
    assert more["final_train_loss"] == losses[-1]


def test_consecutive_windows_stop_at_max_windows():
    assert consecutive_windows(torch.arange(21), 5, 4, max_windows=2).tolist() == [[0, 1, 2, 3, 4], [4, 5, 6, 7, 8]]


def test_val_masked_loss_is_the_mean_over_every_masked_position(corpus, tokenizer):
    """A model whose logits favour each position's own input token by 2: at a blank that shows its
    answer the loss is log(1 + (V - 1) e^-2), at any other blank log(e^2 + V - 1). The validation
    windows span several batches holding unequal numbers of blanks; each blank counts once."""
    V = tokenizer.vocab_size
    copies_its_input = Predicts(V, answer=lambda ids: ids, margin=2.0)
    cfg = _mlm_cfg(batch_size=4)
    stream = pack_documents(tokenizer, corpus[1])
    metrics = evaluate_mlm(copies_its_input, cfg, tokenizer, stream, most_frequent_id=0)
    total = metrics["val_masked_positions"]
    right = round(metrics["val_masked_accuracy"] * total)  # the blanks that show their own token
    assert 0 < right < total and total > 3 * cfg.train.batch_size * 32 * 0.15
    expected = (right * math.log(1 + (V - 1) * math.exp(-2)) + (total - right) * math.log(math.exp(2) + V - 1)) / total
    assert metrics["val_masked_loss"] == pytest.approx(expected, rel=1e-5)


def test_evaluations_give_the_model_back_in_training_mode(corpus, tokenizer):
    """perplexity, evaluate_mlm and fill_mask switch to eval mode and back to the mode they were given."""
    stream = pack_documents(tokenizer, corpus[1])
    model = Predicts(tokenizer.vocab_size, answer=lambda ids: ids, margin=1.0).train()
    perplexity(model, stream, block_size=8, batch_size=4, max_windows=4)
    assert model.training
    evaluate_mlm(model, _mlm_cfg(), tokenizer, stream, most_frequent_id=0, max_windows=4)
    assert model.training
    fill_mask(model, tokenizer, "The river [MASK] floods.")
    assert model.training
    perplexity(model.eval(), stream, block_size=8, batch_size=4, max_windows=4)
    assert not model.training
    evaluate_mlm(model, _mlm_cfg(), tokenizer, stream, most_frequent_id=0, max_windows=4)
    assert not model.training  # a model given in eval mode is not switched to training (dropout on)
    fill_mask(model, tokenizer, "The river [MASK] floods.")
    assert not model.training


def test_the_unigram_baseline_answers_the_most_frequent_ordinary_token(tmp_path, tokenizer):
    """Documents of one word each: <bos> and <eos> are the most frequent tokens of the stream, but a
    blank is never a special token, so the baseline must answer the most frequent ordinary one."""
    docs = ["river"] * 30 + ["night", "day", "weekend", "town", "rain", "flood", "watch", "wind"] * 3
    stream = pack_documents(tokenizer, docs).tolist()
    specials = set(tokenizer.special_tokens.values())
    assert Counter(stream).most_common(1)[0][0] in specials  # the trap this test sets
    [(expected, _)] = Counter(i for i in stream if i not in specials).most_common(1)
    cfg = MLMConfig(model=ModelConfig(norm="post", activation="gelu", n_layer=1, n_head=2, n_embd=16, block_size=8),
                    train=_train_cfg(max_steps=1, batch_size=2))
    metrics = train_mlm(cfg, tokenizer, docs, docs, tmp_path)
    assert metrics["unigram_prediction"] == tokenizer.id_to_piece(expected)


def test_clm_samples_skip_a_prompt_that_exactly_fills_the_window_and_keep_each_prompts_own_seed():
    """A prompt of block_size - 1 tokens leaves room for <bos> only, none for a new token: it is
    skipped (generate_text would refuse it). Each remaining sample is drawn with its prompt's index in
    SAMPLE_PROMPTS as the seed, as if no prompt had been skipped, so a sample does not change with the
    tokenizer that drops an earlier prompt. The oracle: generate_text called with that seed by hand."""
    tok = train_tokenizer(KOREAN, 300, progress=False)
    skipped = "A flash flood watch"
    block_size = 1 + len(tok.encode(skipped))  # <bos> + the prompt fill the window exactly
    prompts = clm_module.SAMPLE_PROMPTS
    assert all(1 + len(tok.encode(p)) < block_size for p in prompts if p != skipped)
    assert prompts.index(skipped) < len(prompts) - 1  # a later prompt's seed would move if skipped ones did not count
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=tok.vocab_size, n_layer=1, n_head=2, n_embd=16, block_size=block_size)).eval()
    samples = clm_module.sample_texts(model, tok, block_size)
    assert samples == [generate_text(model, tok, p, seed=i) for i, p in enumerate(prompts) if p != skipped]
    assert generate_text(model, tok, "The", seed=1) != generate_text(model, tok, "The", seed=2)  # seeds matter here
