"""Did instruction tuning work, and does it generalise? Scores per family and per split.

Every model is asked every test prompt in the same chat template and answers greedily (the most
likely token each step), so a score measures the model, not the luck of sampling. Answers are
generated in batches: prompts have different lengths, so they are *left*-padded, which puts the
last prompt token of every row at the same column and lets all rows generate their next token
together (`GPT.generate` takes the attention mask and positions the real tokens from 0).

Two scores per answer:
- **exact match**: the answer equals the reference after normalisation (`datasets.is_correct`);
- **token F1**: the overlap of the answer's and the reference's words (the harmonic mean of
  precision and recall), partial credit where exact match is all-or-nothing: "Tarsk" for
  "The capital is Tarsk." scores 0 exact but 0.5 F1.

The test splits ask four different questions:
- `seen` (test_seen): new examples of tasks and phrasings seen in training. Did SFT learn?
- `heldout_phrasings`: seen tasks, instructions worded in ways training never used.
- `heldout_families`: whole task types never trained on. Does instruction tuning transfer?
- `world_facts`: facts stated only in the pretraining corpus. Does SFT build on stage 1?

And four models answer them: the **base** CLM (no SFT), **SFT** from the CLM, **SFT from scratch**
(same data, random init, its own steps and lr: what is left without pretraining), and SFT on a **single
family** (same steps: does the variety of training tasks matter for unseen ones?).
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from matplotlib.figure import Figure
from torch import Tensor
from tqdm import tqdm

from minillm.config import SFTConfig, check_section, to_dict
from minillm.datasets.answers import is_correct, normalize_answer
from minillm.datasets.instructions import check_instruction_record
from minillm.datasets.jsonl import check_records, read_records, record_split, write_jsonl
from minillm.errors import ConfigError
from minillm.model import GPT
from minillm.stage2_sft.sft import train_sft, training_records
from minillm.stage2_sft.template import check_room_for_prompt, decode_response, encode_prompt
from minillm.tokenizer import Tokenizer
from minillm.train import load_model_and_tokenizer
from minillm.train.distributed import is_main_process
from minillm.train.plots import MODEL_COLORS, save_figure
from minillm.utils import check_not_one_str, resolve_device, write_json
from minillm.workers import beside, in_one_thread

# test split in the data -> key in metrics.json and the pipeline's report.json
SPLIT_KEYS = {
    "test_seen": "seen",
    "test_heldout_phrasing": "heldout_phrasings",
    "test_heldout_family": "heldout_families",
    "test_world_fact": "world_facts",
}
MODEL_LABELS = {"base": "base (no SFT)", "sft": "SFT", "scratch": "SFT from scratch",
                "single_family": "SFT, one family"}
ANSWERS_NAME = "answers.jsonl"  # every model's answer to every test question, in the SFT run folder


def left_pad(seqs: Sequence[list[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    """Stack sequences into (B, T) ids with pads on the left, and the mask (True = real token)."""
    T = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), T), pad_id, dtype=torch.long)  # (B, T)
    mask = torch.zeros((len(seqs), T), dtype=torch.bool)  # (B, T)
    for row, s in enumerate(seqs):
        ids[row, T - len(s):] = torch.tensor(s, dtype=torch.long)
        mask[row, T - len(s):] = True
    return ids, mask


def answer_bar(total: int, desc: str | None) -> tqdm:
    """A progress bar named `desc` that counts `total` answers; without a name, one that draws nothing."""
    return tqdm(total=total, desc=desc, unit="answer", disable=desc is None, dynamic_ncols=True)


@torch.no_grad()
def generate_answers(
    model: GPT, tokenizer: Tokenizer, prompts: Sequence[str], max_new_tokens: int, batch_size: int = 64,
    *, temperature: float = 0.0, top_k: int | None = None, top_p: float | None = None,
    generator: torch.Generator | None = None, desc: str | None = None,
) -> list[str]:
    """Answers to `prompts`, in order, generated in left-padded batches of similar length.

    Greedy by default (temperature 0); a temperature > 0 samples (from the top_k likeliest tokens, or
    the top_p nucleus, when given), with `generator` for repeatability. With `desc`, a progress bar of
    that name counts the answers: an evaluation answers hundreds of prompts. Without it none is drawn,
    as for a rollout (its step's bar counts it) or a chat reply.
    """
    check_not_one_str("generate_answers", prompts=prompts)
    device = next(model.parameters()).device
    check_room_for_prompt(model.config.block_size, max_new_tokens, "max_new_tokens")
    encoded = [encode_prompt(tokenizer, p, max_len=model.config.block_size - max_new_tokens) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))  # similar lengths, less padding
    answers = [""] * len(prompts)
    with answer_bar(len(prompts), desc) as bar:
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            ids, mask = left_pad([encoded[i] for i in rows], tokenizer.pad_id)  # (B, T0) each
            gen = model.generate(ids.to(device), max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                                 eos_id=tokenizer.eos_id, attention_mask=mask.to(device),
                                 pad_id=tokenizer.pad_id, generator=generator)
            for row, i in enumerate(rows):
                answers[i] = decode_response(tokenizer, gen.new_ids[row].tolist())
            bar.update(len(rows))
    return answers


def token_f1(answer: str, reference: str) -> float:
    """Word-overlap F1 between normalised answer and reference (1.0 when both are empty)."""
    a, r = normalize_answer(answer).split(), normalize_answer(reference).split()
    if not a or not r:
        return float(a == r)
    common = sum(min(a.count(w), r.count(w)) for w in set(a))
    if common == 0:
        return 0.0
    precision, recall = common / len(a), common / len(r)
    return 2 * precision * recall / (precision + recall)


def _has_fields(*fields: str) -> Callable[[dict], dict]:
    """A `check_records` check: the record itself, or ValueError naming the fields it lacks."""
    def check(rec: dict) -> dict:
        missing = [f for f in fields if f not in rec]
        if missing:
            raise ValueError(f"missing field(s) {missing} (`read_jsonl` fills them in for a file's records)")
        return rec
    return check


SCORED_FIELDS = ("split", "family", "reference")  # what `score_answers` reads of each record


def score_answers(records: Sequence[dict], answers: Sequence[str]) -> dict:
    """{split_key: {"exact_match", "f1", "n", "families": {family: {"exact_match", "f1", "n"}}}}."""
    check_records(records, _has_fields(*SCORED_FIELDS), "score_answers")
    cells: dict[str, dict[str, list[tuple[bool, float]]]] = defaultdict(lambda: defaultdict(list))
    for rec, ans in zip(records, answers, strict=True):
        key = SPLIT_KEYS.get(rec["split"])
        if key is not None:
            ref = rec["reference"]
            cells[key][rec["family"]].append((is_correct(ans, ref), token_f1(ans, ref)))

    def summary(pairs: list[tuple[bool, float]]) -> dict:
        return {"exact_match": sum(p[0] for p in pairs) / len(pairs),
                "f1": sum(p[1] for p in pairs) / len(pairs), "n": len(pairs)}

    return {
        key: {**summary([p for fam in cells[key].values() for p in fam]),
              "families": {fam: summary(pairs) for fam, pairs in sorted(cells[key].items())}}
        for key in SPLIT_KEYS.values() if key in cells
    }


def select_test_records(records: Sequence[dict], per_family: int) -> list[dict]:
    """The test records to score: the first `per_family` of each (split, family), or all (0)."""
    kept, seen = [], defaultdict(int)
    for rec in records:
        cell = (rec.get("split"), rec.get("family"))
        if cell[0] in SPLIT_KEYS and (per_family == 0 or seen[cell] < per_family):
            kept.append(rec)
            seen[cell] += 1
    return kept


def evaluate_model(
    model: GPT, tokenizer: Tokenizer, records: Sequence[dict], cfg: SFTConfig, desc: str | None = None
) -> tuple[dict, list[str]]:
    """Scores (see `score_answers`) and the answers of one model on the test records (`desc`: the
    progress bar's name, as in `generate_answers`)."""
    check_section(cfg, SFTConfig, "evaluate_model")
    check_records(records, _has_fields("prompt", *SCORED_FIELDS), "evaluate_model")  # before minutes of generating
    answers = generate_answers(model, tokenizer, [r["prompt"] for r in records], cfg.max_new_tokens,
                               cfg.eval_batch_size, desc=desc)
    return score_answers(records, answers), answers


def exact_match_row(scores: dict) -> dict[str, float]:
    """The four headline numbers (one per split) the pipeline report shows for a model."""
    return {key: scores[key]["exact_match"] for key in SPLIT_KEYS.values() if key in scores}


def plot_scores(table: dict[str, dict], path: Path) -> None:
    """Grouped bars: exact match per split, one bar per model."""
    splits = [k for k in SPLIT_KEYS.values() if any(k in s for s in table.values())]
    width = 0.8 / max(len(table), 1)
    fig = Figure(figsize=(8, 4))
    ax = fig.subplots()
    for m, (name, scores) in enumerate(table.items()):
        xs = [i + (m - (len(table) - 1) / 2) * width for i in range(len(splits))]
        label = MODEL_LABELS.get(name, name)
        bars = ax.bar(xs, [scores.get(k, {}).get("exact_match", 0.0) for k in splits], width, label=label,
                      color=MODEL_COLORS.get(label))
        ax.bar_label(bars, fmt="%.2f", fontsize=7)  # a bar of 0 is invisible: its label says it is there
    ax.set_xticks(range(len(splits)), [s.replace("_", "\n") for s in splits])
    ax.set_ylim(0, 1.08)  # room for the labels above a bar of 1.0
    ax.set_ylabel("exact match")
    ax.set_title("Instruction tuning: exact match per test split")
    ax.legend(fontsize=8)
    save_figure(fig, path)


def single_family_name(records: Sequence[dict], requested: str) -> str:
    """The family the single-family baseline trains on: `requested`, or the largest training family."""
    counts: dict[str, int] = defaultdict(int)
    for rec in training_records(records):
        counts[rec["family"]] += 1
    if requested and requested not in counts:
        raise ConfigError(f"sft.single_family={requested!r} is not a family of the training records; choose one "
                          f"of {', '.join(sorted(counts))}, or leave it empty for the largest")
    return requested or max(sorted(counts), key=counts.__getitem__)


def train_baselines(cfg: SFTConfig, records: list[dict], out_dir: Path, init_dir: str | Path, resume: bool,
                    pretrain_docs: Sequence[str] = (), instructions: dict | None = None,
                    corpus: dict | None = None) -> dict[str, Path]:
    """SFT from scratch (same data, random init) and, if cfg.single_family_baseline, SFT on one family
    (same steps). Both mix in the same pretraining text as SFT does (cfg.pretrain_mix), and record where
    the records and that text came from as SFT does (`instructions`, `corpus`).

    The scratch run trains on `cfg.scratch_train()`: SFT's settings unless cfg.scratch_* say otherwise
    (a NaN's message then names the setting of its rate, sft.scratch_lr).
    A control is only fair when tuned for its own start: SFT's low lr is there to keep what
    pretraining stored, and random weights have nothing to keep.
    """
    base_model, tokenizer = load_model_and_tokenizer(init_dir, GPT)
    base_config = base_model.config
    del base_model  # only its shape is needed: its weights are not kept through both trainings
    scratch_dir, single_dir = out_dir / "baselines" / "scratch", out_dir / "baselines" / "single_family"
    train_sft(dataclasses.replace(cfg, train=cfg.scratch_train()), records, scratch_dir,
              scratch_model_config=base_config, tokenizer=tokenizer, resume=resume,
              pretrain_docs=pretrain_docs, name="sft from scratch", instructions=instructions, corpus=corpus,
              lr_setting="sft.scratch_lr" if cfg.scratch_lr else "")
    if not cfg.single_family_baseline:
        return {"scratch": scratch_dir}
    family = single_family_name(records, cfg.single_family)
    one_family = [r for r in records if record_split(r) != "train" or r["family"] == family]
    train_sft(cfg, one_family, single_dir, init_dir=init_dir, resume=resume, pretrain_docs=pretrain_docs,
              name=f"sft on {family} only", instructions=instructions, corpus=corpus)
    return {"scratch": scratch_dir, "single_family": single_dir}


def run_sft_with_baselines(
    cfg: SFTConfig, records: list[dict], out_dir: str | Path, init_dir: str | Path,
    *, baselines: bool = True, resume: bool = False, pretrain_docs: Sequence[str] = (), side_by_side: bool = False,
    instructions: dict | None = None, corpus: dict | None = None,
) -> dict | None:
    """SFT from `init_dir` into `out_dir`, then score it and the base model (and, with `baselines`,
    SFT from scratch and single-family SFT) on the same test records. `instructions` says where the
    records came from (datasets' `instructions_record`), and `corpus` where `pretrain_docs` did
    (`corpus_record`), for each run's config.json (`train_sft`: the corpus only where it replays it).

    `side_by_side` trains the baselines in a second process while SFT trains in this one, each on one
    thread: on a machine with two free cores the stage then takes about half the time.

    Writes out_dir/metrics.json (the table), out_dir/exact_match.png and out_dir/answers.jsonl.
    Returns the pipeline's "sft" record: seconds (SFT training time), exact_match, base_exact_match,
    scratch_exact_match, single_family_exact_match, the number of test questions per split, the
    per-family table under "models", and how many of the model's parameters SFT trained (trainable_params
    of params: fewer with LoRA); None on torchrun's ranks other than 0 (minillm.train.distributed).
    """
    check_section(cfg, SFTConfig, "run_sft_with_baselines")
    out_dir = Path(out_dir)
    started = time.perf_counter()
    check_records(records, check_instruction_record, "SFT")  # as train_sft does: one not a dict, say, is named
    tests = select_test_records(records, cfg.eval_per_family)
    if not tests:  # said before minutes of training, and no baseline is trained for a comparison never made
        warnings.warn(f"the instruction records hold no test records (split {', '.join(SPLIT_KEYS)}): SFT trains, "
                      "but nothing is evaluated and no baseline is trained; give some records a test split "
                      "(data/README.md) to measure what SFT learnt", stacklevel=2)
        baselines = False
    # named (and a typo refused) before minutes of training, not after
    single_family = single_family_name(records, cfg.single_family) if baselines and cfg.single_family_baseline else None
    runs: dict[str, str | Path] = {"base": init_dir, "sft": out_dir}
    if baselines and side_by_side:
        with beside(train_baselines, cfg, records, out_dir, init_dir, resume, list(pretrain_docs),
                    instructions, corpus) as trained:
            sft_run = in_one_thread(train_sft, cfg, records, out_dir, init_dir=init_dir, resume=resume,
                                    pretrain_docs=pretrain_docs, instructions=instructions, corpus=corpus)
        runs.update(trained.result())
    else:
        sft_run = train_sft(cfg, records, out_dir, init_dir=init_dir, resume=resume, pretrain_docs=pretrain_docs,
                            instructions=instructions, corpus=corpus)
        if baselines:
            runs.update(train_baselines(cfg, records, out_dir, init_dir, resume, pretrain_docs, instructions, corpus))
    if not is_main_process():  # under torchrun, rank 0 alone answers the tests and writes the table
        return None
    table, answers = {}, {}
    for name, run_dir in runs.items():
        model, tokenizer = load_model_and_tokenizer(run_dir, GPT, map_location=resolve_device(cfg.train.device))
        table[name], answers[name] = evaluate_model(model, tokenizer, tests, cfg,
                                                    desc=f"test answers, {MODEL_LABELS.get(name, name)}")
    report = {
        "seconds": sft_run["final"].get("elapsed_s", sft_run["seconds"]),  # training time, resumes included
        "total_seconds": time.perf_counter() - started,
        "first_loss": sft_run["first_loss"],
        "final_loss": sft_run["final_loss"],
        "trainable_params": sft_run["trainable_params"],  # all of them, or LoRA's adapters (and also_train)
        "params": sft_run["params"],
        "template": sft_run["template"],
        **{("exact_match" if n == "sft" else f"{n}_exact_match"): exact_match_row(s) for n, s in table.items()},
        "f1": {n: {k: s[k]["f1"] for k in exact_match_row(s)} for n, s in table.items()},
        "single_family": single_family,
        "test_examples": len(tests),
        "questions": {key: table["sft"][key]["n"] for key in exact_match_row(table["sft"])},  # per split
        "models": table,
        "config": to_dict(cfg),
    }
    write_json(out_dir / "metrics.json", report)
    plot_scores(table, out_dir / "exact_match.png")
    write_jsonl(out_dir / ANSWERS_NAME, [
        {**{k: rec[k] for k in ("id", "family", "split", "prompt", "reference")},
         **{name: ans[i] for name, ans in answers.items()}}
        for i, rec in enumerate(tests)
    ])
    return report


def read_answers(out_dir: str | Path) -> list[dict]:
    """The answers `run_sft_with_baselines` wrote: one row per test question, with its id, family,
    split, prompt and reference, and each model's answer under the model's name ("base", "sft", ...).

    They are only shown (report.md, lesson 5), so a damaged line is skipped with a warning: stopping
    would advise --skip-bad-lines, which only applies to the JSONL files a user gives."""
    return read_records(Path(out_dir) / ANSWERS_NAME, check=dict, on_error="skip")


def format_table(report: dict) -> str:
    """The exact-match table as text: one row per model, one column per split."""
    rows = [(n, report["models"][n]) for n in MODEL_LABELS if n in report["models"]]
    keys = list(SPLIT_KEYS.values())
    lines = [f"{'model':20s}" + "".join(f"{k:>20s}" for k in keys)]  # a cell: "      92% (F1 0.95)"
    for name, scores in rows:
        cells = "".join(f"{scores[k]['exact_match']:>10.0%} (F1 {scores[k]['f1']:.2f})" if k in scores
                        else f"{'-':>20s}" for k in keys)
        lines.append(f"{MODEL_LABELS[name]:20s}{cells}")
    return "\n".join(lines)
