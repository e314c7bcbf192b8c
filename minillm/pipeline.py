"""The whole journey in one call: tokenizer -> MLM -> CLM -> SFT -> reward model -> PPO, DPO and GRPO.

Each stage is a *step* with its own folder under the output directory (`01_tokenizer`, `02_mlm`,
...). A step that finished wrote `result.json` there; running the pipeline again skips it (use
`force=True` to redo everything), and a step that was interrupted mid-training resumes from its
last checkpoint. At the end the pipeline writes (report.py)

- `report.json`: every stage's key numbers and wall time, machine-readable;
- `report.md`: the same as a page a learner reads, with plots and example outputs.

Before the first step, `preflight` refuses every setting that a later step would refuse when it
starts (an answer length that leaves no room for a prompt, say), so that a mistake costs seconds,
not the minutes of training before that step.

Stages only talk to each other through their folders (a run folder holds `ckpt.pt` and
`tokenizer.json`), so each can also be run alone from the command line.

An experiment reruns only what it changes: each step records what it was made from, and a step whose
settings, data or earlier steps changed is redone; `reuse_from` copies another run's steps made from the
same inputs (reuse.py).
"""

from __future__ import annotations

import dataclasses
import gc
import json
import shutil
import time
import uuid
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, wait
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from minillm.config import PipelineConfig, to_dict, train_configs
from minillm.datasets import corpus_splits, instruction_records
from minillm.datasets.corpus import corpus_record
from minillm.datasets.instructions import instructions_record
from minillm.errors import ConfigError, DataError
from minillm.model import GPT, Bert
from minillm.provenance import MADE_BY, made_by, saved_record
from minillm.report import FLASH_FLOOD_SENTENCE, RL_POLICIES, remove_report, write_report
from minillm.reuse import INPUTS_NAME, RESULT_NAME, copy_run, copying, file_sha256, run_id, why_redo
from minillm.run_lock import check_is_folder
from minillm.stage1_pretrain.clm import train_clm
from minillm.stage1_pretrain.data import talks_of_flash_floods
from minillm.stage1_pretrain.mlm import train_mlm
from minillm.stage2_sft.evaluate import run_sft_with_baselines, single_family_name
from minillm.stage2_sft.sft import check_adapters, training_records
from minillm.stage2_sft.template import check_room_for_prompt
from minillm.stage3_rlhf.dpo import chosen_pairs, train_dpo
from minillm.stage3_rlhf.grpo import group_advantages, train_grpo
from minillm.stage3_rlhf.ppo import train_ppo, uses_gold
from minillm.stage3_rlhf.preferences import (
    EVAL_SEED,
    PREFS_NAME,
    check_rankings_hold_one_out,
    collect_rankings,
    heldout_records,
)
from minillm.stage3_rlhf.reward_model import train_reward_model
from minillm.stage3_rlhf.scoreboard import (
    BEST_OF,
    pass_at_k_summary,
    plot_pass_at_k,
    policy_table,
    right_answer_counts,
)
from minillm.tokenizer import Tokenizer, load_tokenizer, train_tokenizer
from minillm.train.distributed import refuse_several_processes
from minillm.train.loop import METRICS_NAME
from minillm.train.precision import torch_dtype
from minillm.utils import json_sha256, read_json, resolve_device, write_json
from minillm.workers import in_one_thread, interrupts_children, worker_pool

CONFIG_NAME = "config.json"  # the journey's settings, in its folder


@dataclass
class Journey:
    """What the steps share: the config, the output folder, and the data (built once, on demand)."""

    cfg: PipelineConfig
    out_dir: Path
    corpus_path: str | Path | None = None
    instructions_path: str | Path | None = None
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
        they are generated from and the sha256 of what they generate (another version of minillm may
        generate other text from the same settings). Both forms have the same keys, None where unused,
        so that going from one to the other is a change (a key that only one side has is not: see
        changed_settings)."""
        cfg, corpus_file, instructions_file = self.cfg, self.corpus_path, self.instructions_path
        corpus = {"file_sha256": file_sha256(corpus_file) if corpus_file else None,
                  "generated_sha256": None if corpus_file else self.corpus_read["sha256"],
                  "corpus_mb": None if corpus_file else cfg.corpus_mb,
                  "data_seed": cfg.data_seed, "val_fraction": cfg.val_fraction}  # both split the documents
        instructions = {"file_sha256": file_sha256(instructions_file) if instructions_file else None,
                        "generated_sha256": None if instructions_file else json_sha256(self.records),
                        "data_seed": None if instructions_file else cfg.data_seed}
        return {"corpus": corpus, "instructions": instructions}

    def inputs(self, name: str) -> dict:
        """What step `name`'s outputs follow from: the settings it reads (READS), and the run of each
        step it waits for (`needs`), named by the id that run wrote into its inputs.json when it started."""
        config = {**to_dict(self.cfg), **self.data_settings}
        return {"settings": {part: config[part] for part in READS[name]}, "made_from": self.made_from(name)}

    def made_from(self, name: str) -> dict[str, str | None]:
        """The run of each step that step `name` waits for (`needs`), by the id in its inputs.json."""
        return {need: run_id(self.folder(need)) for need in needs(self.cfg, name)}

    @cached_property
    def documents(self) -> tuple[list[str], list[str]]:
        """(train, validation) documents of the pretraining corpus."""
        return corpus_splits(self.cfg, self.corpus_path)

    @cached_property
    def records(self) -> list[dict]:
        """The instruction suite (train and test records) for stages 2 and 3."""
        return instruction_records(self.cfg, self.instructions_path, self.skip_bad_lines)

    @cached_property
    def corpus_read(self) -> dict:
        """The record of the corpus (`corpus_record`) that each pretraining run keeps in its config.json, and
        each SFT run that replays it."""
        return corpus_record(self.documents, self.corpus_path, self.cfg)

    @cached_property
    def instructions_read(self) -> dict:
        """The record of the instructions (`instructions_record`) that SFT's and each stage 3 run keep: a stage
        given `--sft runs/tiny/04_sft` then reads the journey's instruction file without --data."""
        return instructions_record(self.records, self.instructions_path, self.cfg.data_seed)

    @property
    def tokenizer(self) -> Tokenizer:
        """The tokenizer the first step trained, read from its folder."""
        return load_tokenizer(self.folder("tokenizer") / "tokenizer.json")


def step_folder(name: str) -> str:
    """The name of step `name`'s folder in a pipeline run: its place in the journey, then its name."""
    return f"{STEP_NAMES.index(name) + 1:02d}_{name}"


def has_checkpoint(folder: Path) -> bool:
    """True when a training run in `folder`, or in a folder below it, was interrupted after saving:
    resume it, do not restart.

    Below it too, because SFT's step trains its baselines in `baselines/*/`, and with `--jobs 2` they
    train beside SFT itself: a Ctrl-C may find a baseline's checkpoint saved and SFT's not yet. A
    step's folder holds only runs made from its current inputs (run_step deletes the others), so
    every checkpoint there is one to continue.
    """
    return any(folder.rglob("ckpt.pt"))


# --------------------------------------------------------------------------------------------------
# The steps, in the order they run. Each returns the numbers that report.json shows for it.


def step_tokenizer(j: Journey) -> dict:
    train_docs, val_docs = j.documents
    cfg = j.cfg.tokenizer
    tok = train_tokenizer(train_docs, cfg.vocab_size, kind=cfg.kind, spm_model_type=cfg.spm_model_type)
    tok.save(j.folder("tokenizer") / "tokenizer.json")
    val_text = "\n\n".join(val_docs)
    tokens = tok.encode(val_text)
    sentence = example_sentence(train_docs, val_docs)
    pieces = [tok.id_to_piece(i) for i in tok.encode(sentence)]
    return {"kind": cfg.kind, "vocab_size": tok.vocab_size,
            "tokens_per_byte": len(tokens) / len(val_text.encode("utf-8")),
            "example_sentence": sentence, "example_pieces": pieces}


def example_sentence(train_docs: list[str], val_docs: list[str]) -> str:
    """The sentence whose pieces report.md shows: the flash-flood sentence when the corpus talks about flash
    floods (the generated one does), otherwise the first line of held-out text: an English sentence cut
    by a tokenizer trained on Korean is all single bytes, which says nothing about the tokenizer."""
    if talks_of_flash_floods(val_docs, train_docs):
        return FLASH_FLOOD_SENTENCE
    return next((line.strip() for doc in val_docs for line in doc.split("\n") if line.strip()), FLASH_FLOOD_SENTENCE)


def step_mlm(j: Journey) -> dict:
    train_docs, val_docs = j.documents
    folder = j.folder("mlm")
    return train_mlm(j.cfg.mlm, j.tokenizer, train_docs, val_docs, folder, resume=has_checkpoint(folder),
                     corpus=j.corpus_read)


def step_clm(j: Journey) -> dict:
    train_docs, val_docs = j.documents
    folder = j.folder("clm")
    return train_clm(j.cfg.clm, j.tokenizer, train_docs, val_docs, folder, resume=has_checkpoint(folder),
                     corpus=j.corpus_read)


def step_sft(j: Journey) -> dict:
    """SFT and its baselines, each run with the record of its instructions (`Journey.instructions_read`), and of
    the corpus it replays (`Journey.corpus_read`) where it replays one (sft.pretrain_mix > 0: `data_read`)."""
    folder = j.folder("sft")
    return run_sft_with_baselines(j.cfg.sft, j.records, folder, j.folder("clm"), resume=has_checkpoint(folder),
                                  pretrain_docs=j.documents[0], side_by_side=j.jobs > 1,
                                  instructions=j.instructions_read, corpus=j.corpus_read)


def step_reward_model(j: Journey) -> dict:
    folder = j.folder("reward_model")
    prefs = folder / PREFS_NAME
    start = time.perf_counter()
    if not prefs.is_file():
        collect_rankings(j.cfg.reward, j.folder("sft"), j.records, prefs)
    result = train_reward_model(j.cfg.reward, j.folder("sft"), prefs, folder, records=j.records,
                                resume=has_checkpoint(folder), instructions=j.instructions_read)
    return {**result, "seconds": time.perf_counter() - start}


def step_ppo(j: Journey) -> dict:
    folder = j.folder("ppo")
    return train_ppo(j.cfg.ppo, j.folder("sft"), j.folder("reward_model"), j.records, folder,
                     resume=has_checkpoint(folder), instructions=j.instructions_read)


def step_dpo(j: Journey) -> dict:
    prefs, folder = j.folder("reward_model") / PREFS_NAME, j.folder("dpo")
    return train_dpo(j.cfg.dpo, j.folder("sft"), prefs, j.records, folder, resume=has_checkpoint(folder),
                     instructions=j.instructions_read)


def step_grpo(j: Journey) -> dict:
    return grpo_step(j, "grpo")


def step_grpo_verifiable(j: Journey) -> dict:
    return grpo_step(j, "grpo_verifiable")


def grpo_step(j: Journey, name: str) -> dict:
    """One of the two GRPO steps: the same algorithm, each with its own settings (its `reward` first).
    Only a run rewarded by the reward model is given it (`needs`): GRPO refuses a model it would not read."""
    folder, cfg = j.folder(name), getattr(j.cfg, name)
    rm_dir = j.folder("reward_model") if "reward_model" in needs(j.cfg, name) else None
    return train_grpo(cfg, j.folder("sft"), j.records, folder, rm_dir=rm_dir, resume=has_checkpoint(folder),
                      pass_at_k=False, instructions=j.instructions_read, section=name)


def step_rl_table(j: Journey) -> dict:
    """Every stage-3 answerer on the same held-out prompts and draw (scoreboard.py), and pass@k."""
    cfg = j.cfg.grpo  # every policy is sampled with GRPO's evaluation settings (READS)
    records = heldout_records(j.records, cfg.eval_prompts)
    policies = {name: (j.folder(step), j.results[step]["seconds"]) for name, step in RL_POLICIES.items()}
    device = resolve_device(cfg.train.device)
    rows = policy_table(j.folder("sft"), j.folder("reward_model"), policies, records, cfg.temperature,
                        cfg.max_new_tokens, seed=EVAL_SEED, device=device)
    models = {"SFT": j.folder("sft"), **{name: j.folder(step) for name, step in RL_POLICIES.items()}}
    right = right_answer_counts(models, records[:cfg.passk_prompts], cfg.passk_samples, cfg.temperature,
                                cfg.max_new_tokens, seed=EVAL_SEED, device=device)
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
        write_json(folder / INPUTS_NAME, {"id": uuid.uuid4().hex, **inputs, MADE_BY: made_by()})
    print(f"[{name}] running -> {folder}")
    start = time.perf_counter()
    result = STEPS[name](j)
    # Free what the step held before the next one allocates its own. Some of it is held only by reference
    # cycles, which Python frees at its next full collection, maybe steps later: matplotlib draws a log axis's
    # labels with pyparsing, whose caught exceptions keep the frames that called it, so MLM's and CLM's model
    # and optimizer would stay through the rest of the journey (on a GPU, memory that the later steps need).
    gc.collect()
    result = {k: v for k, v in result.items() if k != "history"}  # every logged row: in metrics.jsonl already
    # "seconds": the training time, where the step reports its own (SFT without its baselines, say);
    # "wall_seconds": the whole step. report.json shows both (report.build_report).
    result.setdefault("seconds", time.perf_counter() - start)
    result["wall_seconds"] = time.perf_counter() - start
    write_json(result_path, jsonable(result))
    return result


def check_folder_kept(j: Journey, before: str) -> None:
    """Before each step and the report (`before` names it): stop if the journey's folder was deleted
    while it ran (its config.json, written first, is gone). Each write of a step makes the folders it
    needs again, so the journey went on into a new folder without the steps before, and failed at the
    first file a later step reads ("no checkpoint at 04_sft/ckpt.pt") or wrote a report of steps no
    longer there; and what it left was refused by the next run as files no minillm run wrote."""
    if not (j.out_dir / CONFIG_NAME).is_file():
        raise DataError(f"{j.out_dir} was deleted while the pipeline ran (its {CONFIG_NAME} is gone): stopped before "
                        f"{before}, which reads the steps before it; delete what is left of {j.out_dir} and "
                        "run the pipeline again")


def jsonable(obj: Any) -> Any:
    """Make a result JSON-safe (tuples to lists, paths to strings)."""
    return json.loads(json.dumps(obj, default=str))


# --------------------------------------------------------------------------------------------------
# Pre-flight: a setting that a step refuses when it starts is refused before the first step, not
# after minutes of the training before it. Each check is the one its step makes: the same function,
# the same message.


def preflight(j: Journey) -> None:
    """Refuse now each setting that a later step would refuse when it starts.

    Every model from SFT on starts from the CLM's, so each answer length must leave a prompt room in
    clm.model.block_size tokens (the comparison table answers with grpo's). An instruction file of
    your own must hold what SFT and the RL steps read, and sft.single_family must name one of its
    families (a generated suite always has both splits and every family). What needs the trained
    tokenizer (does a chat example fit the context? does the corpus fill a batch?) stays in its
    step: an estimate made before the tokenizer exists could refuse settings that work. A name added
    to one of config.py's lists without its branch (a norm, a dtype, a DPO choice of pairs, a GRPO
    baseline) is refused by the function that lacks the branch, as the step would be.
    """
    cfg = j.cfg
    with torch.device("meta"):  # the two models' shapes alone: no memory, no time, no random draw
        Bert(cfg.mlm.model)
        GPT(cfg.clm.model)  # (every later model is the CLM's shape, the reward model's included)
    for train in train_configs(cfg):
        torch_dtype(train.dtype)
    uses_gold(cfg.ppo)
    chosen_pairs([0, 1], cfg.dpo.pairs)
    for grpo in (cfg.grpo, cfg.grpo_verifiable):  # rewards of one prompt's group, (P=1, G)
        group_advantages(torch.zeros(1, grpo.group_size), grpo.baseline)
    for name in ("sft", "reward", "ppo", "dpo", "grpo", "grpo_verifiable"):
        check_room_for_prompt(cfg.clm.model.block_size, getattr(cfg, name).max_new_tokens, f"{name}.max_new_tokens",
                              "clm.model.block_size")
    check_adapters(cfg.sft, cfg.clm.model)
    check_rankings_hold_one_out(cfg.reward.n_prompts)
    if j.instructions_path or cfg.sft.single_family:
        training_records(j.records)  # SFT trains on them, and the RL steps draw their prompts from them
        heldout_records(j.records, 1)  # the policies are compared on them
        if cfg.sft.single_family_baseline:
            single_family_name(j.records, cfg.sft.single_family)


def run_pipeline(cfg: PipelineConfig, out_dir: str | Path, *, force: bool = False,
                 corpus: str | Path | None = None, instructions: str | Path | None = None, jobs: int = 1,
                 reuse_from: str | Path | None = None, skip_bad_lines: bool = False) -> dict:
    """Run every stage into `out_dir` and write report.json and report.md there.

    `jobs` > 1 runs steps that do not depend on each other side by side, in that many processes of
    one thread each (`run_steps_in_parallel`); 1 runs them in order, in this process.
    `reuse_from`: the folder of another pipeline run; each of its steps made from the same inputs as
    this run's is copied instead of trained (an experiment then trains only what it changed).
    `skip_bad_lines`: report and skip malformed lines of the `instructions` file instead of stopping.
    """
    refuse_several_processes("the pipeline")
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
    # said at once: the checks before the first step take seconds (they build the models' shapes) in which
    # nothing else would be on the screen
    print(f"pipeline ({cfg.preset} preset): {len(STEP_NAMES)} steps into {out_dir}; checking their settings first")
    journey = Journey(cfg, out_dir, corpus, instructions, jobs=jobs,
                      reuse_from=None if reuse_from is None else Path(reuse_from), skip_bad_lines=skip_bad_lines)
    if instructions:  # read now: a malformed file stops the journey before stage 1's minutes, not after them
        print(f"instructions: {len(journey.records)} records from {instructions}")
    if corpus:  # the same for the corpus (missing, not UTF-8, empty), before config.json is written
        print(f"corpus: {sum(map(len, journey.documents))} documents from {corpus}")
    preflight(journey)
    remove_report(out_dir)  # (before config.json changes: no report of other settings beside it)
    journey.write_config()
    if force:  # later steps depend on earlier ones: redo all of them, from scratch, not from checkpoints
        for name in STEP_NAMES:
            shutil.rmtree(journey.folder(name), ignore_errors=True)
    start = time.perf_counter()
    if jobs > 1:
        run_steps_in_parallel(journey, jobs)
    else:
        for name in STEP_NAMES:
            check_folder_kept(journey, f"the {name} step")
            journey.results[name] = run_step(journey, name)
    check_folder_kept(journey, "the report")
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
GRPO_STEPS = ("grpo", "grpo_verifiable")  # NEEDS names their default rewards' needs: see `needs`


def needs(cfg: PipelineConfig, name: str) -> tuple[str, ...]:
    """The steps that step `name` waits for and is made from, with the settings `cfg`.

    NEEDS, except for the two GRPO steps, whose needs follow their `reward`: rewarded by the reward
    model ("model", grpo's default), a step reads that model and must be redone when it is; rewarded
    by a program ("verifiable", grpo_verifiable's default, or the "gold" judge) it reads only the SFT
    model, and a new reward model leaves it as it was. (`--set grpo_verifiable.reward=model` with
    NEEDS alone would keep a GRPO run trained against a reward model since replaced.)
    """
    if name in GRPO_STEPS:
        return ("reward_model",) if getattr(cfg, name).reward == "model" else ("sft",)
    return NEEDS[name]


def run_steps_in_parallel(j: Journey, jobs: int) -> None:
    """Run every step as soon as the steps it needs are done, at most `jobs` at a time."""
    pending, running = list(STEP_NAMES), {}
    with worker_pool(jobs) as pool, interrupts_children():
        while pending or running:
            ready = [n for n in pending if all(need in j.results for need in needs(j.cfg, n))]
            for name in ready[:jobs - len(running)]:
                check_folder_kept(j, f"the {name} step")
                pending.remove(name)
                # The worker gets the journey's settings and results so far, not the data it has read:
                # a new Journey (dataclasses.replace) reads its own, as in a pipeline of its own.
                journey = dataclasses.replace(j, results=dict(j.results))
                running[pool.submit(in_one_thread, run_step, journey, name)] = name
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                j.results[running.pop(future)] = future.result()


# --------------------------------------------------------------------------------------------------
# Which outputs are still good (reuse.py): a step's outputs follow from its settings and from the runs
# of the steps it reads (NEEDS, and through theirs every step before). inputs.json records both.

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


def code_records(out_dir: Path) -> dict[str, object]:
    """Step folder -> which code started its run (the record in its inputs.json; provenance.py), None for a
    step made before minillm recorded it, or not made yet."""
    return {step_folder(name): saved_record(out_dir / step_folder(name) / INPUTS_NAME) for name in STEP_NAMES}
