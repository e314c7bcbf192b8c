"""Rankings of answers: sampling them from the SFT model, storing them, reading them back.

The data of RLHF is not "the right answer" but "which answer is better". For each prompt we sample
K answers from the SFT policy and have them ranked, best first (InstructGPT asked its labellers for
rankings of 4 to 9 answers). A ranking of K holds K*(K-1)/2 comparisons, "answer a beats answer b",
all of which train the reward model (`ranking_to_pairs`).

A preferences file is JSONL, one ranking per line:

    {"prompt": "Uppercase: red fox", "answers": ["RED FOX", "red fox", "Sure! RED FOX.", "RED"],
     "ranking": [0, [2, 3], 1], "id": "rewrite-17", "annotator": "simulated"}

`ranking` lists the 0-based indices of `answers` from best to worst; a list inside it is a group
of answers judged equally good. Here answer 0 is best, 2 and 3 tie, answer 1 is worst. `prompt`,
`answers` (at least two, all different) and `ranking` (each of 0..K-1 exactly once) are required;
`split`, when given, is "train" or "test" (held out); anything else (`id`, `annotator`) is kept as it is.

Files written by people or by hand can be damaged. `read_preferences` reports every bad line by
number and reason, skips it, and keeps all the good ones; it never drops a line silently (the
line-numbered JSONL reading itself is `datasets.jsonl.read_records`; this module brings the check).

Answers sampled from a policy serve twice: as the answers to rank (`collect_rankings`), and in the
comparison that judges every stage-3 method: the policy and the SFT model answer the same held-out
prompts (`compare_policies`), and the **gold judge** scores both answers.
The gold judge is the simulated annotator's scoring function without its noise (annotator.py's
`gold_score`): what people prefer. Policies train on a reward model or a verifier instead, so that
the judge measures them from outside (only the oracle runs, reward "gold", train on it).
"""

from __future__ import annotations

import math
import os
import time
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from minillm.config import RewardConfig, check_section
from minillm.datasets.jsonl import read_records, record_split, write_jsonl
from minillm.errors import ConfigError, DataError
from minillm.model import GPT
from minillm.stage2_sft.evaluate import generate_answers
from minillm.stage2_sft.template import check_room_for_prompt
from minillm.stage3_rlhf.annotator import (
    SimulatedAnnotator,
    gold_score,
    has_style_flaw,
    is_wrong,
    mean_stderr,
    ranking_places,
    ranking_to_pairs,
    win_rate,
    win_rate_ceiling,
    win_rate_stderr,
)
from minillm.tokenizer import Tokenizer
from minillm.train import load_model_and_tokenizer
from minillm.utils import json_text, resolve_device, writing


def check_preference(obj: dict) -> dict:
    """`obj`, its prompt and answers in NFC, if it is a valid ranking record; ValueError naming the problem
    otherwise."""
    missing = [k for k in ("prompt", "answers", "ranking") if k not in obj]
    if missing:
        raise ValueError(f"missing field(s) {missing}")
    prompt, answers, ranking = obj["prompt"], obj["answers"], obj["ranking"]
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError("'prompt' must be a non-empty string")
    if not isinstance(answers, list) or len(answers) < 2 or not all(isinstance(a, str) for a in answers):
        raise ValueError("'answers' must be a list of at least 2 strings")
    # in NFC, as an instruction file is read: a ranking written by hand on a Mac (decomposed Hangul) is
    # then the text the model read, not bytes its tokenizer never merged
    prompt, answers = unicodedata.normalize("NFC", prompt), [unicodedata.normalize("NFC", a) for a in answers]
    if len(set(answers)) != len(answers):
        raise ValueError("'answers' holds duplicates; comparing an answer with itself teaches nothing")
    places = ranking_places(ranking) if isinstance(ranking, list) else []
    flat = [i for place in places for i in place]
    if (not places or not all(place for place in places)
            or not all(isinstance(i, int) and not isinstance(i, bool) for i in flat)
            or sorted(flat) != list(range(len(answers)))):
        raise ValueError(f"'ranking' {ranking!r} does not name each of 0..{len(answers) - 1} exactly once "
                         "(the best answer's index first; tied answers in a list, e.g. [0, [2, 3], 1])")
    if record_split(obj) not in ("train", "test"):
        raise ValueError(f"'split' {obj['split']!r}: a ranking is \"train\" or \"test\" (held out)")
    return {**obj, "prompt": prompt, "answers": answers}


def read_preferences(path: str | os.PathLike, skipped: list[tuple[int, str]] | None = None) -> list[dict]:
    """The valid rankings of a JSONL file. Bad lines are skipped, listed in a warning, and
    appended to `skipped` as (line number, reason); DataError if none is valid or the file is missing."""
    return read_records(path, check_preference, on_error="skip", skipped=skipped)


HELD_OUT_EVERY = 5  # every 5th ranking is held out


def split_of(index: int) -> str:
    """The "split" of the `index`-th ranking written to a file: every 5th is "test", held out."""
    return "test" if index % HELD_OUT_EVERY == HELD_OUT_EVERY - 1 else "train"


def check_rankings_hold_one_out(n_prompts: int) -> None:
    """ConfigError unless `n_prompts` rankings (reward.n_prompts) include a held-out one (`split_of`): the
    reward model, and DPO, are refused without one, and only after the minutes of sampling them."""
    if n_prompts < HELD_OUT_EVERY:
        raise ConfigError(f"reward.n_prompts={n_prompts} holds no ranking out (every {HELD_OUT_EVERY}th is), and the "
                          f"reward model and DPO are measured on held-out rankings; use reward.n_prompts >= "
                          f"{HELD_OUT_EVERY}")


def split_rankings(records: Sequence[dict]) -> tuple[list[dict], list[dict]]:
    """(train, held-out) rankings: by their "split" field when every record has one, or by their
    place in the file, as `split_of` names them, when none has; DataError when only some have."""
    unlabelled = sum("split" not in r for r in records)
    if 0 < unlabelled < len(records):  # which rule would hold out which ranking is unclear
        raise DataError(f"{unlabelled} of {len(records)} rankings have no \"split\" and the others have one: give "
                        "every ranking a \"split\" (\"train\" or \"test\"), or none (then every "
                        f"{HELD_OUT_EVERY}th is held out)")
    splits = [split_of(i) if unlabelled else r["split"] for i, r in enumerate(records)]
    pairs = list(zip(records, splits, strict=True))
    return [r for r, split in pairs if split != "test"], [r for r, split in pairs if split == "test"]


def not_enough_rankings(path: str | os.PathLike, needs: str, n_train: int, n_held_out: int) -> DataError:
    """The error for a rankings file too small to split: the numbers found, and how many it takes."""
    return DataError(
        f"{path}: {needs}, got {n_train} and {n_held_out}; collect more rankings: at least {HELD_OUT_EVERY} "
        f"(every {HELD_OUT_EVERY}th is held out, or give every ranking a \"split\": \"train\" or \"test\"), and a "
        "few hundred to learn much (minillm annotate, or the simulated annotator)")


def append_preference(path: str | os.PathLike, record: dict) -> None:
    """Append one ranking as a JSON line and push it to disk now: Ctrl-C a moment later loses nothing."""
    path = Path(path)
    # A line cut off by a crash is left alone (the reader reports it), but the new one starts on its own line.
    needs_newline = path.is_file() and path.stat().st_size > 0 and not path.read_bytes().endswith(b"\n")
    with writing(path), open(path, "a", encoding="utf-8") as f:
        f.write(("\n" if needs_newline else "") + json_text(record, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


# --------------------------------------------------------------------------------------------------
# Sampling answers from a policy: for rankings, and to compare two policies.


@torch.no_grad()
def sample_distinct_answers(
    model: GPT, tokenizer: Tokenizer, prompts: Sequence[str], k: int, temperature: float, max_new_tokens: int,
    generator: torch.Generator, rounds: int = 4, desc: str | None = None,
) -> list[list[str]]:
    """Up to `k` different answers per prompt: sample k each, then resample the prompts still short.

    A confident model often says the same thing twice; a ranking needs different answers, so we try
    again (at most `rounds` times). Prompts may end with fewer than k: the caller decides. `desc`
    names each round's progress bar (`generate_answers`).
    """
    found: list[list[str]] = [[] for _ in prompts]
    for _ in range(rounds):
        short = [i for i, answers in enumerate(found) if len(answers) < k]
        if not short:
            break
        owners = [i for i in short for _ in range(k)]  # each short prompt asked k more times
        for i, answer in zip(owners, generate_answers(
                model, tokenizer, [prompts[i] for i in owners], max_new_tokens, temperature=temperature,
                generator=generator, desc=desc), strict=True):
            if answer not in found[i] and len(found[i]) < k:
                found[i].append(answer)
    return found


def compare_policies(
    policy: GPT, baseline: GPT, tokenizer: Tokenizer, records: Sequence[dict], temperature: float,
    max_new_tokens: int, seed: int = 0, name: str = "policy",
) -> dict[str, Any]:
    """Both policies answer every record (`sample_answers`, the same seed for both); the gold judge
    compares the answers (`compare_answers`, which says what is returned). Each shows a progress bar:
    the policy's named `name` (its run: "ppo"), the baseline's "SFT model", which every caller compares with."""
    policy_answers, baseline_answers = (sample_answers(model, tokenizer, records, temperature, max_new_tokens, seed,
                                                       desc=f"held-out answers, {who}")
                                        for model, who in ((policy, name), (baseline, "SFT model")))
    return compare_answers(records, policy_answers, baseline_answers)


def sample_answers(model: GPT, tokenizer: Tokenizer, records: Sequence[dict], temperature: float, max_new_tokens: int,
                   seed: int, desc: str | None = None) -> list[str]:
    """One answer per record, sampled from a generator seeded with `seed`: with the same seed, the
    same model gives the same answers, so a baseline's answers can be drawn again to compare with.
    `desc` names a progress bar (`generate_answers`)."""
    return generate_answers(model, tokenizer, [r["prompt"] for r in records], max_new_tokens,
                            temperature=temperature, generator=torch.Generator().manual_seed(seed), desc=desc)


def compare_answers(records: Sequence[dict], policy_answers: Sequence[str], baseline_answers: Sequence[str]
                    ) -> dict[str, Any]:
    """The gold judge's verdict on two answers to every record, one from a policy, one from a baseline.

    Returns {"win_rate": policy vs baseline (ties half), "win_rate_stderr": its standard error,
    "win_rate_ceiling": what a perfect policy would win against the same baseline answers,
    "win_rate_by_family": {family: win rate on its records}, "gold_policy", "gold_baseline": mean gold
    scores (and "gold_policy_stderr", "gold_baseline_stderr" their standard errors),
    "style_flaws_policy", "style_flaws_baseline": the share of answers with a style flaw
    (`has_style_flaw`), "wrong_policy", "wrong_baseline": the share without the right answer in them,
    "answers_policy", "answers_baseline": the answers, in the order of `records`; "prompts",
    "references", "gold_scores_policy", "gold_scores_baseline": the records' prompts, right answers
    and each answer's gold score, in the same order}.

    Flaws and wrong answers are told apart because RL treats them differently: a flaw is one habit
    on every prompt (drop the rude sign-off), which a few hundred rollouts unlearn; a wrong answer is
    a different fact or operation on each prompt, which a policy has to know.
    """
    answers = {"policy": list(policy_answers), "baseline": list(baseline_answers)}
    gold = {name: [gold_score(r, a) for r, a in zip(records, ans, strict=True)] for name, ans in answers.items()}
    families = sorted({r.get("family", "custom") for r in records})
    rows_of = {f: [i for i, r in enumerate(records) if r.get("family", "custom") == f] for f in families}
    return {
        "win_rate": win_rate(gold["policy"], gold["baseline"]),
        "win_rate_stderr": win_rate_stderr(gold["policy"], gold["baseline"]),
        "win_rate_ceiling": win_rate_ceiling(records, gold["baseline"]),
        # per task family: RL need not help every kind of request alike (11 to 31 prompts per
        # family among the tiny preset's 200, so each of these moves by 0.1 from run to run)
        "win_rate_by_family": {f: win_rate([gold["policy"][i] for i in rows], [gold["baseline"][i] for i in rows])
                               for f, rows in rows_of.items()},
        "gold_policy": sum(gold["policy"]) / len(records),
        "gold_baseline": sum(gold["baseline"]) / len(records),
        "gold_policy_stderr": mean_stderr(gold["policy"]),
        "gold_baseline_stderr": mean_stderr(gold["baseline"]),
        **{f"style_flaws_{name}": sum(map(has_style_flaw, records, ans)) / len(records)
           for name, ans in answers.items()},
        **{f"wrong_{name}": sum(map(is_wrong, records, ans)) / len(records) for name, ans in answers.items()},
        "answers_policy": answers["policy"],
        "answers_baseline": answers["baseline"],
        "prompts": [r["prompt"] for r in records],
        "references": [r.get("reference", "") for r in records],
        "gold_scores_policy": gold["policy"],
        "gold_scores_baseline": gold["baseline"],
    }


PREFS_NAME = "prefs.jsonl"  # the rankings a reward-model run collects into its folder, or finds there


def collect_rankings(
    cfg: RewardConfig, sft_dir: str | os.PathLike, records: Sequence[dict], out_path: str | os.PathLike,
) -> dict[str, Any]:
    """Sample K different answers from the SFT model for training prompts, rank them, write the file.

    Prompts are the "train" records, in a seeded random order, until `cfg.n_prompts` rankings of K
    answers exist (a prompt whose answers are too alike to give K different ones is passed over and
    counted). Every 5th ranking is marked "split": "test", held out to measure the reward model.
    Returns {"n_rankings", "n_pairs", "prompts_passed_over", "seconds"}.
    """
    check_section(cfg, RewardConfig, "collect_rankings")
    start = time.perf_counter()
    check_rankings_hold_one_out(cfg.n_prompts)
    policy, tokenizer = load_model_and_tokenizer(sft_dir, GPT, map_location=resolve_device(cfg.train.device))
    check_room_for_prompt(policy.config.block_size, cfg.max_new_tokens, "RewardConfig.max_new_tokens")
    generator = torch.Generator().manual_seed(cfg.train.seed)
    pool = [r for r in records if record_split(r) == "train"]
    pool = [pool[i] for i in torch.randperm(len(pool), generator=generator).tolist()]
    annotator = SimulatedAnnotator(cfg.annotator_noise, seed=cfg.train.seed, tie_margin=cfg.annotator_tie_margin)
    K, lines, passed_over, cursor = cfg.answers_per_prompt, [], 0, 0
    while len(lines) < cfg.n_prompts and cursor < len(pool):
        # Not every prompt gives K different answers (a confident model repeats itself), and a prompt that
        # does not is passed over: ask for 1.4x the rankings still missing.
        chunk = pool[cursor:cursor + math.ceil(1.4 * (cfg.n_prompts - len(lines)))]
        cursor += len(chunk)
        answer_sets = sample_distinct_answers(policy, tokenizer, [r["prompt"] for r in chunk], K,
                                              cfg.sample_temperature, cfg.max_new_tokens, generator,
                                              desc=f"answers to rank ({len(lines)}/{cfg.n_prompts} rankings)")
        for record, answers in zip(chunk, answer_sets, strict=True):
            if len(answers) < K:
                passed_over += 1
            elif len(lines) < cfg.n_prompts:
                lines.append({"id": record.get("id", ""), "prompt": record["prompt"], "answers": answers,
                              "ranking": annotator.rank(record, answers),
                              "split": split_of(len(lines)), "annotator": "simulated"})
    if not lines:
        # (a model whose training diverged says one thing whatever it is asked: the advice names both causes)
        raise DataError(f"no prompt gave {K} different answers from the SFT model {sft_dir}; lower "
                        "reward.answers_per_prompt or raise reward.sample_temperature; or its training went wrong "
                        f"(see the loss in {Path(sft_dir) / 'metrics.jsonl'}): train it again, with a lower lr if "
                        "it diverged")
    write_jsonl(out_path, lines)
    return {"n_rankings": len(lines), "n_pairs": sum(len(ranking_to_pairs(line["ranking"])) for line in lines),
            "prompts_passed_over": passed_over, "seconds": time.perf_counter() - start}


# The draw that every policy and the SFT model answer the held-out prompts with (compare_policies, the
# comparison table, pass@k). Fixed, as the prompts are (heldout_records): a training seed moves
# the policy it trains, never the SFT baseline's answers nor another policy's figures, so runs that
# differ in a seed compare on the same baseline. 1337 is TrainConfig.seed's default: the journey's
# figures stay those it drew when each stage compared with its own training seed.
EVAL_SEED = 1337


def heldout_records(records: Sequence[dict], n: int) -> list[dict]:
    """`n` test records (any split but "train"), drawn in one fixed order (seed 0, whatever the run's seed):
    the prompts policies are compared on, the same for every run."""
    tests = [r for r in records if record_split(r) != "train"]
    if not tests:
        raise DataError("no held-out records (split != 'train') to compare the policies on; pass the instruction "
                        "records with their test splits too")
    order = torch.randperm(len(tests), generator=torch.Generator().manual_seed(0)).tolist()
    return [tests[i] for i in order[:n]]


def comparison_summary(comparison: dict[str, Any], n_examples: int = 5) -> dict[str, Any]:
    """The report's keys for a policy compared with the SFT model, and a few answers side by side.

    "examples": the first `n_examples` prompts as {"prompt", "sft", "after", "reference", "gold_sft",
    "gold_after"} (the question, the SFT model's answer, the policy's, the right answer, and the gold
    judge's score of each answer), so a reader can tell which answer is right. "changed_examples":
    the same for the prompts whose gold score changed most (measured, not picked by hand; fewer when
    fewer changed): where to look to see what the training did.
    """
    keys = ("prompts", "answers_baseline", "answers_policy", "references", "gold_scores_baseline",
            "gold_scores_policy")
    rows = [dict(zip(("prompt", "sft", "after", "reference", "gold_sft", "gold_after"), values, strict=True))
            for values in zip(*(comparison[key] for key in keys), strict=True)]
    changed = sorted((row for row in rows if row["gold_after"] != row["gold_sft"]),
                     key=lambda row: -abs(row["gold_after"] - row["gold_sft"]))
    return {
        "win_rate_vs_sft": comparison["win_rate"],
        "win_rate_stderr": comparison["win_rate_stderr"],
        "win_rate_ceiling": comparison["win_rate_ceiling"],
        "win_rate_by_family": comparison["win_rate_by_family"],
        "gold_sft": comparison["gold_baseline"],
        "gold_after": comparison["gold_policy"],
        "gold_sft_stderr": comparison["gold_baseline_stderr"],
        "gold_after_stderr": comparison["gold_policy_stderr"],
        "style_flaws_sft": comparison["style_flaws_baseline"],
        "style_flaws_after": comparison["style_flaws_policy"],
        "wrong_sft": comparison["wrong_baseline"],
        "wrong_after": comparison["wrong_policy"],
        "examples": rows[:n_examples],
        "changed_examples": changed[:n_examples],
    }
