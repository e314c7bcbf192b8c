"""The journey's report: report.json (its key figures, machine-readable) and report.md (the page a
learner reads), written from the results of a finished pipeline run (pipeline.py).

report.json keeps, per stage, its seconds and the figures REPORT_KEYS names, in the shape the README
documents. report.md tells the journey in order: the tokenizer, pretraining, SFT, RLHF and GRPO,
each as its own section function, with each figure beside its baseline, its plots and examples.
The file reads in that order: report.json (`build_report`, `write_report`), then report.md
(`render_markdown`) and its sections, each followed by its helpers; last, the cells every section
writes (`_fmt`, `_linked`, `table_row`, `quote`; a win rate's is annotator.win_rate_text).

Nothing here trains or samples: every number comes from a step's result (`Journey.results`) or from
a file a step wrote into its folder (answers, plots).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from minillm.config import RL_REWARDS, SPM_MODEL_TYPES, PipelineConfig, TokenizerConfig
from minillm.provenance import code_summary
from minillm.stage1_pretrain.data import SUBSET_NOTE
from minillm.stage1_pretrain.mlm import EVAL_MASKING
from minillm.stage2_sft.evaluate import ANSWERS_NAME, SPLIT_KEYS, read_answers
from minillm.stage3_rlhf.annotator import win_rate_text
from minillm.stage3_rlhf.scoreboard import pass_at_k_line, render_table
from minillm.utils import atomic_write_bytes, write_json

if TYPE_CHECKING:  # (the pipeline imports this module to write its report)
    from minillm.pipeline import Journey

# How the report and the comparison table name each stage-3 policy, and the pipeline step that trains it.
GRPO_POLICIES = {"GRPO (reward model)": "grpo", "GRPO (verifiable)": "grpo_verifiable"}  # label -> step
# what each online-RL label names as its reward (PPOConfig.reward, GRPOConfig.reward)
LABEL_REWARDS = {"PPO": "model", "GRPO (reward model)": "model", "GRPO (verifiable)": "verifiable"}
RL_POLICIES = {"PPO": "ppo", "DPO": "dpo", **GRPO_POLICIES}  # every policy stage 3 trains
FLASH_FLOOD_SENTENCE = "A flash flood watch will be in effect all night."  # report.md shows its tokens

# report.json: per stage, the figures of its result that the report keeps (besides its seconds)
REPORT_KEYS = {
    "tokenizer": ("vocab_size", "tokens_per_byte"),
    "mlm": ("val_masked_accuracy", "unigram_masked_accuracy", "unigram_masked_loss", "fill_mask_top5"),
    "clm": ("val_perplexity", "unigram_perplexity"),
    "sft": ("exact_match", "base_exact_match", "scratch_exact_match", "single_family_exact_match", "questions"),
    "reward_model": ("pairwise_accuracy", "gold_agreement", "annotator_agreement"),
    "ppo": ("win_rate_vs_sft", "win_rate_stderr", "win_rate_ceiling", "win_rate_by_family", "gold_sft",
            "gold_after", "style_flaws_sft", "style_flaws_after", "wrong_sft", "wrong_after"),
    "dpo": ("win_rate_vs_sft", "win_rate_stderr", "win_rate_ceiling", "win_rate_by_family", "gold_sft",
            "gold_after", "style_flaws_sft", "style_flaws_after", "wrong_sft", "wrong_after"),
    "grpo": ("win_rate_vs_sft", "win_rate_stderr", "pass_at_1_sft", "pass_at_1_after", "gold_sft", "gold_after",
             "style_flaws_sft", "style_flaws_after"),
    "grpo_verifiable": ("win_rate_vs_sft", "win_rate_stderr", "pass_at_1_sft", "pass_at_1_after", "gold_sft",
                        "gold_after", "style_flaws_sft", "style_flaws_after"),
}


def build_report(cfg: PipelineConfig, device: str, results: dict[str, dict]) -> dict:
    """report.json: per stage its seconds and key numbers (the shape the README documents)."""
    stages = {}
    for name, keys in REPORT_KEYS.items():
        result = results[name]
        # the step's wall time (training plus its evaluations and baselines); "train_seconds" is the
        # part the stage itself calls training (e.g. SFT without its from-scratch baseline)
        stages[name] = {"seconds": round(float(result.get("wall_seconds", result["seconds"])), 2),
                        "train_seconds": round(float(result["seconds"]), 2),
                        **{k: result[k] for k in (*keys, "copied_from") if k in result}}
    stages["mlm"]["fill_mask_top5"] = [piece.strip() for piece, _ in results["mlm"]["fill_mask_top5"]]
    table = results["rl_table"]
    for name, step in RL_POLICIES.items():
        # "kl": the policy's KL to the SFT model on the held-out prompts, the comparison table's column.
        # The training log's KL is another number (answers to the last step's training prompts, sampled
        # before its update), so it goes by its own name.
        stages[step]["kl"] = table["rows"][name]["kl"]
        if "kl" in results[step]:
            stages[step]["kl_last_step"] = results[step]["kl"]
    for name, step in GRPO_POLICIES.items():
        stages[step]["pass_at_k_sft"] = table["pass_at_k"]["SFT"]
        stages[step]["pass_at_k_after"] = table["pass_at_k"][name]
    stages["best_of_n"] = {"seconds": 0.0, **table["best_of_n"]}
    stages["rl_table"] = {"seconds": round(float(table["wall_seconds"]), 2), "rows": table["rows"],
                          **{k: table[k] for k in ("pass_at_k", "pass_at_k_stderr", "pass_at_k_gain") if k in table},
                          "n_prompts": table["n_prompts"]}  # a table made before the errors were measured has none
    if "copied_from" in table:  # copied from another run (reuse_from), as any step may be
        stages["rl_table"]["copied_from"] = table["copied_from"]
    return {"preset": cfg.preset, "device": device,
            "seconds": round(sum(s["seconds"] for s in stages.values()), 2), "stages": stages}


REPORT_FILES = ("report.json", "report.md")


def write_report(j: Journey, device: str, wall_seconds: float) -> dict:
    """Write report.md and report.json for the finished steps in `j.results`; return the report.

    report.json comes last, each file whole or not at all (atomically): a folder that holds a
    report.json holds the report of the journey its config.json describes, whole (`remove_report`).
    """
    report = build_report(j.cfg, device, j.results)
    # "seconds" adds up the steps' times; "wall_seconds" is how long this call took, which is less
    # with steps side by side (`jobs`), and far less for a rerun that finds its steps already done
    report["wall_seconds"] = round(wall_seconds, 2)
    report["jobs"] = j.jobs
    json_path, page_path = (j.out_dir / name for name in REPORT_FILES)
    atomic_write_bytes(page_path, render_markdown(report, j).encode("utf-8"))
    write_json(json_path, report)
    return report


def remove_report(out_dir: Path) -> None:
    """Delete a pipeline run's report, report.json first, before the run starts again (`write_report`
    writes a new one when it ends). Left there, the report of the settings before would stand beside
    the new config.json until then, and a run stopped in between (an experiment's `--set`, Ctrl-C, a
    kill) would keep it for good: `minillm compare` would give the new settings the old figures."""
    for name in REPORT_FILES:
        (out_dir / name).unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------------
# report.md: the page, then its sections in the order it reads, each followed by its helpers.

def render_markdown(report: dict, j: Journey) -> str:
    """report.md: what each stage did, its key number against its baseline, its plot, examples.

    Each figure is report.json's (`report["stages"]`, `s` in every section), so the page and the file
    never disagree; what report.json does not keep (counts, samples, examples, the settings) comes
    from the step's result (`j.results`), its folder, or the config (`j.cfg`)."""
    s = report["stages"]
    lines = [
        f"# minillm report: preset `{report['preset']}` on {report['device']}",
        "",
        "All three stages of training a language model, end to end; its steps took "
        f"{report['seconds']:.0f} s in all: the stages in the table below, and {s['rl_table']['seconds']:.0f} s "
        f"for section 4's comparison of every model (`{j.folder('rl_table').name}`).",
        *copied_note(s),
        "",
        f"Made by {made_by_text(j)}.",
        "",
        "| stage | key number | baseline | seconds |",
        "| --- | --- | --- | --- |",
        f"| tokenizer | {_fmt(s['tokenizer']['tokens_per_byte'])} tokens/byte | 1.000 (raw bytes) "
        f"| {s['tokenizer']['seconds']:.0f} |",
        f"| MLM (BERT) | masked accuracy {_fmt(s['mlm']['val_masked_accuracy'])} "
        f"| unigram {_fmt(s['mlm']['unigram_masked_accuracy'])} | {s['mlm']['seconds']:.0f} |",
        f"| CLM (GPT) | perplexity {_fmt(s['clm']['val_perplexity'])} "
        f"| unigram {_fmt(s['clm']['unigram_perplexity'])} | {s['clm']['seconds']:.0f} |",
        f"| SFT | exact match, held-out phrasings {_fmt(s['sft']['exact_match'].get('heldout_phrasings'))} "
        f"| base model {_fmt(s['sft']['base_exact_match'].get('heldout_phrasings'))} | {s['sft']['seconds']:.0f} |",
        f"| reward model | pairwise accuracy {_fmt(s['reward_model']['pairwise_accuracy'])} "
        f"| chance 0.5 (ceiling {_fmt(s['reward_model'].get('gold_agreement'))}: the rankings' agreement "
        "with the gold judge) "
        f"| {s['reward_model']['seconds']:.0f} |",
        f"| PPO | win rate vs SFT {win_rate_text(s['ppo'])} | 0.5 | {s['ppo']['seconds']:.0f} |",
        f"| DPO | win rate vs SFT {win_rate_text(s['dpo'])} | 0.5 | {s['dpo']['seconds']:.0f} |",
        f"| GRPO (reward model) | win rate vs SFT {win_rate_text(s['grpo'])} | 0.5 | {s['grpo']['seconds']:.0f} |",
        f"| GRPO (verifiable) | win rate vs SFT {win_rate_text(s['grpo_verifiable'])}, pass@1 "
        f"{_fmt(s['grpo_verifiable']['pass_at_1_sft'])} -> {_fmt(s['grpo_verifiable']['pass_at_1_after'])} "
        f"| 0.5 | {s['grpo_verifiable']['seconds']:.0f} |",
        *_relabelled_rewards_note(j),
        "",
        "Higher is better for every key number but tokens/byte and perplexity, where lower is. A win rate is "
        "judged by the gold judge (section 3) against the SFT model's own sampled answers, so 0.5 is no better "
        "and no worse; ± is one standard error. Each section below says what its numbers mean; the lessons "
        "(README) teach each stage, and docs/findings.md says what was tried and measured.",
        "",
        *_tokenizer_section(report, j),
        *_pretraining_section(report, j),
        *_sft_section(report, j),
        *_rlhf_section(report, j),
        *_grpo_section(report, j),
    ]
    return "\n".join(lines) + "\n"


def copied_note(stages: dict) -> list[str]:
    """A line naming the steps copied from another run (`reuse_from`), whose seconds are that run's."""
    copied = [name for name, stage in stages.items() if "copied_from" in stage]
    if not copied:
        return []
    sources = sorted({str(Path(stages[name]["copied_from"]).parent) for name in copied})
    return ["", f"Copied from {', '.join(sources)}, where they were made from the same settings (their "
            f"seconds are that run's): {', '.join(copied)}."]


def made_by_text(j: Journey) -> str:
    """Which code made the run's steps (provenance.py): after an upgrade, a figure may move with the code."""
    from minillm.pipeline import code_records  # (the pipeline imports this module: only needed here)

    return code_summary(code_records(j.out_dir))


def _relabelled_rewards_note(j: Journey) -> list[str]:
    """A line for each PPO or GRPO run rewarded otherwise than its label says (`ppo.reward=gold`, say). The
    label stays, because report.json's keys and every table name a run by its step."""
    notes = [f"{label} is the `{step}` step; `{step}.reward={reward}` rewarded it by {RL_REWARDS[reward]}."
             for label, step in RL_POLICIES.items()
             if label in LABEL_REWARDS and (reward := getattr(j.cfg, step).reward) != LABEL_REWARDS[label]]
    return ["", *notes] if notes else []


def _tokenizer_section(report: dict, j: Journey) -> list[str]:
    s, r = report["stages"], j.results
    return [
        "## 0. Tokenizer",
        f"{tokenizer_name(j.cfg.tokenizer)}, trained on the corpus, has "
        f"{s['tokenizer']['vocab_size']} ids (the 256 bytes and the special tokens among them); "
        f"on held-out text it needs {_fmt(s['tokenizer']['tokens_per_byte'])} tokens per byte. "
        f"\"{r['tokenizer'].get('example_sentence', FLASH_FLOOD_SENTENCE)}\" becomes "
        f"`{r['tokenizer'].get('example_pieces')}`.",
        "",
    ]


def tokenizer_name(cfg: TokenizerConfig) -> str:
    """How report.md names the tokenizer; `spm_model_type` only matters to sentencepiece."""
    if cfg.kind == "bpe":
        return "Our byte-level BPE"
    if cfg.kind == "sentencepiece":
        return SPM_MODEL_TYPES[cfg.spm_model_type]
    return f"The {cfg.kind} tokenizer"  # a kind a learner added to train_tokenizer


def _pretraining_section(report: dict, j: Journey) -> list[str]:
    s, r = report["stages"], j.results
    return [
        "## 1. Pretraining",
        "### BERT: masked language modelling",
        f"{j.cfg.mlm.mask_prob:.0%} of the tokens are chosen as blanks ({j.cfg.mlm.mask_token_prob:.0%} of them "
        f"shown as [MASK], {j.cfg.mlm.random_token_prob:.0%} as a random token, the rest as themselves) and the "
        "encoder learns to fill them in. "
        f"Masked-token accuracy on {r['mlm']['val_masked_positions']} validation blanks (chosen at BERT's "
        f"{EVAL_MASKING['mask_prob']:.0%}, {EVAL_MASKING['mask_token_prob']:.0%} of them [MASK], whatever the "
        "training used, so that runs compare): "
        f"**{_fmt(s['mlm']['val_masked_accuracy'])}**, against {_fmt(s['mlm']['unigram_masked_accuracy'])} for "
        "always guessing the most frequent token. "
        f"(This is {SUBSET_NOTE}.)",
        "",
        *([f"\"{r['mlm']['fill_mask_prompt']}\" ->", ""] if r["mlm"].get("fill_mask_prompt") else []),
        *[f"{i}. `{piece.strip()}` ({p:.3f})" for i, (piece, p) in enumerate(r["mlm"]["fill_mask_top5"], 1)],
        "",
        # (no validation sentence fitted the window: no fill-mask ranking, and no chart of it)
        (f"![BERT fill-mask ranking]({_linked(j, 'mlm', 'fill_mask.png')}) " if r["mlm"]["fill_mask_top5"] else "")
        + f"![BERT masked-LM loss]({_linked(j, 'mlm', 'loss.png')})",
        "",
        "### GPT: next-token prediction",
        f"Perplexity on {r['clm']['val_tokens']} validation tokens **{_fmt(s['clm']['val_perplexity'])}**, against "
        f"{_fmt(s['clm']['unigram_perplexity'])} for a unigram model (the final evaluation, as above). Perplexity "
        "is e to the mean next-token loss: about how many tokens the model is torn between at each step, so lower "
        "is better; the unigram model guesses each token by its frequency alone, blind to the words before it. "
        "Samples:",
        "",
        *[quote(sample) + "\n" for sample in r["clm"].get("samples", [])],
        f"![GPT next-token loss]({_linked(j, 'clm', 'loss.png')})",
        "",
    ]


def _sft_section(report: dict, j: Journey) -> list[str]:
    s = report["stages"]
    return [
        "## 2. Instruction tuning (SFT)",
        "Exact match of greedy answers (the most likely token at each step) on test prompts: the answer is the "
        "reference and nothing more, once both are lower-cased and stripped of punctuation and a leading article. "
        + "; ".join(f"{split}: {SFT_SPLITS[split]}" for split in s["sft"]["exact_match"] if split in SFT_SPLITS)
        + ". " + " ".join(f"{label}: {meaning}." for label, key, meaning in SFT_ROWS if key in s["sft"]),
        *exact_match_noise(s["sft"]),
        "",
        "| model | " + " | ".join(s["sft"]["exact_match"]) + " |",
        "| --- |" + " --- |" * len(s["sft"]["exact_match"]),
        *[f"| {label} | " + " | ".join(_fmt(v) for v in s["sft"][key].values()) + " |"
          for label, key, _ in SFT_ROWS if key in s["sft"]],
        "",
        f"![SFT exact match per split]({_linked(j, 'sft', 'exact_match.png')})",
        "",
        *_sft_examples(j),
    ]


# what each test split of the shipped instructions asks (a split of your own --data is shown unexplained)
SFT_SPLITS = {
    "seen": "new questions of trained tasks, worded as in training",
    "heldout_phrasings": "trained tasks worded in ways SFT never saw",
    "heldout_families": "tasks SFT never saw (what the tiny preset answers of them, and why: docs/findings.md, "
                        "\"Task families SFT never saw\")",
    "world_facts": "facts stated only in the pretraining corpus, never in SFT's data",
}
# the rows of report.md's SFT table: label, the key of its exact match in the SFT result, what the model is
SFT_ROWS = (
    ("base (CLM, no SFT)", "base_exact_match", "the GPT before SFT"),
    ("SFT from scratch", "scratch_exact_match", "the same SFT on an untrained GPT, which shows what pretraining adds"),
    ("SFT on one family", "single_family_exact_match", "the same SFT on one task family's data alone, which shows "
                                                       "what the variety of tasks adds"),
    ("SFT", "exact_match", "the pretrained GPT after SFT on every training task"),
)


def exact_match_noise(sft: dict) -> list[str]:
    """How many questions each split's exact match stands on, and so how far chance alone moves it:
    p right out of n has a standard error of sqrt(p (1 - p) / n) (the win rates' ± below uses the
    sample variance, over n - 1). At p = 0 or 1 that formula says 0, which no finite sample can
    promise: those splits say "none right" or "all right" instead."""
    if "questions" not in sft:  # a run made before the report counted them
        return []
    cells = []
    for split, n in sft["questions"].items():
        p = sft["exact_match"][split]
        spread = "none right" if p == 0 else "all right" if p == 1 else f"± {_fmt(math.sqrt(p * (1 - p) / n))}"
        cells.append(f"{split} {n} ({spread})")
    return ["Questions per split, and one standard error of SFT's exact match on them: " + ", ".join(cells) + "."]


def _sft_examples(j: Journey) -> list[str]:
    """A test answer of the base model and the SFT model side by side for each split, which is named and
    ordered as in the exact-match table above it ("world_facts", not the data's "test_world_fact")."""
    if not (j.folder("sft") / ANSWERS_NAME).is_file():
        return []
    picked = {row.get("split"): row for row in read_answers(j.folder("sft"))}  # one example per split
    lines = ["| split | prompt | base | SFT | reference |", "| --- | --- | --- | --- | --- |"]
    for split, key in SPLIT_KEYS.items():
        if split in picked:
            row = picked[split]
            lines.append(table_row([key, row["prompt"], row.get("base", ""), row.get("sft", ""), row["reference"]]))
    return [*lines, ""]


def _rlhf_section(report: dict, j: Journey) -> list[str]:
    """The reward model, PPO and DPO: their figures, the per-family table, their plots and examples."""
    s = report["stages"]
    return [
        "## 3. RLHF",
        "A simulated annotator ranks answers as people would, by a scoring function plus noise; that function "
        "without the noise is the gold judge, which no model trains on and which judges every policy below. "
        "The reward model, trained on the noisy rankings, orders a held-out pair as they do "
        f"**{_fmt(s['reward_model']['pairwise_accuracy'])}** of the time (chance: 0.5). The most any reward "
        "model can reach is how often those noisy rankings agree with the gold judge: "
        f"{_fmt(s['reward_model'].get('gold_agreement'))} (two noisy annotations of the same answers agree "
        f"{_fmt(s['reward_model'].get('annotator_agreement'))}: both carry noise).",
        "",
        f"PPO: win rate against the SFT model by the gold judge **{win_rate_text(s['ppo'])}** (± one standard error): "
        "the share of held-out prompts on which its sampled answer scores above the SFT model's, ties counting half. "
        f"Mean gold score {_fmt(s['ppo']['gold_sft'])} -> {_fmt(s['ppo']['gold_after'])} (an ideal answer scores 4, "
        f"a wrong one below 0.5); KL to the SFT model {_fmt(s['ppo']['kl'])} on the held-out prompts (in "
        "nats: how far PPO moved its answers from the SFT model's, which its KL penalty holds back). Answers "
        "with a style flaw (rudeness, or the right answer wrapped in filler): "
        f"{_fmt(s['ppo'].get('style_flaws_sft'))} of the SFT model's, {_fmt(s['ppo'].get('style_flaws_after'))} "
        f"after PPO. Answers without the right answer in them: {_fmt(s['ppo'].get('wrong_sft'))} -> "
        f"{_fmt(s['ppo'].get('wrong_after'))} (a flaw is one habit on every prompt; a right answer is a different "
        "fact on each, which the policy has to know).",
        "",
        # (a PPO run made before the ceiling was measured has none to state: no "would win nan")
        *([ceiling_sentence(s["ppo"]["win_rate_ceiling"]), ""] if "win_rate_ceiling" in s["ppo"] else []),
        f"DPO: win rate against the SFT model **{win_rate_text(s['dpo'])}**; mean gold score "
        f"{_fmt(s['dpo'].get('gold_sft'))} -> {_fmt(s['dpo']['gold_after'])}; answers with a style flaw "
        f"{_fmt(s['dpo'].get('style_flaws_sft'))} -> {_fmt(s['dpo'].get('style_flaws_after'))}; wrong answers "
        f"{_fmt(s['dpo'].get('wrong_sft'))} -> {_fmt(s['dpo'].get('wrong_after'))}.",
        "",
        *_family_table(s),
        *_plot_links(j, "reward_model", "reward model"),
        *_plot_links(j, "ppo", "PPO", "ppo_"),
        *_plot_links(j, "dpo", "DPO"),
        "",
        "The PPO plots, one point per step, on that step's answers: rm_score the score that rewarded PPO (the "
        "reward model's, or with ppo.reward=gold the gold judge's, normalised) and gold the gold judge's; kl "
        "their KL to the SFT model; entropy how spread the policy's next-token choices are (falling: it grows "
        "sure); ratio a token's probability after an update over before (near 1: small "
        "steps), clipfrac the share of tokens whose ratio PPO's clip cut, approx_kl how far one update moved "
        "the policy; eos_share the share of answers that ended by themselves. lessons/07_ppo.py reads them.",
        "",
        *_ppo_examples(j),
    ]


def _plot_links(j: Journey, step: str, label: str, prefix: str = "") -> list[str]:
    """report.md's link to each plot in a step's folder, named by the step's label and the plot's file
    name less the `prefix` its stage gives its plots: "PPO health" for 06_ppo/ppo_health.png (prefix "ppo_"),
    "DPO loss" for 07_dpo/loss.png (the training loop's plot, no prefix)."""
    return [f"![{label} {png.stem.removeprefix(prefix).replace('_', ' ')}]({_linked(j, step, png.name)})"
            for png in sorted(j.folder(step).glob("*.png"))]


def ceiling_sentence(ceiling: float) -> str:
    """What a perfect policy would win against the SFT answers (`win_rate_ceiling`), and why it is not 1;
    at 1 (no SFT answer is perfect, as in a run too short to learn) there is no "not 1" to explain."""
    if ceiling == 1:
        return ("A perfect policy would win 1.000 against the same SFT answers: none of them is perfect, so "
                "a policy could win on every prompt.")
    return (f"A perfect policy would win {_fmt(ceiling)} against the same SFT answers, not 1: where the SFT "
            "model's answer is already perfect, the best any policy can do is tie.")


def _family_table(s: dict) -> list[str]:
    """Win rate against the SFT model per task family, PPO beside DPO; "-" where none of a policy's
    held-out prompts is of the family (`ppo.eval_prompts` and `dpo.eval_prompts` may differ)."""
    by_family = {name: s[name].get("win_rate_by_family", {}) for name in ("ppo", "dpo")}
    families = sorted(set(by_family["ppo"]) | set(by_family["dpo"]))
    if not families:
        return []
    unmeasured = any(f not in rates for rates in by_family.values() for f in families)
    return ["Win rate against the SFT model per task family (each on its family's share of the held-out "
            "prompts, so on fewer prompts than the win rates above, and noisier: a win rate on n prompts has a "
            "standard error of up to 0.5/√n, 0.1 on 25"
            + ("; -: none of that policy's held-out prompts is of the family" if unmeasured else "") + "):", "",
            "| family | PPO | DPO |", "| --- | --- | --- |",
            *[f"| {f} | {_fmt(by_family['ppo'].get(f))} | {_fmt(by_family['dpo'].get(f))} |" for f in families], ""]


def _ppo_examples(j: Journey) -> list[str]:
    """Answers before and after PPO, with the question and the right answer, from the PPO step's examples."""
    examples = j.results["ppo"].get("examples") or []
    if not examples:
        return []
    lines = ["| prompt | SFT | after PPO | reference |", "| --- | --- | --- | --- |"]
    lines += [table_row([ex.get("prompt", ""), ex["sft"], ex["after"], ex.get("reference", "")])
              for ex in examples[:5]]
    return [*lines, ""]


def _grpo_section(report: dict, j: Journey) -> list[str]:
    """GRPO's runs, the one comparison table of every stage-3 answerer, and pass@k with its crossings."""
    s = report["stages"]
    table, curves = s["rl_table"], s["rl_table"]["pass_at_k"]
    gains = table.get("pass_at_k_gain", {})
    crossings = [pass_at_k_line(name, curves["SFT"], curves[name], gains.get(name)) for name in RL_POLICIES]
    return [
        "## 4. GRPO, verifiable rewards, and what RL can teach",
        f"GRPO samples {_group_sizes(j)} answers per prompt and uses the group as its own baseline (no critic). "
        f"Rewarded by {RL_REWARDS[j.cfg.grpo.reward]} it wins **{win_rate_text(s['grpo'])}** against the SFT model; "
        f"rewarded by {RL_REWARDS[j.cfg.grpo_verifiable.reward]} **{win_rate_text(s['grpo_verifiable'])}**. "
        "Every way to answer, on the same "
        f"{table['n_prompts']} held-out prompts and the same draw:",
        "",
        *render_table(table["rows"]),
        "",
        "SFT samples are the baseline itself (0.5 by construction); SFT greedy is its most likely answer, no "
        "sampling; best of n samples n answers and keeps the one the reward model scores highest, with no "
        "training but n answers and n scores per prompt. pass@1: the right answer is in the answer; exact "
        "match: the answer is the right answer and nothing more. The greedy answer's KL is "
        "-log p of it under the SFT model, best of n's the bound log n - (n - 1)/n (scoreboard.py).",
        "",
        "pass@k is the chance that at least one of k sampled answers is right; here it is estimated "
        f"from {j.cfg.grpo.passk_samples} samples per prompt (the unbiased estimator) on the first "
        f"{min(j.cfg.grpo.passk_prompts, table['n_prompts'])} of those prompts, so its pass@1 differs a little "
        "from the table's (one sample per prompt, every prompt). RL may raise pass@1 towards what the SFT model "
        "already reaches with more tries, and may lower pass@k at large k where it stopped sampling the only "
        "right answers (Yue et al., 2025); where the SFT curve catches up, these prompts show nothing RL taught "
        "that the SFT model could not already sample. In brackets, each policy's gain over the SFT model and "
        "its standard error, measured prompt by prompt: a gain within two standard errors of 0 is not told "
        "apart from none by these prompts, and each line says where the SFT model catches up by that rule.",
        "",
        *[f"- {line}" for line in crossings],
        "",
        f"![pass@k of the SFT model and each RL policy]({_linked(j, 'rl_table', 'pass_at_k.png')})",
        *[link for label, step in GRPO_POLICIES.items() for link in _plot_links(j, step, label, "grpo_")],
        "",
        "The GRPO plots read as PPO's, and: reward_mean and reward_std are the mean and spread of the step's "
        "rewards; zero_signal_share is the share of groups in which every answer got the same reward, "
        "so each advantage is 0 and the reward teaches the group nothing. lessons/10_grpo_and_verifiable_rewards.py "
        "reads them.",
        "",
    ]


def _group_sizes(j: Journey) -> str:
    """How many answers GRPO samples per prompt: "8", or each run's where they differ: "8 (reward model)
    and 4 (verifiable)"."""
    sizes = {label: getattr(j.cfg, step).group_size for label, step in GRPO_POLICIES.items()}
    if len(set(sizes.values())) == 1:
        return str(next(iter(sizes.values())))
    return " and ".join(f"{size} {label.removeprefix('GRPO ')}" for label, size in sizes.items())


# --------------------------------------------------------------------------------------------------
# The cells every section writes: a figure, a win rate, a link to a step's file, a table row, a quote.

def _fmt(x: Any) -> str:
    """A figure as report.md prints it: a float with three decimals, "-" for none."""
    if x is None:  # a figure this run has not got (e.g. a split that --data lacks)
        return "-"
    if isinstance(x, float):
        return f"{x:.3f}" if math.isfinite(x) else str(x)
    return str(x)


def _linked(j: Journey, step: str, file: str) -> str:
    """A file of a step's folder as report.md links it: relative to the report, beside the step folders."""
    return f"{j.folder(step).name}/{file}"


def table_row(cells: list[Any]) -> str:
    """One markdown table row; a "|" or a line break inside a cell would break the table (a model's answer
    may hold any of the characters `str.splitlines` breaks at: "\r", "\x0c", "\u2028", ...)."""
    return "| " + " | ".join(" ".join(str(c).replace("|", "/").splitlines()) for c in cells) + " |"


def quote(text: str) -> str:
    """`text` as a markdown block quote: every line of it starts with "> " (a bare newline would end it)."""
    return "\n".join(f"> {line}" for line in text.splitlines() or [""])
