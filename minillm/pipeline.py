"""The whole journey in one call: tokenizer -> MLM -> CLM -> SFT -> reward model -> PPO, DPO and GRPO.

Each stage is a *step* with its own folder under the output directory (`01_tokenizer`, `02_mlm`,
...). A step that finished wrote `result.json` there; running the pipeline again skips it (use
`force=True` to redo everything), and a step that was interrupted mid-training resumes from its
last checkpoint. At the end the pipeline writes

- `report.json`: every stage's key numbers and wall time, machine-readable;
- `report.md`: the same as a page a learner reads, with plots and example outputs.

Stages only talk to each other through their folders (a run folder holds `ckpt.pt` and
`tokenizer.json`), so each can also be run alone from the command line.

An experiment reruns only what it changes. Each step writes `inputs.json` when it starts: the
settings it reads (its section of the config, and which data) and which run of each earlier step it
was made from. Run the pipeline again with `--set ppo.kl_coef=0.05` and the steps before PPO are
kept; PPO sees its settings changed, runs again, and so does the comparison table, which was made
from the old PPO run. `reuse_from` does the same into a new folder: the steps of another run that
were made from the same inputs are copied, and only the rest train, so both runs stay side by side.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import shutil
import time
import uuid
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, wait
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from minillm.config import PipelineConfig, TokenizerConfig, changed_settings, first_changes, to_dict, train_configs
from minillm.datasets import corpus_splits, instruction_records
from minillm.errors import ConfigError, DataError
from minillm.stage1_pretrain.clm import train_clm
from minillm.stage1_pretrain.data import SUBSET_NOTE
from minillm.stage1_pretrain.mlm import EVAL_MASKING, train_mlm
from minillm.stage2_sft.evaluate import ANSWERS_NAME, read_answers, run_sft_with_baselines
from minillm.stage3_rlhf.dpo import train_dpo
from minillm.stage3_rlhf.grpo import train_grpo
from minillm.stage3_rlhf.ppo import train_ppo
from minillm.stage3_rlhf.preferences import collect_rankings, heldout_records
from minillm.stage3_rlhf.reward_model import train_reward_model
from minillm.stage3_rlhf.scoreboard import (
    BEST_OF,
    pass_at_k_line,
    pass_at_k_summary,
    plot_pass_at_k,
    policy_table,
    render_table,
    right_answer_counts,
)
from minillm.tokenizer import load_tokenizer, train_tokenizer
from minillm.train.loop import METRICS_NAME
from minillm.utils import (
    check_is_folder,
    in_one_thread,
    interrupts_children,
    read_json,
    resolve_device,
    worker_pool,
    write_json,
)

RESULT_NAME = "result.json"
CONFIG_NAME = "config.json"  # the journey's settings, in its folder


@dataclass
class Journey:
    """What the steps share: the config, the output folder, and the data (built once, on demand)."""

    cfg: PipelineConfig
    out_dir: Path
    corpus_path: str | None = None
    instructions_path: str | None = None
    results: dict[str, dict] = field(default_factory=dict)
    jobs: int = 1  # processes that may work at once (run_steps_in_parallel)
    reuse_from: Path | None = None  # another run's folder: its steps made from the same inputs are copied
    skip_bad_lines: bool = False  # a malformed line of the instructions file is reported and skipped

    def folder(self, name: str) -> Path:
        return self.out_dir / step_folder(name)

    def write_config(self) -> None:
        """config.json in the journey's folder: every setting its steps are made with."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        write_json(self.out_dir / CONFIG_NAME, to_dict(self.cfg))

    @cached_property
    def data_settings(self) -> dict[str, dict]:
        """What the two datasets are: a file the user named (by its contents' sha256), or the settings
        they are generated from. Both forms have the same keys, None where unused, so that going from
        one to the other is a change (a key that only one side has is not: see changed_settings)."""
        cfg, corpus_file, instructions_file = self.cfg, self.corpus_path, self.instructions_path
        corpus = {"file_sha256": file_sha256(corpus_file) if corpus_file else None,
                  "corpus_mb": None if corpus_file else cfg.corpus_mb,
                  "data_seed": cfg.data_seed, "val_fraction": cfg.val_fraction}  # both split the documents
        instructions = {"file_sha256": file_sha256(instructions_file) if instructions_file else None,
                        "data_seed": None if instructions_file else cfg.data_seed}
        return {"corpus": corpus, "instructions": instructions}

    def inputs(self, name: str) -> dict:
        """What step `name`'s outputs follow from: the settings it reads (READS), and the run of each
        step it waits for (NEEDS), named by the id that run wrote into its inputs.json when it started."""
        config = {**to_dict(self.cfg), **self.data_settings}
        return {"settings": {part: config[part] for part in READS[name]}, "made_from": self.made_from(name)}

    def made_from(self, name: str) -> dict[str, str | None]:
        """The run of each step that step `name` waits for (NEEDS), by the id in its inputs.json."""
        return {need: run_id(self.folder(need)) for need in NEEDS[name]}

    @cached_property
    def documents(self) -> tuple[list[str], list[str]]:
        """(train, validation) documents of the pretraining corpus."""
        return corpus_splits(self.cfg, self.corpus_path)

    @cached_property
    def records(self) -> list[dict]:
        """The instruction suite (train and test records) for stages 2 and 3."""
        return instruction_records(self.cfg, self.instructions_path, self.skip_bad_lines)

    @property
    def tokenizer(self):
        return load_tokenizer(self.folder("tokenizer") / "tokenizer.json")


def step_folder(name: str) -> str:
    """The name of step `name`'s folder in a pipeline run: its place in the journey, then its name."""
    return f"{STEP_NAMES.index(name) + 1:02d}_{name}"


def has_checkpoint(folder: Path) -> bool:
    """True when a training run in `folder` was interrupted after saving: resume it, do not restart."""
    return (folder / "ckpt.pt").is_file()


# --------------------------------------------------------------------------------------------------
# The steps, in the order they run. Each returns the numbers that report.json shows for it.


def step_tokenizer(j: Journey) -> dict:
    train_docs, val_docs = j.documents
    cfg = j.cfg.tokenizer
    tok = train_tokenizer(train_docs, cfg.vocab_size, kind=cfg.kind, spm_model_type=cfg.spm_model_type)
    tok.save(j.folder("tokenizer") / "tokenizer.json")
    val_text = "\n\n".join(val_docs)
    tokens = tok.encode(val_text)
    pieces = [tok.id_to_piece(i) for i in tok.encode(FLASH_FLOOD_SENTENCE)]
    return {"kind": cfg.kind, "vocab_size": tok.vocab_size,
            "tokens_per_byte": len(tokens) / len(val_text.encode("utf-8")), "example_pieces": pieces}


def step_mlm(j: Journey) -> dict:
    train_docs, val_docs = j.documents
    folder = j.folder("mlm")
    return train_mlm(j.cfg.mlm, j.tokenizer, train_docs, val_docs, folder, resume=has_checkpoint(folder))


def step_clm(j: Journey) -> dict:
    train_docs, val_docs = j.documents
    folder = j.folder("clm")
    return train_clm(j.cfg.clm, j.tokenizer, train_docs, val_docs, folder, resume=has_checkpoint(folder))


def step_sft(j: Journey) -> dict:
    folder = j.folder("sft")
    return run_sft_with_baselines(j.cfg.sft, j.records, folder, j.folder("clm"), resume=has_checkpoint(folder),
                                  pretrain_docs=j.documents[0], side_by_side=j.jobs > 1)


def step_reward_model(j: Journey) -> dict:
    folder = j.folder("reward_model")
    prefs = folder / "prefs.jsonl"
    start = time.perf_counter()
    if not prefs.is_file():
        collect_rankings(j.cfg.reward, j.folder("sft"), j.records, prefs)
    result = train_reward_model(j.cfg.reward, j.folder("sft"), prefs, folder, records=j.records,
                                resume=has_checkpoint(folder))
    return {**result, "seconds": time.perf_counter() - start}


def step_ppo(j: Journey) -> dict:
    folder = j.folder("ppo")
    return train_ppo(j.cfg.ppo, j.folder("sft"), j.folder("reward_model"), j.records, folder,
                     resume=has_checkpoint(folder))


def step_dpo(j: Journey) -> dict:
    prefs, folder = j.folder("reward_model") / "prefs.jsonl", j.folder("dpo")
    return train_dpo(j.cfg.dpo, j.folder("sft"), prefs, j.records, folder, resume=has_checkpoint(folder))


def step_grpo(j: Journey) -> dict:
    folder = j.folder("grpo")
    return train_grpo(j.cfg.grpo, j.folder("sft"), j.records, folder, rm_dir=j.folder("reward_model"),
                      resume=has_checkpoint(folder), pass_at_k=False)


def step_grpo_verifiable(j: Journey) -> dict:
    folder = j.folder("grpo_verifiable")
    return train_grpo(j.cfg.grpo_verifiable, j.folder("sft"), j.records, folder, resume=has_checkpoint(folder),
                      pass_at_k=False)


GRPO_POLICIES = {"GRPO (reward model)": "grpo", "GRPO (verifiable)": "grpo_verifiable"}  # label -> step
GRPO_LABEL_REWARDS = {"GRPO (reward model)": "model", "GRPO (verifiable)": "verifiable"}  # what each label names
RL_POLICIES = {"PPO": "ppo", "DPO": "dpo", **GRPO_POLICIES}  # every policy stage 3 trains


def step_rl_table(j: Journey) -> dict:
    """Every stage-3 answerer on the same held-out prompts and draw (scoreboard.py), and pass@k."""
    cfg = j.cfg.grpo
    records = heldout_records(j.records, cfg.eval_prompts, 0)
    policies = {name: (j.folder(step), j.results[step]["seconds"]) for name, step in RL_POLICIES.items()}
    device = resolve_device(cfg.train.device)
    rows = policy_table(j.folder("sft"), j.folder("reward_model"), policies, records, cfg.temperature,
                        cfg.max_new_tokens, seed=cfg.train.seed, device=device)
    models = {"SFT": j.folder("sft"), **{name: j.folder(step) for name, step in RL_POLICIES.items()}}
    right = right_answer_counts(models, records[:cfg.passk_prompts], cfg.passk_samples, cfg.temperature,
                                cfg.max_new_tokens, seed=cfg.train.seed, device=device)
    summary = pass_at_k_summary(right, cfg.passk_samples)
    plot_pass_at_k(summary["pass_at_k"], summary["pass_at_k_gain"], j.folder("rl_table") / "pass_at_k.png",
                   min(cfg.passk_prompts, len(records)))
    return {"rows": rows, **summary, "right_of_n": right, "n_prompts": len(records),
            "best_of_n": {"win_rate_vs_sft": {str(n): rows[f"best of {n} (reward model)"]["win_rate_vs_sft"]
                                              for n in BEST_OF}}}


STEPS: dict[str, Callable[[Journey], dict]] = {
    "tokenizer": step_tokenizer,
    "mlm": step_mlm,
    "clm": step_clm,
    "sft": step_sft,
    "reward_model": step_reward_model,
    "ppo": step_ppo,
    "dpo": step_dpo,
    "grpo": step_grpo,
    "grpo_verifiable": step_grpo_verifiable,
    "rl_table": step_rl_table,
}
STEP_NAMES = list(STEPS)
FLASH_FLOOD_SENTENCE = "A flash flood watch will be in effect all night."


def run_step(j: Journey, name: str) -> dict:
    """Run one step, or read its result if it already finished from the same inputs (`Journey.inputs`).

    Outputs made from other inputs are deleted first: they no longer follow from the settings, and
    a report that mixed them with the new ones would say what was never run.
    """
    folder, inputs = j.folder(name), j.inputs(name)
    result_path = folder / RESULT_NAME
    stale = why_redo(folder, inputs)
    if stale:
        print(f"[{name}] {stale}: running it again")
        shutil.rmtree(folder)
    elif result_path.is_file():
        print(f"[{name}] already done ({result_path}); skipping (--force redoes it)")
        return read_json(result_path)
    source = None if j.reuse_from is None else j.reuse_from / folder.name
    if source is not None and (source / RESULT_NAME).is_file():
        differs = why_redo(source, inputs)
        if differs is None:
            print(f"[{name}] copied from {source}, made from the same inputs")
            return copy_run(source, folder)
        print(f"[{name}] not copied: {source} {differs}")
    shutil.rmtree(copying(folder), ignore_errors=True)  # what an interrupted copy left, if any
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / INPUTS_NAME).is_file():  # (an interrupted run from the same inputs keeps its id)
        write_json(folder / INPUTS_NAME, {"id": uuid.uuid4().hex, **inputs})
    print(f"[{name}] running -> {folder}")
    start = time.perf_counter()
    result = STEPS[name](j)
    result = {k: v for k, v in result.items() if k != "history"}
    result.setdefault("seconds", time.perf_counter() - start)
    result["wall_seconds"] = time.perf_counter() - start
    write_json(result_path, jsonable(result))
    return result


def run_pipeline(cfg: PipelineConfig, out_dir: str | Path, *, force: bool = False,
                 corpus: str | None = None, instructions: str | None = None, jobs: int = 1,
                 reuse_from: str | Path | None = None, skip_bad_lines: bool = False) -> dict:
    """Run every stage into `out_dir` and write report.json and report.md there.

    `jobs` > 1 runs steps that do not depend on each other side by side, in that many processes of
    one thread each (`run_steps_in_parallel`); 1 runs them in order, in this process.
    `reuse_from`: the folder of another pipeline run; each of its steps made from the same inputs as
    this run's is copied instead of trained (an experiment then trains only what it changed).
    `skip_bad_lines`: report and skip malformed lines of the `instructions` file instead of stopping.
    """
    out_dir = Path(out_dir)
    check_is_folder(out_dir)
    if (out_dir / METRICS_NAME).is_file():  # a pipeline's steps log in their own folders, never at its top
        raise DataError(f"--out {out_dir} holds a training run (its {METRICS_NAME}), not a pipeline run: the "
                        "pipeline would write its own config.json over the run's; give the pipeline a new folder")
    if force and reuse_from is not None:
        raise ConfigError("--force trains every step again and --reuse copies the steps it can: pass one of them")
    if reuse_from is not None and not any((Path(reuse_from) / step_folder(name)).is_dir() for name in STEP_NAMES):
        raise DataError(f"--reuse {reuse_from} is not the folder of a pipeline run (it has none of the step "
                        f"folders {step_folder(STEP_NAMES[0])}, ...); name the --out folder of an earlier "
                        "`minillm pipeline`")
    devices = sorted({resolve_device(train.device).type for train in train_configs(cfg)})  # the report names them
    journey = Journey(cfg, out_dir, corpus, instructions, jobs=jobs,
                      reuse_from=None if reuse_from is None else Path(reuse_from), skip_bad_lines=skip_bad_lines)
    if instructions:  # read now: a malformed file stops the journey before stage 1's minutes, not after them
        print(f"instructions: {len(journey.records)} records from {instructions}")
    if corpus:  # the same for the corpus (missing, not UTF-8, empty), before config.json is written
        print(f"corpus: {sum(map(len, journey.documents))} documents from {corpus}")
    journey.write_config()
    if force:  # later steps depend on earlier ones: redo all of them, from scratch, not from checkpoints
        for name in STEP_NAMES:
            shutil.rmtree(journey.folder(name), ignore_errors=True)
    start = time.perf_counter()
    if jobs > 1:
        run_steps_in_parallel(journey, jobs)
    else:
        for name in STEP_NAMES:
            journey.results[name] = run_step(journey, name)
    return write_report(journey, ", ".join(devices), time.perf_counter() - start)


# --------------------------------------------------------------------------------------------------
# Side by side: the steps form a graph, and on a machine with several cores the independent ones can
# run at once. Each runs in its own process with one thread: tiny models gain little from a second
# thread, and two processes that each want two threads on two cores slow each other down badly.

NEEDS: dict[str, tuple[str, ...]] = {  # step -> the steps it waits for, and through them every earlier one
    "tokenizer": (),
    "mlm": ("tokenizer",),
    "clm": ("tokenizer",),
    "sft": ("clm",),
    "reward_model": ("sft",),
    "ppo": ("reward_model",),
    "dpo": ("reward_model",),
    "grpo": ("reward_model",),
    "grpo_verifiable": ("sft",),
    "rl_table": ("ppo", "dpo", "grpo", "grpo_verifiable"),
}


# --------------------------------------------------------------------------------------------------
# Which outputs are still good: a step's outputs follow from its settings and from the runs of the
# steps it reads (NEEDS, and through theirs every step before). inputs.json records both.

INPUTS_NAME = "inputs.json"
READS: dict[str, tuple[str, ...]] = {  # step -> the parts of the settings it reads (Journey.inputs)
    "tokenizer": ("tokenizer", "corpus"),
    "mlm": ("mlm", "corpus"),
    "clm": ("clm", "corpus"),
    "sft": ("sft", "corpus", "instructions"),  # SFT replays pretraining text among its examples
    "reward_model": ("reward", "instructions"),
    "ppo": ("ppo", "instructions"),
    "dpo": ("dpo", "instructions"),
    "grpo": ("grpo", "instructions"),
    "grpo_verifiable": ("grpo_verifiable", "instructions"),
    "rl_table": ("grpo", "instructions"),  # it samples every policy with GRPO's evaluation settings
}


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def saved_inputs(folder: Path) -> dict | None:
    """The inputs.json a step's run wrote when it started; None when there is none or it is unreadable
    (edited by hand, say): such a run cannot tell what it was made from."""
    try:
        saved = json.loads((folder / INPUTS_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return saved if isinstance(saved, dict) and {"id", "settings", "made_from"} <= set(saved) else None


def run_id(folder: Path) -> str | None:
    """The id a step's run wrote into its inputs.json when it started (None: no run there)."""
    saved = saved_inputs(folder)
    return None if saved is None else saved["id"]


def why_redo(folder: Path, inputs: dict) -> str | None:
    """Why the outputs in `folder` do not follow from `inputs` (Journey.inputs), or None when they do
    (or when there are none)."""
    if not holds_outputs(folder):
        return None
    saved = saved_inputs(folder)
    return made_otherwise(saved, inputs) or made_from_earlier_runs(saved, inputs["made_from"])


def holds_outputs(folder: Path) -> bool:
    """True when a step's folder exists and is not empty: something that a redo would replace."""
    return folder.is_dir() and any(folder.iterdir())


def made_otherwise(saved: dict | None, inputs: dict) -> str | None:
    """Why a run that saved `saved` (its inputs.json) was not made with the settings and data of
    `inputs`, or None when it was."""
    if saved is None:
        return f"has no readable {INPUTS_NAME} (made by an older minillm?), so what it was made from is unknown"
    changed = changed_settings(saved["settings"], inputs["settings"])
    return f"made with other settings ({first_changes(changed)})" if changed else None


def made_from_earlier_runs(saved: dict, made_from: dict[str, str | None]) -> str | None:
    """Which of the steps it reads have run again since a run that saved `saved` was made (their
    runs now: `made_from`, Journey.made_from), or None."""
    rerun = [need for need, run in made_from.items() if saved["made_from"].get(need) != run]
    return f"made from an earlier run of {', '.join(rerun)}" if rerun else None


def copy_run(source: Path, folder: Path) -> dict:
    """Copy a finished step's folder, all or nothing: into a temporary name first, then renamed, so
    that an interrupted copy never looks like a run. Its result says where it was copied from."""
    partial = copying(folder)
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(source, partial)
    result = {**read_json(partial / RESULT_NAME), "copied_from": str(source)}
    write_json(partial / RESULT_NAME, result)
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    return result


def copying(folder: Path) -> Path:
    """Where copy_run puts a copy until it is complete: NAME.copying beside the step's folder."""
    return folder.with_name(folder.name + ".copying")


def run_steps_in_parallel(j: Journey, jobs: int) -> None:
    """Run every step as soon as the steps it needs are done, at most `jobs` at a time."""
    pending, running = list(STEP_NAMES), {}
    with worker_pool(jobs) as pool, interrupts_children():
        while pending or running:
            for name in [n for n in pending if all(need in j.results for need in NEEDS[n])][:jobs - len(running)]:
                pending.remove(name)
                # The worker gets the journey's settings and results so far, not the data it has read:
                # a new Journey (dataclasses.replace) reads its own, as in a pipeline of its own.
                journey = dataclasses.replace(j, results=dict(j.results))
                running[pool.submit(in_one_thread, run_step, journey, name)] = name
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                j.results[running.pop(future)] = future.result()


# --------------------------------------------------------------------------------------------------
# The report.

REPORT_KEYS = {
    "tokenizer": ("vocab_size", "tokens_per_byte"),
    "mlm": ("val_masked_accuracy", "unigram_masked_accuracy", "fill_mask_top5"),
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


def write_report(j: Journey, device: str, wall_seconds: float) -> dict:
    """Write report.json and report.md for the finished steps in `j.results`; return the report."""
    report = build_report(j.cfg, device, j.results)
    # "seconds" adds up the steps' times; "wall_seconds" is how long this call took, which is less
    # with steps side by side (`jobs`), and far less for a rerun that finds its steps already done
    report["wall_seconds"] = round(wall_seconds, 2)
    report["jobs"] = j.jobs
    write_json(j.out_dir / "report.json", report)
    (j.out_dir / "report.md").write_text(render_markdown(report, j), encoding="utf-8")
    return report


def _fmt(x: Any) -> str:
    if x is None:  # a figure this run has not got (e.g. a split that --data lacks)
        return "-"
    if isinstance(x, float):
        return f"{x:.3f}" if math.isfinite(x) else str(x)
    return str(x)


def _win(stage: dict) -> str:
    """A win rate with its standard error: "0.650 ± 0.034"."""
    return f"{_fmt(stage['win_rate_vs_sft'])} ± {_fmt(stage.get('win_rate_stderr', float('nan')))}"


def exact_match_noise(sft: dict) -> list[str]:
    """How many questions each split's exact match stands on, and so how far chance alone moves it:
    p right out of n has a standard error of sqrt(p (1 - p) / n), like the win rates' ± below. At
    p = 0 or 1 that formula says 0, which no finite sample can promise: those splits say "none right"
    or "all right" instead."""
    if "questions" not in sft:  # a run made before the report counted them
        return []
    cells = []
    for split, n in sft["questions"].items():
        p = sft["exact_match"][split]
        spread = "none right" if p == 0 else "all right" if p == 1 else f"± {_fmt(math.sqrt(p * (1 - p) / n))}"
        cells.append(f"{split} {n} ({spread})")
    return ["Questions per split, and one standard error of SFT's exact match on them: " + ", ".join(cells) + "."]


def _family_table(s: dict) -> list[str]:
    """Win rate against the SFT model per task family, PPO beside DPO."""
    by_family = {name: s[name].get("win_rate_by_family", {}) for name in ("ppo", "dpo")}
    families = sorted(set(by_family["ppo"]) | set(by_family["dpo"]))
    if not families:
        return []
    return ["Win rate against the SFT model per task family (each on its family's share of the held-out "
            "prompts, so on fewer prompts than the win rates above):", "",
            "| family | PPO | DPO |", "| --- | --- | --- |",
            *[f"| {f} | {_fmt(by_family['ppo'].get(f, float('nan')))} | {_fmt(by_family['dpo'].get(f, float('nan')))} |"
              for f in families], ""]



def copied_note(stages: dict) -> list[str]:
    """A line naming the steps copied from another run (`reuse_from`), whose seconds are that run's."""
    copied = [name for name, stage in stages.items() if "copied_from" in stage]
    if not copied:
        return []
    sources = sorted({str(Path(stages[name]["copied_from"]).parent) for name in copied})
    return ["", f"Copied from {', '.join(sources)}, where they were made from the same settings (their "
            f"seconds are that run's): {', '.join(copied)}."]


def tokenizer_name(cfg: TokenizerConfig) -> str:
    """How report.md names the tokenizer; `spm_model_type` only matters to sentencepiece."""
    if cfg.kind == "bpe":
        return "Our byte-level BPE"
    return {"bpe": "SentencePiece's BPE", "unigram": "SentencePiece's unigram model"}[cfg.spm_model_type]


def render_markdown(report: dict, j: Journey) -> str:
    """report.md: what each stage did, its key number against its baseline, its plot, examples."""
    s = report["stages"]
    lines = [
        f"# minillm report: preset `{report['preset']}` on {report['device']}",
        "",
        "All three stages of training a language model, end to end; its steps took "
        f"{report['seconds']:.0f} s in all.",
        *copied_note(s),
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
        f"| PPO | win rate vs SFT {_win(s['ppo'])} | 0.5 | {s['ppo']['seconds']:.0f} |",
        f"| DPO | win rate vs SFT {_win(s['dpo'])} | 0.5 | {s['dpo']['seconds']:.0f} |",
        f"| GRPO (reward model) | win rate vs SFT {_win(s['grpo'])} | 0.5 | {s['grpo']['seconds']:.0f} |",
        f"| GRPO (verifiable) | win rate vs SFT {_win(s['grpo_verifiable'])}, pass@1 "
        f"{_fmt(s['grpo_verifiable']['pass_at_1_sft'])} -> {_fmt(s['grpo_verifiable']['pass_at_1_after'])} "
        f"| 0.5 | {s['grpo_verifiable']['seconds']:.0f} |",
        *_relabelled_grpo_note(j),
        "",
        *_tokenizer_section(report, j),
        *_pretraining_section(report, j),
        *_sft_section(report, j),
        *_rlhf_section(report, j),
        *_grpo_section(report, j),
    ]
    return "\n".join(lines) + "\n"


def _tokenizer_section(report: dict, j: Journey) -> list[str]:
    s, r = report["stages"], j.results
    return [
        "## 0. Tokenizer",
        f"{tokenizer_name(j.cfg.tokenizer)}, trained on the corpus, has "
        f"{s['tokenizer']['vocab_size']} ids (the 256 bytes and the special tokens among them); "
        f"on held-out text it needs {_fmt(s['tokenizer']['tokens_per_byte'])} tokens per byte. "
        f"\"{FLASH_FLOOD_SENTENCE}\" becomes `{r['tokenizer'].get('example_pieces')}`.",
        "",
    ]


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
        f"{_fmt(s['clm']['unigram_perplexity'])} for a unigram model (the final evaluation, as above). Samples:",
        "",
        *[quote(sample) + "\n" for sample in r["clm"].get("samples", [])],
        f"![GPT next-token loss]({_linked(j, 'clm', 'loss.png')})",
        "",
    ]


def _sft_section(report: dict, j: Journey) -> list[str]:
    s = report["stages"]
    return [
        "## 2. Instruction tuning (SFT)",
        "Exact match of greedy answers on test prompts; held-out phrasings and families were never trained on.",
        *exact_match_noise(s["sft"]),
        "",
        "| model | " + " | ".join(s["sft"]["exact_match"]) + " |",
        "| --- |" + " --- |" * len(s["sft"]["exact_match"]),
        *[f"| {label} | " + " | ".join(_fmt(v) for v in s["sft"][key].values()) + " |"
          for label, key in (("base (CLM, no SFT)", "base_exact_match"), ("SFT from scratch", "scratch_exact_match"),
                             ("SFT on one family", "single_family_exact_match"), ("SFT", "exact_match"))
          if key in s["sft"]],
        "",
        f"![SFT exact match per split]({_linked(j, 'sft', 'exact_match.png')})",
        "",
        *_sft_examples(j),
    ]


def _rlhf_section(report: dict, j: Journey) -> list[str]:
    """The reward model, PPO and DPO: their figures, the per-family table, their plots and examples."""
    s = report["stages"]
    return [
        "## 3. RLHF",
        f"The reward model ranks held-out pairs correctly **{_fmt(s['reward_model']['pairwise_accuracy'])}** "
        f"of the time. The most any reward model can reach is how often those noisy rankings agree with the "
        f"gold judge: {_fmt(s['reward_model'].get('gold_agreement'))} (two noisy annotations of the same "
        f"answers agree {_fmt(s['reward_model'].get('annotator_agreement'))}: both carry noise).",
        "",
        f"PPO: win rate against the SFT model by the gold judge **{_win(s['ppo'])}** (± one standard error); mean gold "
        f"score {_fmt(s['ppo']['gold_sft'])} -> {_fmt(s['ppo']['gold_after'])}, KL to the SFT model "
        f"{_fmt(s['ppo']['kl'])} on the held-out prompts. Answers with a style flaw (rudeness, or the right "
        "answer wrapped in filler): "
        f"{_fmt(s['ppo'].get('style_flaws_sft'))} of the SFT model's, {_fmt(s['ppo'].get('style_flaws_after'))} "
        f"after PPO. Answers without the right answer in them: {_fmt(s['ppo'].get('wrong_sft'))} -> "
        f"{_fmt(s['ppo'].get('wrong_after'))} (a flaw is one habit on every prompt; a right answer is a different "
        "fact on each, which the policy has to know).",
        "",
        f"A perfect policy would win {_fmt(s['ppo'].get('win_rate_ceiling', float('nan')))} against the same "
        "SFT answers, not 1: where the SFT model's answer is already perfect, the best any policy can do is tie.",
        "",
        f"DPO: win rate against the SFT model **{_win(s['dpo'])}**; mean gold score "
        f"{_fmt(s['dpo'].get('gold_sft'))} -> {_fmt(s['dpo']['gold_after'])}; answers with a style flaw "
        f"{_fmt(s['dpo'].get('style_flaws_sft'))} -> {_fmt(s['dpo'].get('style_flaws_after'))}; wrong answers "
        f"{_fmt(s['dpo'].get('wrong_sft'))} -> {_fmt(s['dpo'].get('wrong_after'))}.",
        "",
        *_family_table(s),
        *[f"![{label} {png.stem.removeprefix(name + '_').replace('_', ' ')}]({_linked(j, name, png.name)})"
          for name, label in (("reward_model", "reward model"), ("ppo", "PPO"), ("dpo", "DPO"))
          for png in sorted(j.folder(name).glob("*.png"))],
        "",
        *_ppo_examples(j),
    ]


# what each GRPO run was rewarded by (GRPOConfig.reward), as report.md says it
GRPO_REWARDS = {"model": "the reward model", "verifiable": "a program that checks the answer (RL with verifiable "
                "rewards)", "gold": "the gold judge itself (an oracle no real run has)"}


def _relabelled_grpo_note(j: Journey) -> list[str]:
    """A line for each GRPO run rewarded otherwise than its label says (`grpo.reward=gold`, say). The
    label stays, because report.json's keys and every table name a run by its step."""
    notes = [f"{label} is the `{step}` step; `{step}.reward={reward}` rewarded it by {GRPO_REWARDS[reward]}."
             for label, step in GRPO_POLICIES.items()
             if (reward := getattr(j.cfg, step).reward) != GRPO_LABEL_REWARDS[label]]
    return ["", *notes] if notes else []


def _linked(j: Journey, step: str, file: str) -> str:
    """A file of a step's folder as report.md links it: relative to the report, beside the step folders."""
    return f"{j.folder(step).name}/{file}"


def _grpo_section(report: dict, j: Journey) -> list[str]:
    """GRPO's runs, the one comparison table of every stage-3 answerer, and pass@k with its crossings."""
    s = report["stages"]
    table, curves = s["rl_table"], s["rl_table"]["pass_at_k"]
    gains = table.get("pass_at_k_gain", {})
    crossings = [pass_at_k_line(name, curves["SFT"], curves[name], gains.get(name)) for name in RL_POLICIES]
    return [
        "## 4. GRPO, verifiable rewards, and what RL can teach",
        f"GRPO samples {_group_sizes(j)} answers per prompt and uses the group as its own baseline (no critic). "
        f"Rewarded by {GRPO_REWARDS[j.cfg.grpo.reward]} it wins **{_win(s['grpo'])}** against the SFT model; "
        f"rewarded by {GRPO_REWARDS[j.cfg.grpo_verifiable.reward]} **{_win(s['grpo_verifiable'])}**. "
        "Every way to answer, on the same "
        f"{table['n_prompts']} held-out prompts and the same draw:",
        "",
        *render_table(table["rows"]),
        "",
        f"pass@k, from {j.cfg.grpo.passk_samples} samples per prompt (the unbiased estimator) on the first "
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
        f"![pass@k of the SFT model and each RL policy]({j.folder('rl_table').name}/pass_at_k.png)",
        *[f"![{label} {png.stem.removeprefix('grpo_')}]({j.folder(step).name}/{png.name})"
          for label, step in GRPO_POLICIES.items()
          for png in sorted(j.folder(step).glob("grpo_*.png"))],
        "",
    ]


def _group_sizes(j: Journey) -> str:
    """How many answers GRPO samples per prompt: "8", or each run's where they differ: "8 (reward model)
    and 4 (verifiable)"."""
    sizes = {label: getattr(j.cfg, step).group_size for label, step in GRPO_POLICIES.items()}
    if len(set(sizes.values())) == 1:
        return str(next(iter(sizes.values())))
    return " and ".join(f"{size} {label.removeprefix('GRPO ')}" for label, size in sizes.items())


def table_row(cells: list[Any]) -> str:
    """One markdown table row; a "|" or a line break inside a cell would break the table (a model's answer
    may hold any of the characters `str.splitlines` breaks at: "\r", "\x0c", "\u2028", ...)."""
    return "| " + " | ".join(" ".join(str(c).replace("|", "/").splitlines()) for c in cells) + " |"


def quote(text: str) -> str:
    """`text` as a markdown block quote: every line of it starts with "> " (a bare newline would end it)."""
    return "\n".join(f"> {line}" for line in text.splitlines() or [""])


def _sft_examples(j: Journey) -> list[str]:
    """A few test answers of the base model and the SFT model, side by side."""
    if not (j.folder("sft") / ANSWERS_NAME).is_file():
        return []
    rows = read_answers(j.folder("sft"))
    picked = {row["split"]: row for row in rows}  # one example per split
    lines = ["| split | prompt | base | SFT | reference |", "| --- | --- | --- | --- | --- |"]
    for row in picked.values():
        lines.append(table_row([row["split"], row["prompt"], row.get("base", ""), row.get("sft", ""),
                                row["reference"]]))
    return [*lines, ""]


def _ppo_examples(j: Journey) -> list[str]:
    """Answers before and after PPO, with the question and the right answer, from the PPO step's examples."""
    examples = j.results["ppo"].get("examples") or []
    if not examples:
        return []
    lines = ["| prompt | SFT | after PPO | reference |", "| --- | --- | --- | --- |"]
    lines += [table_row([ex.get("prompt", ""), ex["sft"], ex["after"], ex.get("reference", "")])
              for ex in examples[:5]]
    return [*lines, ""]


def jsonable(obj: Any) -> Any:
    """Make a result JSON-safe (tuples to lists, paths to strings)."""
    return json.loads(json.dumps(obj, default=str))
