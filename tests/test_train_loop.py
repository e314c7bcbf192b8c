"""The shared training loop: it learns, its schedule and groups are right, it stops on NaN, it logs.

The model is a 1-layer GPT on a counting task (tests/_train_worker.py): a few dozen steps take a
second or two on one CPU thread.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import random
import re
import subprocess
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import matplotlib
import pytest
import torch
from _plots import inside_its_figure
from _train_worker import VOCAB, counting_batch, next_token_loss, tiny_gpt
from matplotlib.backends.backend_agg import RendererAgg
from matplotlib.figure import Figure
from test_ppo import RECORDS

import minillm
from minillm import config, provenance
from minillm.config import DTYPES, CLMConfig, DPOConfig, MLMConfig, ModelConfig, RewardConfig, TrainConfig
from minillm.errors import CheckpointError, ConfigError, DataError, TrainingError
from minillm.model.gpt import GPT
from minillm.provenance import code_record
from minillm.stage1_pretrain import clm, mlm
from minillm.stage3_rlhf import dpo, reward_model
from minillm.stage3_rlhf.reward_model import RewardModel
from minillm.tokenizer import load_tokenizer, train_tokenizer
from minillm.train import load_checkpoint, load_model, lr_at, plot_metrics, plot_panels, plots, train
from minillm.train.health import Watched, check_grad_norm, check_loss, clip_gradients, first_bad_gradient
from minillm.train.loop import LossFn
from minillm.train.optim import Muon, MuonWithAdamW, follow_schedule, make_optimizer, orthogonalize, param_groups
from minillm.train.plots import find_cjk_font, has_cjk
from minillm.train.precision import autocast
from minillm.utils import seed_everything, spread_rows


def small_cfg(**overrides) -> TrainConfig:
    values = dict(max_steps=20, batch_size=8, lr=1e-2, warmup_steps=3, eval_every=10, eval_batches=2,
                  log_every=1, save_every=10)
    return TrainConfig(**{**values, **overrides})


def run(tmp_path, cfg: TrainConfig, *, loss_fn=next_token_loss, model=None, **kwargs) -> dict:
    return train(model or tiny_gpt(), cfg, tmp_path, get_batch=counting_batch(cfg.batch_size),
                 loss_fn=loss_fn, **kwargs)


def train_losses(history: list[dict]) -> list[float]:
    return [row["loss"] for row in history if row["split"] == "train"]


def parameters_after(tmp_path, cfg: TrainConfig) -> tuple[list[torch.Tensor], list[dict]]:
    """The trained parameters and the history of a run."""
    model = tiny_gpt()
    history = run(tmp_path, cfg, model=model)["history"]
    return [p.detach().clone() for p in model.parameters()], history


# --------------------------------------------------------------------------------------------------
# It learns, and only because the optimizer steps.


@pytest.mark.parametrize("optimizer_steps", [True, False])
def test_a_short_run_learns_only_when_the_optimizer_steps(tmp_path, monkeypatch, optimizer_steps):
    if not optimizer_steps:  # the broken loop this test must catch
        monkeypatch.setattr(torch.optim.AdamW, "step", lambda self, *args, **kwargs: None)
    losses = train_losses(run(tmp_path, small_cfg(max_steps=40))["history"])
    assert len(losses) == 40
    if optimizer_steps:
        assert losses[-1] < 0.6 * losses[0], losses
    else:
        assert abs(losses[-1] - losses[0]) < 0.2, losses


# --------------------------------------------------------------------------------------------------
# The schedule and the parameter groups.


def test_lr_schedule_warms_up_linearly_then_follows_a_cosine_to_the_floor():
    cfg = TrainConfig(max_steps=101, lr=2e-3, warmup_steps=10, min_lr_ratio=0.1)
    assert [lr_at(s, cfg) for s in range(3)] == pytest.approx([2e-4, 4e-4, 6e-4])
    assert lr_at(9, cfg) == pytest.approx(2e-3)  # warmup ends at the peak
    assert lr_at(10, cfg) == pytest.approx(2e-3)  # the cosine starts there
    assert lr_at(55, cfg) == pytest.approx(2e-3 * (0.1 + 0.9 * 0.5))  # half way: cos(pi/2) = 0
    assert lr_at(100, cfg) == pytest.approx(2e-4)  # the last step sits on the floor
    after_warmup = [lr_at(s, cfg) for s in range(10, 101)]
    assert all(a >= b for a, b in zip(after_warmup, after_warmup[1:], strict=False))
    one_step_after_warmup = TrainConfig(max_steps=11, lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_at(10, one_step_after_warmup) == pytest.approx(0.1)  # that one step is the last: the floor


def test_an_optimizer_added_to_the_config_alone_is_refused_naming_make_optimizer(monkeypatch):
    """A learner's new optimizer: one list in config.OPTIMIZERS serves every stage (SFT's scratch run
    too), and an optimizer without its branch is named, not built as Muon."""
    monkeypatch.setattr(config, "OPTIMIZERS", (*config.OPTIMIZERS, "sgd"))
    assert config.SFTConfig(scratch_optimizer="sgd").scratch_train().optimizer == "sgd"
    with pytest.raises(ConfigError, match=r"optimizer=sgd: make_optimizer .* add its branch"):
        make_optimizer(torch.nn.Linear(2, 2), TrainConfig(optimizer="sgd"))


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_the_optimizer_steps_with_the_schedules_lr(tmp_path, monkeypatch, optimizer):
    """The lr every parameter group holds when the optimizer steps, not only the one the loop logs."""
    seen = []
    cls = MuonWithAdamW if optimizer == "muon" else torch.optim.AdamW
    real_step = cls.step

    def recording_step(self, *args, **kwargs):
        seen.append([group["lr"] for group in self.param_groups])
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(cls, "step", recording_step)
    cfg = small_cfg(max_steps=8, optimizer=optimizer)
    run(tmp_path, cfg)
    assert len(seen) == 8
    assert all(lrs == pytest.approx([lr_at(s, cfg)] * len(lrs)) for s, lrs in enumerate(seen))


def test_the_logged_lr_is_the_schedule(tmp_path):
    cfg = small_cfg(max_steps=8)
    history = run(tmp_path, cfg)["history"]
    logged = [row["lr"] for row in history if row["split"] == "train"]
    assert logged == pytest.approx([lr_at(s, cfg) for s in range(8)])


def test_weight_decay_applies_to_matrices_only_and_every_parameter_once():
    model = tiny_gpt()
    decay, no_decay = param_groups(model, weight_decay=0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() < 2 for p in no_decay["params"])
    assert any(p is model.ln_f.weight for p in no_decay["params"])
    assert any(p is model.tok_emb.weight for p in decay["params"])
    grouped = [id(p) for p in decay["params"] + no_decay["params"]]
    assert sorted(grouped) == sorted({id(p) for p in model.parameters()})  # tied weights counted once
    made = make_optimizer(model, TrainConfig(weight_decay=0.1)).param_groups  # the optimizer holds those groups
    assert [(g["weight_decay"], [id(p) for p in g["params"]]) for g in made] == \
        [(0.1, [id(p) for p in decay["params"]]), (0.0, [id(p) for p in no_decay["params"]])]


# --------------------------------------------------------------------------------------------------
# Muon: orthogonalised momentum for the blocks' matrices.


@pytest.mark.parametrize("shape", [(24, 8), (8, 24), (16, 16)])
def test_orthogonalize_keeps_the_singular_vectors_and_maps_each_singular_value_by_the_polynomial(shape):
    """Checked against an SVD: U.T @ O @ V must be diagonal, and each entry the scalar iteration of s."""
    generator = torch.Generator().manual_seed(0)
    u, _, vh = torch.linalg.svd(torch.randn(shape, generator=generator, dtype=torch.float64), full_matrices=False)
    s = torch.linspace(1.0, 0.1, min(shape), dtype=torch.float64)  # a tenfold spread, as a gradient has
    out = orthogonalize(u @ torch.diag(s) @ vh)
    inner = u.T @ out @ vh.T  # (k, k)
    torch.testing.assert_close(inner, torch.diag(torch.diagonal(inner)), atol=1e-10, rtol=0)
    expected = s / (s.norm() + 1e-7)  # the Frobenius norm is the norm of the singular values
    for _ in range(5):
        expected = 3.4445 * expected - 4.7750 * expected**3 + 2.0315 * expected**5
    torch.testing.assert_close(torch.diagonal(inner), expected)
    assert expected.min() > 0.6 and expected.max() < 1.25  # every direction moves about as far


@pytest.mark.skipif(not hasattr(torch.optim, "Muon"), reason="torch.optim.Muon arrived in torch 2.9")
def test_muon_steps_like_torchs_own_muon():
    """torch.optim.Muon orthogonalises in bfloat16, ours in the gradient's dtype: 1% apart, not more."""
    generator = torch.Generator().manual_seed(0)
    start = torch.randn(24, 40, generator=generator) * 0.1
    ours, theirs = torch.nn.Parameter(start.clone()), torch.nn.Parameter(start.clone())
    optimizers = [Muon([ours], lr=0.02, weight_decay=0.5),
                  torch.optim.Muon([theirs], lr=0.02, weight_decay=0.5, adjust_lr_fn="match_rms_adamw")]
    for _ in range(4):
        grad = torch.randn(24, 40, generator=generator)
        ours.grad, theirs.grad = grad.clone(), grad.clone()
        for optimizer in optimizers:
            optimizer.step()
    moved_ours, moved_theirs = ours.detach() - start, theirs.detach() - start
    assert (moved_ours - moved_theirs).norm() < 0.03 * moved_theirs.norm()


def test_muon_takes_the_blocks_matrices_and_adamw_everything_else_once():
    model = tiny_gpt()
    optimizer = make_optimizer(model, small_cfg(optimizer="muon"))
    assert isinstance(optimizer, MuonWithAdamW)
    names = {id(p): name for name, p in model.named_parameters()}
    muon = [names[id(p)] for group in optimizer.muon.param_groups for p in group["params"]]
    adamw = [names[id(p)] for group in optimizer.adamw.param_groups for p in group["params"]]
    assert muon and all(name.startswith("blocks.") and name.endswith("weight") for name in muon)
    assert "tok_emb.weight" in adamw and "ln_f.weight" in adamw
    assert sorted(muon + adamw) == sorted(names.values())
    with pytest.raises(ValueError, match="matrices only"):
        Muon([model.ln_f.weight], lr=1e-3, weight_decay=0.0)


def test_a_short_muon_run_learns(tmp_path):
    losses = train_losses(run(tmp_path, small_cfg(max_steps=40, optimizer="muon"))["history"])
    assert losses[-1] < 0.6 * losses[0], losses


# --------------------------------------------------------------------------------------------------
# Gradient accumulation and evaluation.


def test_gradient_accumulation_matches_one_big_batch(tmp_path):
    whole, whole_history = parameters_after(tmp_path / "a", small_cfg(max_steps=5, grad_accum_steps=1))
    accumulated, history = parameters_after(tmp_path / "b", small_cfg(max_steps=5, grad_accum_steps=4))
    # The gradient itself, before Adam (which would hide a wrong scale: it divides it out).
    norms = [[row["grad_norm"] for row in h if row["split"] == "train"] for h in (whole_history, history)]
    assert norms[0] == pytest.approx(norms[1], rel=1e-5)
    # The logged loss is the whole batch's mean, not the sum of the micro-batches' means.
    losses = [[row["loss"] for row in h if row["split"] == "train"] for h in (whole_history, history)]
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    for a, b in zip(whole, accumulated, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_every_evaluation_sees_the_same_validation_batches(tmp_path):
    cfg = small_cfg(max_steps=6, eval_every=3, eval_batches=2)
    seen = []
    draw = counting_batch(cfg.batch_size)

    def get_batch(split, generator):
        batch = draw(split, generator)
        if split == "val":
            seen.append(batch["ids"])
        return batch

    evaluate_calls = []
    result = train(tiny_gpt(), cfg, tmp_path, get_batch=get_batch, loss_fn=next_token_loss,
                   evaluate=lambda model: evaluate_calls.append(model.training) or {"score": 7.0})
    assert len(seen) == 4 and torch.equal(seen[0], seen[2]) and torch.equal(seen[1], seen[3])
    assert not torch.equal(seen[0], seen[1])
    assert evaluate_calls == [False, False]  # called in eval mode, at steps 3 and 6
    val_rows = [row for row in result["history"] if row["split"] == "val"]
    assert [row["step"] for row in val_rows] == [3, 6] and all(row["score"] == 7.0 for row in val_rows)
    assert val_rows[1]["val_loss"] < val_rows[0]["val_loss"]
    assert result["final"]["val_loss"] == val_rows[1]["val_loss"] and result["final"]["step"] == 6


# --------------------------------------------------------------------------------------------------
# Outputs: config.json, metrics.jsonl, loss.png, ckpt.pt, tokenizer.json.


def test_a_run_writes_its_files_and_rebuilds_with_load_model(tmp_path, drawn_figures):
    tokenizer = train_tokenizer(["the cat sat on the mat, the dog sat on the log"] * 5, 270, progress=False)
    cfg = small_cfg(max_steps=4, log_every=2)
    seed_everything(0)
    model = GPT(dataclasses.replace(tiny_gpt().config, vocab_size=tokenizer.vocab_size))  # a row per id
    run(tmp_path, cfg, model=model, run_config={"note": "hi"}, tokenizer=tokenizer, model_kind="gpt")
    config = json.loads((tmp_path / "config.json").read_text(encoding="utf-8"))
    assert config["run"] == {"note": "hi"} and config["train"]["max_steps"] == 4
    assert config["model"]["n_embd"] == 16 and config["model_kind"] == "gpt"
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [(r["step"], r["split"]) for r in rows] == [(1, "train"), (2, "train"), (4, "train"), (4, "val")]
    assert {"loss", "lr", "grad_norm", "accuracy", "elapsed_s", "samples_per_s"} <= rows[0].keys()
    assert (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    [ax] = drawn_figures[-1].axes  # loss.png: the logged numbers, in nats
    assert [list(line.get_ydata()) for line in ax.lines] == [[r[key] for r in rows if key in r]
                                                             for key in ("loss", "val_loss")]
    assert ax.get_ylabel() == "loss, val_loss (nats)"
    assert load_checkpoint(tmp_path / "ckpt.pt")["step"] == 4

    rebuilt, loaded_tokenizer = load_model(tmp_path, GPT)
    ids = torch.randint(0, VOCAB, (2, 5))
    assert torch.equal(rebuilt(ids), model.eval()(ids))
    assert loaded_tokenizer.encode("the cat") == tokenizer.encode("the cat")


def test_plot_metrics_draws_the_keys_it_finds(tmp_path):
    rows = [{"step": 1, "loss": 3.0}, {"step": 2, "loss": float("nan")}, {"step": 2, "val_loss": 2.5}]
    path = plot_metrics(rows, tmp_path / "sub" / "curve.png", ["loss", "val_loss", "absent"], title="t")
    assert path.read_bytes()[:4] == b"\x89PNG" and path.stat().st_size > 1000


def test_a_plot_of_one_step_labels_that_step_alone(tmp_path, drawn_figures):
    """A run of one logged step (max_steps=1) had its step axis labelled 0.945, 0.96, ..., 1.05: matplotlib
    keeps ticks whole only where it finds two whole numbers to show, and 0.945..1.055 holds one."""
    for step in (1, 7):
        plot_metrics([{"step": step, "loss": 3.0}], tmp_path / f"one_{step}.png", ["loss"])
        ax = drawn_figures[-1].axes[0]
        low, high = ax.get_xlim()
        assert [t for t in ax.get_xticks() if low <= t <= high] == [step]


def test_plot_panels_gives_each_scale_its_own_axis_and_whole_steps(tmp_path, drawn_figures):
    figures = drawn_figures
    rows = [{"step": s, "ratio": 1.0 + 0.01 * s, "clipfrac": 0.02, "approx_kl": 0.01 * s} for s in (1, 2, 3)]
    plot_panels(rows, tmp_path / "health.png", [("ratio",), ("clipfrac", "approx_kl")], title="PPO health")
    [fig] = figures
    axes = [ax for ax in fig.axes if ax.lines]
    assert [[line.get_label() for line in ax.lines] for ax in axes] == [["ratio"], ["clipfrac", "approx_kl"]]
    assert [ax.get_xlabel() for ax in axes] == ["", "step"]  # named once, under the bottom panel...
    assert axes[0].get_shared_x_axes().joined(*axes)  # ...which it is for all: step 2 is above step 2
    assert {line.get_marker() for ax in axes for line in ax.lines} == {"o"}  # 3 logged points show as dots
    ticks = axes[-1].get_xticks()
    assert all(float(t).is_integer() for t in ticks)  # no step 1.5
    plot_metrics([{"step": s, "loss": 10.0 / s} for s in range(1, 20)], tmp_path / "loss.png", ["loss"], log_y=True)
    assert figures[-1].axes[0].get_yscale() == "log"
    # a value <= 0 has no place on a log axis: the scale stays linear rather than drop the point
    plot_metrics([{"step": s, "reward": v} for s, v in ((1, -0.5), (2, 0.0), (3, 1.0))], tmp_path / "r.png",
                 ["reward"], log_y=True)
    assert figures[-1].axes[0].get_yscale() == "linear"


def test_a_log_axis_is_labelled_with_plain_numbers(tmp_path, monkeypatch):
    """A loss falling from 6 to 2.5 spans less than a power of 10, so every label matplotlib gave its log
    axis lay between two powers and read "6×10^0", "4×10^0", "3×10^0": a learner reads 6, 4 and 3. The
    ticks labelled are matplotlib's choice: over several powers of 10, the powers alone (not a crowd)."""
    drawn = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, path: drawn.append(fig))  # labels, not pixels: faster

    def labels(loss: Callable[[int], float]) -> list[str]:
        plot_metrics([{"step": s, "loss": loss(s)} for s in range(1, 200, 5)], tmp_path / "l.png", ["loss"],
                     log_y=True)
        axis = drawn[-1].axes[0].yaxis
        return [label for formatter, ticks in ((axis.get_major_formatter(), axis.get_majorticklocs()),
                                               (axis.get_minor_formatter(), axis.get_minorticklocs()))
                for label in formatter.format_ticks(ticks) if label]

    narrow = labels(lambda s: 2.4 + 3.6 * 0.97 ** s)
    assert {"3", "4"} <= set(narrow) and all(re.fullmatch(r"\d+(\.\d+)?", label) for label in narrow), narrow
    assert {"0.3", "0.6", "3", "6"} <= set(labels(lambda s: 0.3 + 5.7 * 0.97 ** s))  # below 1 as well
    wide = labels(lambda s: 1000 * 0.95 ** s)  # 1000 to 0.04: four powers of 10
    assert all(re.fullmatch(r"10*|0\.0*1", label) for label in wide), wide


def test_a_long_title_wraps_inside_the_figure(tmp_path, drawn_figures):
    """GRPO's "... and gold score (verifiable reward)" ran off both sides and the top of grpo_reward.png."""
    rows = [{"step": s, "reward_mean": 0.5, "reward_std": 0.2, "gold": 3.0} for s in (1, 2, 3)]
    title = "GRPO rollouts: reward (group mean, spread) and gold score (verifiable reward)"  # fits until laid out
    plot_panels(rows, tmp_path / "reward.png", [("reward_mean", "reward_std"), ("gold",)], title=title)
    [fig] = drawn_figures
    assert fig.axes[0].get_title() == title and inside_its_figure(fig, fig.axes[0].title)


@pytest.mark.parametrize("wraps", [False, True])
def test_a_figure_is_measured_by_the_renderer_that_draws_it_and_laid_out_again_only_to_wrap(tmp_path, monkeypatch,
                                                                                           wraps):
    """A bare Figure made a renderer for each of its two layouts and a third for the PNG, and each measured
    every text again: most of a small plot's time (save_figure). One renderer now; a second layout only
    where a title wraps."""
    calls = []
    for cls, name in ((RendererAgg, "__init__"), (Figure, "tight_layout")):
        real = getattr(cls, name)
        monkeypatch.setattr(cls, name, lambda *args, real=real, name=name, **kwargs: (
            calls.append(name), real(*args, **kwargs))[1])
    fig = Figure()
    fig.subplots().set_title("loss", wrap=wraps)
    plots.save_figure(fig, tmp_path / "loss.png")
    assert (calls.count("__init__"), calls.count("tight_layout")) == (1, 2 if wraps else 1)


def test_an_axis_names_the_unit_of_its_keys(tmp_path, drawn_figures):
    rows = [{"step": s, "kl": 0.1, "approx_kl": 0.01, "clipfrac": 0.02, "response_len": 7.0} for s in (1, 2)]
    plot_panels(rows, tmp_path / "p.png", [("kl", "approx_kl"), ("kl", "clipfrac"), ("response_len",)])
    assert [ax.get_ylabel() for ax in drawn_figures[-1].axes] == [
        "kl, approx_kl (nats)", "kl, clipfrac", "response_len (tokens)"]  # no unit for a mix
    plot_metrics(rows, tmp_path / "kl.png", ["kl"], ylabel="KL per answer")  # a label given is kept
    assert drawn_figures[-1].axes[0].get_ylabel() == "KL per answer"
    plot_panels(rows, tmp_path / "two.png", [("kl",), ("clipfrac",), ("response_len",)], ylabels=["KL", ""])
    assert [ax.get_ylabel() for ax in drawn_figures[-1].axes] == ["KL", "clipfrac", "response_len (tokens)"]


def test_a_value_that_is_not_finite_is_no_point_of_the_curve(tmp_path, drawn_figures):
    figures = drawn_figures
    rows = [{"step": 1, "loss": 3.0}, {"step": 2, "loss": float("nan")}, {"step": 3, "loss": float("inf")},
            {"step": 4, "loss": 2.0}, {"loss": 1.0}]  # (the last has no step to be drawn at)
    plot_metrics(rows, tmp_path / "loss.png", ["loss"])
    [line] = figures[-1].axes[0].lines
    assert list(line.get_xdata()) == [1, 4] and list(line.get_ydata()) == [3.0, 2.0]


def test_korean_text_uses_an_installed_cjk_font(monkeypatch):
    assert has_cjk(["fill 한국어"]) and not has_cjk(["plain ascii", "café"])
    assert all(has_cjk([ch]) for ch in "\u1100\u11ff\uac00\ud7a3")  # the first and last Hangul jamo, syllable
    assert find_cjk_font(["DejaVu Sans", "Noto Sans CJK JP", "NanumGothic"]) == "Noto Sans CJK JP"
    assert find_cjk_font(["DejaVu Sans"]) is None
    monkeypatch.setattr(plots, "find_cjk_font", lambda: "NanumGothic")
    default = matplotlib.rcParams["font.family"][0]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with plots.text_fonts(["비가 많이 내리겠습니다"]):  # a fallback: digits and Latin keep the default font
            assert matplotlib.rcParams["font.family"] == [default, "NanumGothic"]
    assert caught == []
    assert "NanumGothic" not in matplotlib.rcParams["font.family"]  # only while that figure is drawn


def test_without_a_cjk_font_one_warning_names_the_fix_instead_of_one_per_glyph(tmp_path, monkeypatch):
    monkeypatch.setattr(plots, "find_cjk_font", lambda: None)
    monkeypatch.setattr(plots, "_warned_no_cjk_font", False)
    rows = [{"step": 1, "비": 1.0}, {"step": 2, "비": 0.5}]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i in range(2):
            plot_metrics(rows, tmp_path / f"k{i}.png", ["비"], title="서울에는 비가 많이 내리겠습니다")
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "fonts-noto-cjk" in messages[0], messages


@pytest.mark.parametrize("glyph_warning", [
    "Glyph 48708 (\\N{HANGUL SYLLABLE BI}) missing from font(s) DejaVu Sans.",  # newer matplotlib (3.11)
    "Glyph 48708 (\\N{HANGUL SYLLABLE BI}) missing from current font.",  # matplotlib 3.7
])
def test_the_per_glyph_warning_of_every_matplotlib_is_silenced(glyph_warning, monkeypatch):
    """The test above draws with whichever matplotlib is installed; this one pins both wordings."""
    monkeypatch.setattr(plots, "find_cjk_font", lambda: None)
    monkeypatch.setattr(plots, "_warned_no_cjk_font", True)  # our own warning given already
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with plots.text_fonts(["비"]):
            warnings.warn(glyph_warning, UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == []


def test_a_batch_of_the_wrong_size_is_a_clear_data_error(tmp_path):
    cfg = small_cfg(max_steps=2)
    with pytest.raises(DataError, match=r"'ids' with shape \(4, 12\).*batch_size=8"):
        train(tiny_gpt(), cfg, tmp_path, get_batch=counting_batch(4), loss_fn=next_token_loss)


def test_get_batch_and_loss_fn_that_break_their_contract_are_named(tmp_path):
    cfg = small_cfg(max_steps=2)
    as_tuple = counting_batch(cfg.batch_size)
    with pytest.raises(DataError, match=r"get_batch\('train'\) returned a tuple: it must return a dict"):
        train(tiny_gpt(), cfg, tmp_path / "a", get_batch=lambda *a: tuple(as_tuple(*a).values()),
              loss_fn=next_token_loss)
    for wrong, got in ((lambda m, b: next_token_loss(m, b)[0], r"a tensor of shape \(\)"),
                       (lambda m, b: (m(b["ids"]).sum(-1), {}), r"\(Tensor, dict\)")):
        with pytest.raises(ConfigError, match=got + r": it must return \(loss, metrics\)"):
            run(tmp_path / "b", cfg, loss_fn=wrong)


# --------------------------------------------------------------------------------------------------
# Training health: NaN/inf stop the run, name the step and the tensor, keep the last checkpoint.


def nan_from_step(bad_step: int, poison: Callable[[torch.nn.Module], torch.Tensor],
                  last_bad_step: float = math.inf) -> LossFn:
    """A loss function that adds `poison(model)` at training steps bad_step..last_bad_step."""
    calls = {"train": 0}

    def loss_fn(model, batch):
        loss, extra = next_token_loss(model, batch)
        if model.training:
            calls["train"] += 1
            if bad_step <= calls["train"] <= last_bad_step:
                loss = loss + poison(model)
        return loss, extra

    return loss_fn


def unsaved(name: str) -> Watched:
    """A run `name` whose checkpoint was never saved (a folder that does not exist)."""
    return Watched(name, f"{name}.train", Path("never-saved") / "ckpt.pt")


@pytest.mark.parametrize("norm", [float("nan"), float("inf"), float("-inf")])
def test_a_gradient_norm_that_is_not_finite_stops_training(norm):
    with pytest.raises(TrainingError, match=f"^mlm: training stopped at step 3: the gradient norm is {norm}"):
        check_grad_norm(norm, torch.nn.Linear(2, 2), 3, unsaved("mlm"))


def test_the_optimizer_steps_on_the_clipped_gradient(tmp_path, monkeypatch):
    """grad_clip rescales the whole gradient to norm <= grad_clip before the optimizer sees it; the
    logged grad_norm is the norm before clipping."""
    seen = []
    adamw_step = torch.optim.AdamW.step

    def recording_step(self, *args, **kwargs):
        grads = [p.grad for group in self.param_groups for p in group["params"] if p.grad is not None]
        seen.append(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])).item())
        return adamw_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", recording_step)
    history = run(tmp_path, small_cfg(max_steps=5, eval_every=5, save_every=5, grad_clip=0.01))["history"]
    logged = [row["grad_norm"] for row in history if row["split"] == "train"]
    assert len(seen) == 5 and min(logged) > 0.01  # every raw gradient was longer than the limit...
    assert max(seen) <= 0.01 * (1 + 1e-4)  # ...and every step used one cut down to it


def test_a_nan_loss_stops_at_its_step_and_keeps_the_last_good_checkpoint(tmp_path):
    """The message names the run that stopped: `pipeline --jobs 2` trains MLM beside CLM, and SFT its
    baselines beside itself, and the line said only "training stopped at step 7". It says which checkpoint
    is kept, and names the settings to change as --set takes them (it said "lr", of no section)."""
    cfg = small_cfg(max_steps=12, save_every=5, eval_every=100)
    with pytest.raises(TrainingError, match=r"^sft on count only: training stopped at step 7: the loss is nan\. Its "
                                            rf"last checkpoint, {re.escape(str(tmp_path / 'ckpt.pt'))} of step 5, is "
                                            r"kept\. Try a lower learning rate \(--set sft\.train\.lr=\.\.\.\), "
                                            r"gradient clipping \(--set sft\.train\.grad_clip=\.\.\.\)"):
        run(tmp_path, cfg, loss_fn=nan_from_step(7, lambda model: torch.tensor(float("nan"))),
            desc="sft on count only", settings="sft.train")
    ckpt = load_checkpoint(tmp_path / "ckpt.pt")
    assert ckpt["step"] == 5 and all(torch.isfinite(t).all() for t in ckpt["model"].values())
    steps = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    assert max(steps) == 6


def sqrt_of_zero(model) -> torch.Tensor:
    """0 in the forward pass, but d sqrt(u)/du = inf at u = 0, times du/dw = 0: a NaN gradient."""
    return torch.sqrt(model.ln_f.weight.sum() * 0.0)


def test_a_nan_gradient_names_the_run_and_the_parameter(tmp_path):
    """Before any checkpoint is saved the message says so (it said "the last checkpoint saved before it is
    kept"); the settings are those of the run's section (`settings`)."""
    with pytest.raises(TrainingError, match=r"^clm: training stopped at step 3: the gradient norm is nan.*ln_f.weight"
                                            r".*is not finite\. No checkpoint had been saved yet\. Try a lower "
                                            r"learning rate \(--set clm\.train\.lr=\.\.\.\), gradient clipping "
                                            r"\(--set clm\.train\.grad_clip=\.\.\.\), or "
                                            r"--detect-anomaly to find the operation that produced it$"):
        run(tmp_path, small_cfg(max_steps=5), loss_fn=nan_from_step(3, sqrt_of_zero), desc="clm", settings="clm.train")
    assert not (tmp_path / "ckpt.pt").exists()


def test_a_nan_in_a_library_callers_run_names_the_settings_bare(tmp_path):
    """A run of no section (train's defaults: desc "train") was told `--set train.train.lr=...`, a setting
    no command line has: its own TrainConfig's are named as they are, "lr=...", and so are the runtime
    settings (it was told the command line's --dtype float32 and --detect-anomaly)."""
    with pytest.raises(TrainingError, match=r"^train: training stopped at step 1: the loss is nan\. No checkpoint had "
                                            r"been saved yet\. Try a lower learning rate \(lr=\.\.\.\), gradient "
                                            r"clipping \(grad_clip=\.\.\.\), or detect_anomaly=True "
                                            r"to find the operation that produced it$"):
        run(tmp_path, small_cfg(max_steps=2), loss_fn=nan_from_step(1, lambda model: torch.tensor(math.nan)))


@pytest.mark.parametrize(("settings", "advice"), [("clm.train", "--dtype float32, "), ("", 'dtype="float32", ')])
def test_a_nan_advises_full_precision_only_to_a_run_not_in_it(tmp_path, settings, advice):
    """Every run in float32 (the default, and PPO's and GRPO's always) was told to try --dtype float32, the
    precision it was already in; a run in bfloat16 or float16 is told it, as its caller sets it."""
    for dtype in DTYPES:
        message = str(Watched("clm", settings, tmp_path / "ckpt.pt", dtype=dtype).stopped(3, "the loss is nan"))
        assert (advice in message) == (dtype != "float32"), message
        assert message.endswith("to find the operation that produced it"), message


def test_the_loop_tells_a_nan_the_precision_its_run_trains_in(tmp_path):
    """The loop passes its TrainConfig's dtype on: a bfloat16 run is told to try float32."""
    with pytest.raises(TrainingError, match=r'clipping \(grad_clip=\.\.\.\), dtype="float32", or detect_anomaly'):
        run(tmp_path, small_cfg(max_steps=2, dtype="bfloat16"),
            loss_fn=nan_from_step(1, lambda model: torch.tensor(math.nan)))


class LoopReached(Exception):
    """Raised in place of the training loop: a trainer got as far as calling it."""


def reach_the_loop(stage: str, runs: dict[str, Path], out: Path) -> None:
    """Call `stage`'s trainer, cheaply (test_ppo.py's micro SFT run and rankings, a tiny model for the
    pretraining stages), on to its training loop."""
    tokenizer = load_tokenizer(runs["sft"] / "tokenizer.json")
    docs = [record["prompt"] + " " + record["response"] for record in RECORDS]  # 376 tokens: a batch is 2 windows of 8
    small, one_step = ModelConfig(n_layer=1, n_head=2, n_embd=16, block_size=8), TrainConfig(max_steps=1, batch_size=2)
    if stage == "mlm":
        mlm.train_mlm(MLMConfig(model=small, train=one_step), tokenizer, docs, docs, out)
    elif stage == "clm":
        clm.train_clm(CLMConfig(model=small, train=one_step), tokenizer, docs, docs, out)
    elif stage == "reward":
        reward_model.train_reward_model(RewardConfig(train=one_step), runs["sft"], runs["prefs"], out)
    else:
        dpo.train_dpo(DPOConfig(train=one_step, eval_prompts=6, max_new_tokens=5), runs["sft"], runs["prefs"],
                      RECORDS, out)


@pytest.mark.parametrize("stage", ["mlm", "clm", "reward", "dpo"])
def test_each_trainer_tells_the_loop_the_section_its_settings_are_in(stage, stage3_runs, tmp_path, monkeypatch):
    """A NaN's message names the settings to change as --set takes them, "--set clm.train.lr=...": from the
    `settings` its trainer passes the loop (SFT's and GRPO's are pinned in their own files). The loop is
    replaced by one that records them and stops: no training."""
    given = []

    def loop(*args, settings: str, **kwargs) -> dict:
        given.append(settings)
        raise LoopReached

    for module in (mlm, clm, reward_model, dpo):
        monkeypatch.setattr(module, "train", loop)
    with pytest.raises(LoopReached):
        reach_the_loop(stage, stage3_runs, tmp_path)
    assert given == [f"{stage}.train"]


def test_clip_gradients_returns_the_norm_before_clipping_and_clips_nothing_at_grad_clip_0():
    """grad_clip 0 means no clipping (TrainConfig): clipping to norm 0 would zero every gradient."""
    model = torch.nn.Linear(2, 1, bias=False)
    for grad_clip, norm_after in ((0.0, 5.0), (2.5, 2.5)):
        model.weight.grad = torch.tensor([[3.0, 4.0]])  # norm 5
        assert clip_gradients(model, grad_clip, 1, unsaved("clm")).item() == pytest.approx(5.0)
        assert model.weight.grad.norm().item() == pytest.approx(norm_after)


def test_float16_skips_a_step_whose_gradients_overflow_instead_of_stopping(tmp_path):
    run(tmp_path, small_cfg(max_steps=5, dtype="float16"), loss_fn=nan_from_step(3, sqrt_of_zero, 3))
    scaler = load_checkpoint(tmp_path / "ckpt.pt")["scaler"]
    assert scaler["scale"] == 2.0**15  # started at 2**16, halved once, for the one skipped step


def test_another_stages_run_is_neither_resumed_nor_offered_to_be(tmp_path, capsys):
    # a CLM run's folder given to SFT: both GPTs, so the model fits, and the error's advice was to pass
    # resume, which went on from the CLM's optimizer state and step as if they were SFT's own
    run(tmp_path, small_cfg(max_steps=2, save_every=2), desc="clm", run_config={"corpus": None})
    capsys.readouterr()
    for resume in (False, True):
        with pytest.raises(CheckpointError, match=r"is a 'clm' run's checkpoint, not a 'sft' run's: train into"):
            run(tmp_path, small_cfg(max_steps=4), desc="sft", resume=resume, run_config={"init_dir": "runs/clm"})
    assert "resuming" not in capsys.readouterr().out  # no "note: resuming ... from other inputs" before the refusal
    assert run(tmp_path, small_cfg(max_steps=4), desc="clm", resume=True)["history"][-1]["step"] == 4  # its own


def test_a_resume_continues_the_same_experiment_or_names_what_differs(tmp_path, capsys):
    # SFT, the reward model and DPO (stage 1 alone checked) went on silently with another setting of their
    # stage, config.json then recording it for the whole run; and with another tokenizer of the same size
    # (SFT resumed from another CLM run), its weights went on with other ids, and its tokenizer.json was replaced
    tokenizer = train_tokenizer(["the cat sat on the mat, the dog sat on the log"] * 5, 270, progress=False)
    made = {"dpo": {"beta": 0.1, "train": {"lr": 1e-2}}, "sft_dir": "runs/sft"}
    read = {"instructions": {"file": None, "data_seed": 0, "sha256": "41d7" * 16}, "corpus": None}  # (None: unknown)
    run(tmp_path, small_cfg(max_steps=2, save_every=2), run_config=made, tokenizer=tokenizer, read=read)
    assert "corpus" not in json.loads((tmp_path / "config.json").read_text(encoding="utf-8"))  # no record of null
    # the data its records name, checked by the loop itself (a stage 1 run's corpus has no other check)
    with pytest.raises(ConfigError, match=r"cannot resume .*: it read the generated suite \(data_seed 0\), and this "
                                          r"run reads the generated suite \(data_seed 1\); pass --set data_seed=0"):
        run(tmp_path, small_cfg(max_steps=4), run_config=made, tokenizer=tokenizer, resume=True,
            read={"instructions": {"file": None, "data_seed": 1, "sha256": "0123" * 16}})
    with pytest.raises(ConfigError, match=r"cannot resume .*settings differ \(saved -> now\): dpo.beta: 0.1 -> 0.5\."):
        run(tmp_path, small_cfg(max_steps=4), run_config={**made, "dpo": {"beta": 0.5}}, tokenizer=tokenizer,
            resume=True)
    other = train_tokenizer(["a bird flew over the hill and the river"] * 5, 270, progress=False)
    with pytest.raises(ConfigError, match=r"cannot resume .*another tokenizer than the one given now"):
        run(tmp_path, small_cfg(max_steps=4), run_config=made, tokenizer=other, resume=True)
    # how the steps are taken may change (the loop notes it), and so may an input's spelling (noted here)
    moved = {"dpo": {"beta": 0.1, "train": {"lr": 5e-3}}, "sft_dir": "./runs/sft"}
    capsys.readouterr()
    assert run(tmp_path, small_cfg(max_steps=4), run_config=moved, tokenizer=tokenizer,
               resume=True)["history"][-1]["step"] == 4
    assert "other inputs (saved -> now): sft_dir: runs/sft -> ./runs/sft" in capsys.readouterr().out


def test_a_resume_for_more_steps_says_what_the_learning_rate_does(tmp_path, capsys):
    # "train longer" (resume with a larger max_steps) stretches the cosine: the rate jumps up where the run
    # stopped, and the run is not the one a fresh run of that length makes; the note named max_steps only
    short, longer = small_cfg(max_steps=6, warmup_steps=2, save_every=6), small_cfg(max_steps=12, warmup_steps=2)
    run(tmp_path / "decayed", short)
    capsys.readouterr()
    run(tmp_path / "decayed", longer, resume=True)
    note = capsys.readouterr().out
    assert f"step 6 trained at {lr_at(5, short):.3g}, step 7 trains at {lr_at(6, longer):.3g}" in note
    assert lr_at(6, longer) > lr_at(5, short) and "steps 1 to 6 other rates" in note
    # stopped while warming up: the longer schedule gives the steps so far the same rates. The note names
    # the rate step 2 was logged with (2/3 of lr: a note one step off would name 3/3), and step 3's (3/3)
    warmed = run(tmp_path / "warming", small_cfg(max_steps=2, warmup_steps=3, save_every=2))["history"]
    used = next(row["lr"] for row in warmed if row["split"] == "train" and row["step"] == 2)
    assert used == pytest.approx(1e-2 * 2 / 3)
    capsys.readouterr()
    run(tmp_path / "warming", small_cfg(max_steps=4, warmup_steps=3), resume=True)
    note = capsys.readouterr().out
    assert f"step 2 trained at {used:.3g}, step 3 trains at {1e-2:.3g}" in note
    assert "gives steps 1 to 2 the rates they had" in note


# --------------------------------------------------------------------------------------------------
# Which code made a run (provenance.py): recorded beside the run, never in what it trains.


def test_config_json_records_the_code_beside_checkpoints_that_stay_identical(tmp_path):
    # nothing said which minillm, commit, torch or device made a run, so a figure that moved after an
    # upgrade came with no explanation
    for name in ("a", "b"):
        run(tmp_path / name, small_cfg(max_steps=2, save_every=2))
    made = json.loads((tmp_path / "a" / "config.json").read_text(encoding="utf-8"))["made_by"]
    assert made == {**code_record(), "device": "cpu"}
    assert made["minillm"] == minillm.__version__ and made["torch"] == torch.__version__
    assert made["python"] == platform.python_version()
    a, b = (load_checkpoint(tmp_path / name / "ckpt.pt") for name in ("a", "b"))
    assert "made_by" not in a and all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_a_resume_by_other_code_is_noted_and_recorded(tmp_path, capsys):
    run(tmp_path, small_cfg(max_steps=2, save_every=2))
    config = json.loads((tmp_path / "config.json").read_text(encoding="utf-8"))
    earlier = {**config["made_by"], "commit": "0123456789abcdef"}
    (tmp_path / "config.json").write_text(json.dumps({**config, "made_by": earlier}), encoding="utf-8")
    capsys.readouterr()
    run(tmp_path, small_cfg(max_steps=4, save_every=2), resume=True)  # a note, not a refusal
    assert f"made by minillm {minillm.__version__} (commit 0123456789" in capsys.readouterr().out
    made = json.loads((tmp_path / "config.json").read_text(encoding="utf-8"))["made_by"]
    assert made["commit"] == code_record()["commit"] and made["resumed_from"] == earlier
    run(tmp_path, small_cfg(max_steps=6, save_every=2), resume=True)  # the same code again: no note, history kept
    assert "made by" not in capsys.readouterr().out
    assert json.loads((tmp_path / "config.json").read_text(encoding="utf-8"))["made_by"]["resumed_from"] == earlier
    # a run made before the record existed resumes too, from unknown code
    del config["made_by"]
    (tmp_path / "config.json").write_text(json.dumps(config), encoding="utf-8")
    run(tmp_path, small_cfg(max_steps=8, save_every=2), resume=True)
    assert "made by unknown code" in capsys.readouterr().out


def git_checkout(tmp_path) -> Path:
    """A git checkout holding minillm/a.py, committed."""
    checkout = tmp_path / "checkout"
    (checkout / "minillm").mkdir(parents=True)
    (checkout / "minillm" / "a.py").write_text("x = 1\n", encoding="utf-8")
    git = ["git", "-C", str(checkout), "-c", "user.name=t", "-c", "user.email=t@t"]
    for args in (["init", "-q"], ["add", "."], ["commit", "-qm", "c"]):
        subprocess.run([*git, *args], check=True, capture_output=True)
    return checkout


def test_the_commit_is_a_checkouts_own_and_none_without_git(tmp_path, monkeypatch):
    # a wheel installed in a virtual environment inside some other repository is not that repository's code
    def record_with(package_dir, **env):
        monkeypatch.setattr(provenance, "PACKAGE_DIR", package_dir)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        code_record.cache_clear()
        return code_record()

    try:
        checkout = git_checkout(tmp_path)
        head = subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], check=True, capture_output=True,
                              text=True).stdout.strip()
        assert record_with(checkout / "minillm")["commit"] == head and code_record()["dirty"] is False
        (checkout / "notes.txt").write_text("not code", encoding="utf-8")
        assert record_with(checkout / "minillm")["dirty"] is False  # only the package counts
        (checkout / "minillm" / "a.py").write_text("x = 2\n", encoding="utf-8")
        assert record_with(checkout / "minillm")["dirty"] is True
        site = checkout / "venv" / "minillm"  # installed inside the checkout: not its code
        site.mkdir(parents=True)
        assert record_with(site)["commit"] is None and code_record()["dirty"] is None
        no_git = record_with(checkout / "minillm", PATH=str(tmp_path))  # no git at all: still a checkout
        assert no_git["commit"] is None and "(no git commit known)" in provenance.describe(no_git)
    finally:
        code_record.cache_clear()


def test_a_resumed_runs_code_is_named_with_the_code_it_was_resumed_from():
    """What `compare` says of a run that two versions of minillm trained: the last code, then the earlier one."""
    earlier = {"minillm": "0.1.0", "commit": "0123456789abcdef", "dirty": False, "torch": "2.6.0", "python": "3.12.3"}
    later = {**earlier, "commit": "fedcba9876543210", "dirty": True, "resumed_from": earlier}
    assert provenance.describe(later) == (
        "minillm 0.1.0 (commit fedcba9876 with uncommitted changes), torch 2.6.0, Python 3.12.3 (resumed from a run "
        "made by minillm 0.1.0 (commit 0123456789), torch 2.6.0, Python 3.12.3)")


def test_the_record_only_reads_the_checkout(tmp_path, monkeypatch):
    # `git status` rewrote the checkout's index when a file's timestamp had changed, under its index.lock:
    # a `git commit` of the user's at that moment failed with "index.lock: File exists"
    checkout = git_checkout(tmp_path)
    index = checkout / ".git" / "index"
    before = index.stat().st_mtime_ns, index.read_bytes()
    time.sleep(0.01)
    os.utime(checkout / "minillm" / "a.py")  # the same text, touched: git status would refresh the index
    monkeypatch.setattr(provenance, "PACKAGE_DIR", checkout / "minillm")
    code_record.cache_clear()
    try:
        assert code_record()["dirty"] is False
    finally:
        code_record.cache_clear()
    assert (index.stat().st_mtime_ns, index.read_bytes()) == before


def test_float16_stops_at_a_nan_gradient_that_skipping_does_not_cure(tmp_path):
    # every step's gradient is NaN: 17 skipped steps halve the scale from 2**16 to 2**-1, and at step
    # 18 the gradient is named as in float32 instead of the run ending untrained with no error
    with pytest.raises(TrainingError, match=r"step 18: the gradient norm is nan.*'ln_f.weight'"):
        run(tmp_path, small_cfg(max_steps=30, dtype="float16"), loss_fn=nan_from_step(1, sqrt_of_zero))


@pytest.mark.filterwarnings("ignore:Error detected")  # the warning carries the forward traceback
def test_detect_anomaly_points_at_the_operation(tmp_path):
    with pytest.raises(RuntimeError, match="returned nan values"):
        run(tmp_path, small_cfg(max_steps=5, detect_anomaly=True), loss_fn=nan_from_step(3, sqrt_of_zero))
    assert not torch.is_anomaly_enabled()  # switched off again after the run


# --------------------------------------------------------------------------------------------------
# Mixed precision and torch.compile: the same training, within rounding.


@pytest.mark.parametrize("dtype, tolerance", [("bfloat16", 0.01), ("float16", 0.002)])
def test_mixed_precision_follows_the_float32_curve(tmp_path, dtype, tolerance):
    seen = set()

    def loss_fn(model, batch):
        seen.add(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None)
        return next_token_loss(model, batch)

    reference = train_losses(run(tmp_path / "fp32", small_cfg(max_steps=15))["history"])
    mixed = train_losses(run(tmp_path / dtype, small_cfg(max_steps=15, dtype=dtype), loss_fn=loss_fn)["history"])
    assert seen == {getattr(torch, dtype)}  # every forward ran under autocast to that dtype
    assert max(abs(a - b) for a, b in zip(reference, mixed, strict=True)) < tolerance
    assert mixed[-1] < 0.9 * mixed[0]
    scaler_state = load_checkpoint(tmp_path / dtype / "ckpt.pt")["scaler"]
    assert bool(scaler_state) == (dtype == "float16")  # only float16 needs the loss scale


def test_autocast_is_made_for_the_device_the_model_runs_on():
    """On a GPU, an autocast made for "cpu" would leave every CUDA matrix product in float32: mixed precision
    silently off, the run as slow as float32. Checked without a GPU: the context is made, never entered."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "CUDA is not available ... Disabling autocast"
        context = autocast(torch.device("cuda"), "bfloat16")
    assert (context.device, context.fast_dtype) == ("cuda", torch.bfloat16)


def test_compile_gives_the_same_training(tmp_path, monkeypatch):
    # Inductor's C++ code generation takes ~25 s even for a tiny model on one CPU thread, too slow
    # for the suite; "aot_eager" runs the same capture (dynamo graph + AOT autograd) with eager
    # kernels. A bigram model (embedding -> linear) keeps the graph capture itself quick.
    compiled_models = []
    real_compile = torch.compile

    def compile_with_aot_eager(model, **kwargs):
        compiled_models.append(model)
        return real_compile(model, backend="aot_eager", **kwargs)

    monkeypatch.setattr(torch, "compile", compile_with_aot_eager)
    # Compile in this process: a pool of compile workers (torch 2.6 starts one) stays for the session.
    monkeypatch.setattr(torch._inductor.config, "compile_threads", 1)
    results = []
    for name, compile_ in (("eager", False), ("compiled", True)):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Embedding(VOCAB, 16), torch.nn.Linear(16, VOCAB))
        run(tmp_path / name, small_cfg(max_steps=3, compile=compile_), model=model)
        results.append([p.detach() for p in model.parameters()])
    eager, compiled = results
    assert len(compiled_models) == 1  # the compiled run did compile, and the eager one did not
    for a, b in zip(eager, compiled, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    assert not math.isnan(compiled[0].sum().item())


def test_spread_rows_takes_evenly_spaced_rows_and_the_last_once() -> None:
    assert spread_rows(list(range(7)), 6) == [0, 1, 2, 3, 4, 5, 6]  # the last is already in: not twice
    assert spread_rows(list(range(10)), 3) == [0, 3, 6, 9]
    assert spread_rows(list(range(11)), 3) == [0, 3, 6, 9, 10]
    assert spread_rows([], 4) == []


def test_follow_schedule_moves_every_group_in_proportion_at_every_step():
    """warmup 2 then cosine over steps 2..5 to 0.1 * lr, by hand; a group made with 5x the lr keeps 5x."""
    cfg = TrainConfig(max_steps=6, lr=1e-2, warmup_steps=2, min_lr_ratio=0.1)
    by_hand = [5e-3, 1e-2, 1e-2, 1e-2 * (0.1 + 0.9 * 0.75), 1e-2 * (0.1 + 0.9 * 0.25), 1e-3]
    a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.AdamW([{"params": [a]}, {"params": [b], "lr": 5e-2}], lr=cfg.lr)
    for step, lr in enumerate(by_hand):
        assert follow_schedule(optimizer, step, cfg) == pytest.approx(lr)
        assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([lr, 5 * lr])


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_the_optimizer_takes_its_betas_and_weight_decay_from_the_config(optimizer):
    cfg = TrainConfig(optimizer=optimizer, beta1=0.8, beta2=0.99, weight_decay=0.3)
    made = make_optimizer(tiny_gpt(), cfg)
    adamw = made.adamw if optimizer == "muon" else made
    assert {g["betas"] for g in adamw.param_groups} == {(0.8, 0.99)}
    if optimizer == "muon":
        assert {g["weight_decay"] for g in made.muon.param_groups} == {0.3}


def test_muon_takes_the_blocks_matrices_of_a_model_inside_another():
    """The reward model's GPT sits under `body.`: its blocks' matrices are hidden matrices too."""
    model = RewardModel(tiny_gpt().config)
    optimizer = make_optimizer(model, small_cfg(optimizer="muon"))
    muon = {id(p) for group in optimizer.muon.param_groups for p in group["params"]}
    blocks = {id(p) for name, p in model.named_parameters() if name.startswith("body.blocks.") and p.dim() == 2}
    assert blocks and muon == blocks


@pytest.mark.parametrize("loss", [float("nan"), float("inf"), float("-inf")])
def test_a_loss_that_is_not_finite_stops_training(loss):
    with pytest.raises(TrainingError, match=f"^clm: training stopped at step 4: the loss is {loss}"):
        check_loss(loss, 4, unsaved("clm"))


def test_a_gradient_with_one_nan_entry_is_named():
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 3))
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    model[1].weight.grad[0, 2] = float("nan")  # one bad number among nine
    assert first_bad_gradient(model) == "1.weight"


def test_the_first_parameter_with_an_infinite_or_nan_gradient_is_named():
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 3))  # 0.weight, 0.bias, 1.weight, 1.bias
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    model[0].bias.grad[1] = float("inf")  # an overflow, not a NaN
    model[1].weight.grad[0, 0] = float("nan")
    assert first_bad_gradient(model) == "0.bias"  # the first in the model's order, not the last
    model[0].bias.grad[1] = -float("inf")
    assert first_bad_gradient(model) == "0.bias"
    model[0].bias.grad.zero_(), model[1].weight.grad.zero_()
    assert first_bad_gradient(model) == "?"  # nothing to name


@pytest.mark.parametrize("accumulation", [1, 2])
def test_the_validation_loss_is_the_mean_over_the_validation_batches(tmp_path, accumulation):
    """Validation batches whose losses are 1 and 3 (get_batch says which) give val_loss 2, with or
    without accumulation."""
    cfg = small_cfg(max_steps=1, eval_batches=2, grad_accum_steps=accumulation)  # evaluated at its last step
    draw = counting_batch(cfg.batch_size)
    val_losses = iter([1.0, 3.0])

    def get_batch(split, generator):
        batch = draw(split, generator)
        if split == "val":
            batch["val_loss"] = torch.full((cfg.batch_size,), next(val_losses))
        return batch

    def loss_fn(model, batch):
        loss, extra = next_token_loss(model, batch)
        return (batch["val_loss"].mean() if "val_loss" in batch else loss), extra

    result = train(tiny_gpt(), cfg, tmp_path, get_batch=get_batch, loss_fn=loss_fn)
    [row] = [row for row in result["history"] if row["split"] == "val"]
    assert row["val_loss"] == pytest.approx(2.0)


def test_a_fresh_run_trains_the_same_whatever_the_process_drew_before(tmp_path):
    """The loop seeds every generator from cfg.seed: random numbers drawn before train() (here, a
    different number of them) change neither the dropout masks nor anything else of the run."""
    trained = []
    for draws in (0, 7):
        model = tiny_gpt(dropout=0.3)
        torch.rand(draws)  # what the process did before training: draws from the global generators
        [random.random() for _ in range(draws)]
        run(tmp_path / str(draws), small_cfg(max_steps=3, eval_every=100, save_every=100), model=model)
        trained.append([p.detach().clone() for p in model.parameters()])
    for a, b in zip(*trained, strict=True):
        assert torch.equal(a, b)
