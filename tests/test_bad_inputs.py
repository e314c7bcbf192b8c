"""The bad-input table: every mistake a user can make gives one clear line, and breaks nothing.

Each row of `CLI_TABLE` is one mistake made on the command line (a config value, a data file, a
tokenizer or checkpoint file, a flag). It runs `minillm` in-process three ways and checks:

1. the plain run exits with code 2 and prints ONE line on stderr, `minillm...: error: ...`, with no
   traceback, and that line holds the row's key words (the problem and the fix);
2. the same command with `--debug` raises the row's exception class, traceback and all;
3. nothing in the workspace changed: every file that existed before (a good checkpoint, tokenizer,
   rankings file, ...) is byte-identical afterwards, and no file appeared (so a pickled payload in a
   malicious checkpoint did not run: it would have made a folder).

`LIBRARY_TABLE` holds the few mistakes that only the Python API can
make (ids that the command line never builds). Everything runs on the `micro` preset and tiny files.
"""

from __future__ import annotations

import functools
import io
import json
import os
import random
import shutil
import sys
import tarfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from crash_resume import finish, run_python, start_python

from minillm.cli import main
from minillm.config import MIN_TEMPERATURE, ModelConfig, PipelineConfig, apply_overrides, preset, to_dict
from minillm.datasets import (
    corpus_splits,
    generate_corpus,
    generate_instruction_suite,
    instruction_records,
    read_jsonl,
    split_documents,
    write_corpus,
)
from minillm.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    MinillmError,
    ModelInputError,
    RunLockedError,
    TokenizerError,
)
from minillm.model import GPT, Bert
from minillm.model.gpt import filter_logits, sample_next
from minillm.run_lock import RUN_MARK_NAME
from minillm.stage1_pretrain import fill_mask, train_clm, train_mlm
from minillm.stage2_sft import evaluate_model, generate_answers, run_sft_with_baselines, train_sft
from minillm.stage3_rlhf import (
    RewardModel,
    collect_rankings,
    dpo,
    reward_hacking,
    train_dpo,
    train_ppo,
    train_reward_model,
)
from minillm.stage3_rlhf.grpo import train_grpo
from minillm.tokenizer import load_tokenizer, train_tokenizer
from minillm.train import load_checkpoint, load_model, make_optimizer, save_checkpoint, train
from minillm.train.loop import read_metrics
from minillm.utils import read_json

Setup = Callable[[Path], None]

# The good run the table damages or reuses: a 1-step CLM run on a 10 kB corpus.
CLM_MICRO = ("--preset", "micro", "--set", "clm.train.batch_size=4", "--set", "clm.model.block_size=16",
             "--set", "clm.train.max_steps=1", "--set", "clm.train.eval_batches=1")
MICRO = (*CLM_MICRO, "--set", "tokenizer.vocab_size=300")
PRETRAIN = ("pretrain", "clm", "--corpus", "{ws}/corpus.txt", *MICRO)  # + "--out", ...
NEW_RUN = (*PRETRAIN, "--out", "{ws}/new")
# with --tokenizer-file the tokenizer section is not read, so it is not set
NEW_RUN_OWN_TOKENIZER = ("pretrain", "clm", "--corpus", "{ws}/corpus.txt", *CLM_MICRO, "--out", "{ws}/new")


@dataclass(frozen=True)
class Bad:
    """One mistake: the arguments ("{ws}" is the workspace), what --debug raises, the key words."""

    name: str
    argv: tuple[str, ...]
    error: type[BaseException]  # SystemExit: argparse refused the arguments themselves
    words: tuple[str, ...]  # each must appear in the error line (case-insensitive)
    setup: Setup | None = None  # writes the bad file(s) into the workspace first


# --------------------------------------------------------------------------------------------------
# Making bad files.


def write(name: str, content: str | bytes) -> Setup:
    def setup(ws: Path) -> None:
        path = ws / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return setup


def edit_json(src: str, dst: str, change: Callable[[dict], object]) -> Setup:
    """Copy JSON file `src` to `dst`, with `change` (which edits the dict in place) applied."""
    def setup(ws: Path) -> None:
        data = json.loads((ws / src).read_text(encoding="utf-8"))
        change(data)
        (ws / dst).write_text(json.dumps(data), encoding="utf-8")
    return setup


def truncated(src: str, dst: str, keep: float = 0.5) -> Setup:
    def setup(ws: Path) -> None:
        data = (ws / src).read_bytes()
        (ws / dst).parent.mkdir(parents=True, exist_ok=True)
        (ws / dst).write_bytes(data[: int(len(data) * keep)])
    return setup


def run_folder(name: str, payload: Callable[[Path], dict] | None = None, raw: bytes | None = None,
               tokenizer: bool = True) -> Setup:
    """A run folder `name` holding a ckpt.pt (a payload saved by minillm, or raw bytes) and tokenizer.json."""
    def setup(ws: Path) -> None:
        folder = ws / name
        folder.mkdir(parents=True)
        if raw is not None:
            (folder / "ckpt.pt").write_bytes(raw)
        else:
            save_checkpoint(folder / "ckpt.pt", payload(ws))
        if tokenizer:
            shutil.copy(ws / "tok.json", folder / "tokenizer.json")
    return setup


def torch_bytes(obj: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


class _RunsCode:
    """Unpickling this calls os.mkdir(path): the harmless stand-in for a payload that runs code."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return os.mkdir, (self.path,)


def malicious_checkpoint(ws: Path) -> None:
    (ws / "evil").mkdir()
    torch.save({"format_version": 1, "model": _RunsCode(str(ws / "PWNED"))}, ws / "evil" / "ckpt.pt")
    shutil.copy(ws / "tok.json", ws / "evil" / "tokenizer.json")


def gpt_payload(ws: Path, **config) -> dict:
    """What load_model needs, from the good run's checkpoint, with model config fields changed."""
    ckpt = load_checkpoint(ws / "gpt" / "ckpt.pt")
    return {"model_kind": "gpt", "model_config": {**ckpt["model_config"], **config}, "model": ckpt["model"]}


def good_prefs(n: int = 5, split: bool = True) -> str:
    lines = [{"prompt": f"Count to {i}", "answers": [str(i), "no", f"{i}!"], "ranking": [0, 2, 1],
              **({"split": "test" if i % 5 == 4 else "train"} if split else {})} for i in range(n)]
    return "".join(json.dumps(line) + "\n" for line in lines)


def all_train_prefs() -> str:
    return "".join(json.dumps({"prompt": f"p{i}", "answers": ["a", "b"], "ranking": [1, 0], "split": "train"})
                   + "\n" for i in range(3))


NOT_UTF8 = "caf\u00e9 au lait\n\nsecond document\n".encode("latin-1")
GOOD_RECORD = json.dumps({"prompt": "Say hi", "response": "hi"})
HELD_OUT_RECORD = json.dumps({"prompt": "Say bye", "response": "bye", "split": "test_seen"})
BOTH_SPLITS = GOOD_RECORD + "\n" + HELD_OUT_RECORD + "\n"
PPO = ("ppo", "--sft", "{ws}/gpt", "--reward", "{ws}/gpt", "--out", "{ws}/ppo", "--preset", "micro",
       "--data", "{ws}/i.jsonl")
GRPO = ("grpo", "--sft", "{ws}/gpt", "--out", "{ws}/grpo", "--preset", "micro", "--data", "{ws}/i.jsonl",
        "--set", "grpo.reward=verifiable")


def tar_of_corpus(ws: Path) -> None:
    """A tar archive of the corpus: tar headers are NUL-padded ASCII, so the whole file is valid UTF-8."""
    with tarfile.open(ws / "corpus.tar", "w") as archive:
        archive.add(ws / "corpus.txt", arcname="corpus.txt")


def smaller_tokenizer_beside(name: str) -> Setup:
    """A run folder whose tokenizer.json was swapped for one of 280 ids; its model has 300."""
    def setup(ws: Path) -> None:
        run_folder(name, gpt_payload, tokenizer=False)(ws)
        train_tokenizer([(ws / "corpus.txt").read_text(encoding="utf-8")], 280, progress=False).save(
            ws / name / "tokenizer.json")
    return setup


def other_corpus_and_no_tokenizer(ws: Path) -> None:
    (ws / "gpt" / "tokenizer.json").unlink()
    (ws / "other.txt").write_text((ws / "corpus.txt").read_text(encoding="utf-8").replace("e", "E"), encoding="utf-8")


def copy_of_gpt_run(name: str, file: str, content: str) -> Setup:
    """A copy of the good CLM run, `name`, whose `file` is replaced by `content`."""
    def setup(ws: Path) -> None:
        shutil.copytree(ws / "gpt", ws / name)
        (ws / name / file).write_text(content, encoding="utf-8")
    return setup


def gpt_run_of_stage(name: str, stage: str, vocab_size: int | None = None) -> Setup:
    """A copy of the good CLM run, `name`, whose checkpoint says another training `stage` wrote it (and, with
    `vocab_size`, beside another tokenizer: an SFT run's, from the CLM run of another preset)."""
    def setup(ws: Path) -> None:
        shutil.copytree(ws / "gpt", ws / name)
        save_checkpoint(ws / name / "ckpt.pt", {**load_checkpoint(ws / "gpt" / "ckpt.pt"), "stage": stage})
        if vocab_size is not None:
            train_tokenizer([(ws / "corpus.txt").read_text(encoding="utf-8")], vocab_size, progress=False).save(
                ws / name / "tokenizer.json")
    return setup


def prefs_with_split(split: str) -> str:
    return "".join(json.dumps({"prompt": f"Count to {i}", "answers": [str(i), "no", f"{i}!"], "ranking": [0, 2, 1],
                               "split": split if i % 5 == 4 else "train"}) + "\n" for i in range(10))


# --------------------------------------------------------------------------------------------------
# The table.

CLI_TABLE = [
    # --- configs, through --set and the runtime flags --------------------------------------------
    Bad("n_embd not divisible by n_head", (*NEW_RUN, "--set", "clm.model.n_head=5"), ConfigError,
        ("clm.model", "n_head=5", "n_embd (32) must be divisible by n_head", "try n_head in")),
    Bad("negative dropout", (*NEW_RUN, "--set", "clm.model.dropout=-0.1"), ConfigError,
        ("dropout=-0.1", "[0.0, 1.0)")),
    Bad("unknown norm", (*NEW_RUN, "--set", "clm.model.norm=middle"), ConfigError,
        ("norm='middle'", "pre, post")),
    Bad("batch not divisible by grad_accum", (*NEW_RUN, "--set", "clm.train.grad_accum_steps=3"), ConfigError,
        ("clm.train", "grad_accum_steps=3", "batch_size (4) must be divisible")),
    Bad("zero learning rate", (*NEW_RUN, "--set", "clm.train.lr=0"), ConfigError, ("lr=0.0", "(0.0, 10.0]")),
    Bad("unknown dtype via --set", (*NEW_RUN, "--set", "clm.train.dtype=float8"), ConfigError,
        ("clm.train", "dtype='float8'", "float32, bfloat16, float16")),
    Bad("a section the command never reads", (*NEW_RUN, "--set", "sft.train.lr=1"), ConfigError,
        ("--set sft.train.lr=1", "`minillm pretrain` does not read the sft section", "it reads tokenizer, clm")),
    Bad("unknown dtype flag", (*NEW_RUN, "--dtype", "float8"), SystemExit,
        ("--dtype", "invalid choice", "float32", "--help")),
    Bad("unknown device", (*NEW_RUN, "--device", "tpu"), ConfigError, ("device='tpu'", "auto, cpu, cuda")),
    Bad("pipeline device via --set", (*NEW_RUN, "--set", "device=gpu"), ConfigError,
        ("PipelineConfig.device='gpu'", "cuda")),
    Bad("val_fraction out of range", (*NEW_RUN, "--set", "val_fraction=0.9"), ConfigError,
        ("val_fraction=0.9", "(0.0, 0.5]")),
    Bad("--set unknown field", (*NEW_RUN, "--set", "clm.model.n_layers=2"), ConfigError,
        ("n_layers", "did you mean 'n_layer'")),
    Bad("--set unknown group", (*NEW_RUN, "--set", "gpt.model.n_layer=2"), ConfigError,
        ("PipelineConfig has no field 'gpt'", "clm")),
    Bad("--set text for an integer", (*NEW_RUN, "--set", "clm.train.max_steps=ten"), ConfigError,
        ("max_steps='ten'", "expected an integer")),
    Bad("--set text for a boolean", (*NEW_RUN, "--set", "clm.train.compile=maybe"), ConfigError,
        ("compile='maybe'", "true or false")),
    Bad("--set a group instead of a value", (*NEW_RUN, "--set", "clm.model=3"), ConfigError,
        ("'model' is a group", "clm.model.")),
    Bad("--set through a value", (*NEW_RUN, "--set", "clm.train.lr.warm=1"), ConfigError,
        ("'lr' is a single value", "--set clm.train.lr=VALUE")),
    Bad("--set without '='", (*NEW_RUN, "--set", "clm.train.max_steps"), ConfigError,
        ("path=value", "clm.model.n_layer=6")),
    Bad("pipeline: --reuse of a folder that is not a pipeline run",
        ("pipeline", "--preset", "micro", "--out", "{ws}/journey", "--reuse", "{ws}/gpt"), DataError,
        ("--reuse", "gpt is not the folder of a pipeline run", "minillm pipeline")),
    Bad("pipeline: --force with --reuse", ("pipeline", "--preset", "micro", "--out", "{ws}/journey", "--force",
                                           "--reuse", "{ws}/gpt"), ConfigError, ("--force", "--reuse", "one of them")),
    Bad("compare: a pipeline run's report.json damaged", ("compare", "{ws}/j1", "{ws}/j2"), DataError,
        ("j2/report.json is not valid JSON", "restore it"),
        lambda ws: (write("j1/report.json", '{"stages": {}}')(ws), write("j2/report.json", '{"stages": ')(ws))),
    Bad("unknown preset", (*NEW_RUN, "--preset", "huge"), SystemExit, ("invalid choice: 'huge'", "micro")),
    Bad("unknown command", ("pretrian",), SystemExit, ("invalid choice: 'pretrian'", "pretrain")),
    Bad("--top-k not positive", ("fill-mask", "--ckpt", "{ws}/bert", "a [MASK]", "--top-k", "0"), SystemExit,
        ("--top-k", "'0' is not an integer >= 1")),
    # --- corpus files ----------------------------------------------------------------------------
    Bad("missing corpus", (*NEW_RUN, "--corpus", "{ws}/nope.txt"), DataError,
        ("nope.txt does not exist", "UTF-8 text file")),
    Bad("empty corpus", (*NEW_RUN, "--corpus", "{ws}/empty.txt"), DataError,
        ("empty.txt holds no text", "empty"), write("empty.txt", "")),
    Bad("whitespace-only corpus", (*NEW_RUN, "--corpus", "{ws}/blank.txt"), DataError,
        ("holds no text", "whitespace"), write("blank.txt", "  \n\n\t \n")),
    Bad("non-UTF-8 corpus", (*NEW_RUN, "--corpus", "{ws}/latin1.txt"), DataError,
        ("not UTF-8", "byte 3", "iconv"), write("latin1.txt", NOT_UTF8)),
    Bad("corpus of one document", (*NEW_RUN, "--corpus", "{ws}/one.txt"), DataError,
        ("only 1 document", "blank line"), write("one.txt", "a single document\nof two lines\n")),
    # MISLEADING before the check: "only 1 document(s) ...; separate documents with a blank line", of no file of yours
    Bad("generated corpus of one document",
        ("pretrain", "clm", *MICRO, "--out", "{ws}/new", "--set", "corpus_mb=0.0001"), ConfigError,
        ("corpus_mb=0.0001 generates 1 document", f"--set corpus_mb={PipelineConfig().corpus_mb} (the default)")),
    Bad("corpus too small for one batch",
        (*NEW_RUN_OWN_TOKENIZER, "--corpus", "{ws}/two.txt", "--tokenizer-file", "{ws}/tok.json"), DataError,
        ("the train split has", "one batch (4 windows of 16+1 tokens) needs 68", "bigger corpus",
         "--set clm.model.block_size or clm.train.batch_size"),
        write("two.txt", "one doc\n\ntwo doc\n")),
    # --- instruction and preference files --------------------------------------------------------
    Bad("instruction JSONL: malformed line",
        ("sft", "--init", "{ws}/gpt", "--out", "{ws}/sft", "--preset", "micro", "--data", "{ws}/i.jsonl"),
        DataError, ("i.jsonl, line 2", "invalid JSON", "--skip-bad-lines"),
        write("i.jsonl", GOOD_RECORD + '\n{"prompt": "a", \n')),
    Bad("pipeline: instruction JSONL malformed, found before any training",
        ("pipeline", "--preset", "micro", "--out", "{ws}/journey", "--data", "{ws}/i.jsonl"),
        DataError, ("i.jsonl, line 2", "invalid JSON", "--skip-bad-lines"),
        write("i.jsonl", GOOD_RECORD + '\n{"prompt": "a", \n')),
    Bad("instruction JSONL: missing field",
        ("sft", "--init", "{ws}/gpt", "--out", "{ws}/sft", "--preset", "micro", "--data", "{ws}/i.jsonl"),
        DataError, ("i.jsonl, line 2", 'missing field "response"'),
        write("i.jsonl", GOOD_RECORD + '\n{"prompt": "a"}\n')),
    Bad("instruction JSONL: wrong type",
        ("sft", "--init", "{ws}/gpt", "--out", "{ws}/sft", "--preset", "micro", "--data", "{ws}/i.jsonl"),
        DataError, ("line 1", 'field "prompt" should be a string, got int'),
        write("i.jsonl", '{"prompt": 7, "response": "b"}\n')),
    Bad("instruction JSONL: not UTF-8",
        ("sft", "--init", "{ws}/gpt", "--out", "{ws}/sft", "--preset", "micro", "--data", "{ws}/i.jsonl"),
        DataError, ("not UTF-8", "convert it"), write("i.jsonl", NOT_UTF8)),
    Bad("instruction JSONL: missing file",
        ("sft", "--init", "{ws}/gpt", "--out", "{ws}/sft", "--preset", "micro", "--data", "{ws}/nope.jsonl"),
        DataError, ("nope.jsonl does not exist",)),
    Bad("rankings: no valid line",
        ("dpo", "--sft", "{ws}/gpt", "--prefs", "{ws}/p.jsonl", "--out", "{ws}/dpo", "--preset", "micro",
         "--data", "{ws}/i.jsonl"), DataError, ("p.jsonl", "line 1", "ranking"),
        lambda ws: (write("i.jsonl", BOTH_SPLITS)(ws),
                    write("p.jsonl", '{"prompt": "a", "answers": ["x", "y"], "ranking": [0, 0]}\n')(ws))),
    # MISLEADING before the check: "JSONL file .../rm does not exist (or is not a file)", of the folder beside it
    Bad("rankings: --prefs is the reward model's run folder",
        ("dpo", "--sft", "{ws}/gpt", "--prefs", "{ws}/rm", "--out", "{ws}/dpo", "--preset", "micro",
         "--data", "{ws}/i.jsonl"), DataError, ("rm is a folder, not a JSONL file", "give the file itself",
                                                "prefs.jsonl"),
        lambda ws: (write("i.jsonl", BOTH_SPLITS)(ws), write("rm/prefs.jsonl", good_prefs())(ws))),
    Bad("rankings: none held out",
        ("reward", "--sft", "{ws}/gpt", "--prefs", "{ws}/p.jsonl", "--out", "{ws}/rm", "--preset", "micro",
         "--data", "{ws}/i.jsonl"), DataError, ("p.jsonl", "held-out", "got 3 and 0", "collect more", "at least 5"),
        lambda ws: (write("i.jsonl", GOOD_RECORD)(ws), write("p.jsonl", all_train_prefs())(ws))),
    Bad("rankings: too few for DPO",
        ("dpo", "--sft", "{ws}/gpt", "--prefs", "{ws}/p.jsonl", "--out", "{ws}/dpo", "--preset", "micro",
         "--data", "{ws}/i.jsonl"), DataError, ("p.jsonl", "got 3 and 0", "at least 5"),
        lambda ws: (write("i.jsonl", BOTH_SPLITS)(ws), write("p.jsonl", all_train_prefs())(ws))),
    Bad("reward: existing run and its rankings are kept",
        ("reward", "--sft", "{ws}/gpt", "--out", "{ws}/rm_done", "--preset", "micro", "--data", "{ws}/i.jsonl"),
        CheckpointError, ("rm_done already holds a training run", "--resume", "another output folder"),
        lambda ws: (write("i.jsonl", GOOD_RECORD)(ws), write("rm_done/prefs.jsonl", good_prefs())(ws),
                    write(f"rm_done/{RUN_MARK_NAME}", "")(ws),
                    save_checkpoint(ws / "rm_done" / "ckpt.pt",  # a reward model's run, as far as the loop can tell
                                    {**load_checkpoint(ws / "gpt" / "ckpt.pt"), "stage": "reward"}))),
    # --- stage 3 runs: records and answer lengths checked before anything is written ----------------
    Bad("ppo: no training records", PPO, DataError, ("PPO: no training records", "split == 'train'"),
        write("i.jsonl", HELD_OUT_RECORD)),
    Bad("grpo: no held-out records", GRPO, DataError, ("no held-out records", "test splits"),
        write("i.jsonl", GOOD_RECORD)),
    Bad("dpo: no held-out records",
        ("dpo", "--sft", "{ws}/gpt", "--prefs", "{ws}/p.jsonl", "--out", "{ws}/dpo", "--preset", "micro",
         "--data", "{ws}/i.jsonl"), DataError, ("no held-out records", "test splits"),
        lambda ws: (write("i.jsonl", GOOD_RECORD)(ws), write("p.jsonl", good_prefs())(ws))),
    Bad("ppo: answers leave no room for a prompt", (*PPO, "--set", "ppo.max_new_tokens=13"), ConfigError,
        ("PPOConfig.max_new_tokens=13", "no room for a prompt", "(16 tokens)", "largest allowed is 12"),
        write("i.jsonl", BOTH_SPLITS)),
    Bad("grpo: a reward model given to the verifiable reward", (*GRPO, "--reward", "{ws}/gpt"), ConfigError,
        ("a reward model", "grpo.reward=verifiable reads none", "drop --reward"), write("i.jsonl", BOTH_SPLITS)),
    Bad("a seed too large for torch", ("generate", "--ckpt", "{ws}/gpt", "hi", "--seed", str(2**64)), SystemExit,
        ("--seed", "is not a seed: an integer in [0, 2**63 - 1]")),
    Bad("a training seed too large for torch", (*NEW_RUN, "--set", f"clm.train.seed={2**64}"), ConfigError,
        ("clm.train", "seed=18446744073709551616", "[0, 2**63 - 1]")),
    Bad("sft: its evaluation's answers leave no room for a prompt",
        ("sft", "--init", "{ws}/gpt", "--out", "{ws}/sft", "--preset", "micro", "--data", "{ws}/i.jsonl",
         "--no-baselines", "--set", "sft.max_new_tokens=13"), ConfigError,
        ("SFTConfig.max_new_tokens=13", "largest allowed is 12"), write("i.jsonl", BOTH_SPLITS)),
    Bad("reward: the answers to rank leave no room for a prompt",
        ("reward", "--sft", "{ws}/gpt", "--out", "{ws}/rm", "--preset", "micro", "--data", "{ws}/i.jsonl",
         "--set", "reward.max_new_tokens=13"), ConfigError,
        ("RewardConfig.max_new_tokens=13", "largest allowed is 12"), write("i.jsonl", BOTH_SPLITS)),
    Bad("grpo: answers leave no room for a prompt", (*GRPO, "--set", "grpo.max_new_tokens=13"), ConfigError,
        ("GRPOConfig.max_new_tokens=13", "largest allowed is 12"), write("i.jsonl", BOTH_SPLITS)),
    Bad("annotate: missing prompts file",
        ("annotate", "--policy", "{ws}/gpt", "--prompts", "{ws}/nope.jsonl", "--out", "{ws}/p.jsonl"),
        DataError, ("no prompts file", "one prompt a line")),
    Bad("annotate: a prompts file that is not UTF-8",
        ("annotate", "--policy", "{ws}/gpt", "--prompts", "{ws}/latin1.txt", "--out", "{ws}/p.jsonl"),
        DataError, ("prompts file", "latin1.txt is not UTF-8", "iconv"), write("latin1.txt", NOT_UTF8)),
    Bad("annotate: one answer per prompt leaves nothing to rank",
        ("annotate", "--policy", "{ws}/gpt", "--prompts", "{ws}/nope.jsonl", "--out", "{ws}/p.jsonl", "--k", "1"),
        ConfigError, ("k=1", "at least 2 answers")),
    # UNBOUNDED before the check: --k 1000000000 went on to sample a billion answers at once
    Bad("annotate: more answers per prompt than a person can rank",
        ("annotate", "--policy", "{ws}/gpt", "--prompts", "{ws}/nope.jsonl", "--out", "{ws}/p.jsonl",
         "--k", "1000000000"), ConfigError, ("k=1000000000", "at most 9 answers", "from 2 to 9")),
    # the edges of "2 to 9" (--k's help): 10 is refused, 9 goes on to the next check (here the missing file)
    Bad("annotate: 10 answers per prompt, one more than allowed",
        ("annotate", "--policy", "{ws}/gpt", "--prompts", "{ws}/nope.jsonl", "--out", "{ws}/p.jsonl", "--k", "10"),
        ConfigError, ("k=10", "at most 9 answers")),
    Bad("annotate: 9 answers per prompt are allowed, the missing prompts file is the mistake",
        ("annotate", "--policy", "{ws}/gpt", "--prompts", "{ws}/nope.jsonl", "--out", "{ws}/p.jsonl", "--k", "9"),
        DataError, ("no prompts file",)),
    # TRACEBACK-free but LOST the first ranking typed: "Is a directory: ..." came after it, at its writing
    Bad("annotate: --out is a folder",
        ("annotate", "--policy", "{ws}/gpt", "--prompts", "{ws}/p.txt", "--out", "{ws}", "--max-new-tokens", "4"),
        ConfigError, ("is a folder", "rankings go into a file", "prefs.jsonl"), write("p.txt", "how?\n")),
    Bad("annotate: --out ending in a slash",
        ("annotate", "--policy", "{ws}/gpt", "--prompts", "{ws}/p.txt", "--out", "{ws}/rankings/",
         "--max-new-tokens", "4"), ConfigError, ("is a folder", "rankings/prefs.jsonl"), write("p.txt", "how?\n")),
    # SILENT before the check: nothing asked, exit code 0 (an empty .jsonl was refused)
    Bad("annotate: a prompts text file without a prompt",
        ("annotate", "--policy", "{ws}/gpt", "--prompts", "{ws}/p.txt", "--out", "{ws}/p.jsonl"),
        DataError, ("p.txt holds no prompts", "one prompt a line"), write("p.txt", "\n   \n")),
    # UNCLEAR before the check: "max_new_tokens=13 leaves no room ...", not the flag's name
    Bad("annotate: answers that leave no room for a prompt",
        ("annotate", "--policy", "{ws}/gpt", "--prompts", "{ws}/p.txt", "--out", "{ws}/p.jsonl",
         "--max-new-tokens", "13"), ConfigError, ("--max-new-tokens=13", "largest allowed is 12"),
        write("p.txt", "how?\n")),
    # --- tokenizer files -------------------------------------------------------------------------
    Bad("tokenizer: missing file", ("tokenizer", "encode", "--tokenizer", "{ws}/nope.json", "hi"),
        TokenizerError, ("nope.json does not exist", "train one", "minillm tokenizer train")),
    Bad("sentencepiece: vocabulary smaller than the corpus's characters",
        ("tokenizer", "train", "--input", "{ws}/hangul.txt", "--kind", "sentencepiece", "--vocab-size", "300",
         "--out", "{ws}/spm.json"), TokenizerError,
        ("could not train a vocabulary of 300", "--set tokenizer.vocab_size=", "--vocab-size"),
        write("hangul.txt", "\n".join(" ".join(chr(0xAC00 + (7 * i + j) % 2000) * 2 for j in range(12))
                                      for i in range(300)))),
    Bad("tokenizer: not JSON", ("tokenizer", "encode", "--tokenizer", "{ws}/bad.json", "hi"), TokenizerError,
        ("bad.json is not valid JSON", "retrain"), write("bad.json", "this is not json")),
    Bad("tokenizer: truncated", ("tokenizer", "encode", "--tokenizer", "{ws}/bad.json", "hi"), TokenizerError,
        ("bad.json is not valid JSON", "retrain"), truncated("tok.json", "bad.json")),
    Bad("tokenizer: unknown kind", ("tokenizer", "encode", "--tokenizer", "{ws}/bad.json", "hi"),
        TokenizerError, ("'wordpiece'", "bpe", "sentencepiece"),
        edit_json("tok.json", "bad.json", lambda d: d.update(kind="wordpiece"))),
    Bad("tokenizer: JSON but no kind", ("tokenizer", "encode", "--tokenizer", "{ws}/bad.json", "hi"),
        TokenizerError, ("no 'kind' field", "not a minillm tokenizer"), write("bad.json", "[1, 2, 3]")),
    Bad("tokenizer: a field missing", ("tokenizer", "encode", "--tokenizer", "{ws}/bad.json", "hi"),
        TokenizerError, ("missing", "merges", "retrain"),
        edit_json("tok.json", "bad.json", lambda d: d.pop("merges"))),
    # SILENT before the check: --kind bpe (the default) trained minillm's BPE, the model type dropped
    Bad("tokenizer train: --spm-model-type without --kind sentencepiece",
        ("tokenizer", "train", "--input", "{ws}/corpus.txt", "--spm-model-type", "unigram", "--out", "{ws}/t.json"),
        ConfigError, ("--spm-model-type unigram", "--kind bpe trains none", "add --kind sentencepiece")),
    Bad("tokenizer: vocab below 256 + specials",
        ("tokenizer", "train", "--input", "{ws}/corpus.txt", "--vocab-size", "100", "--out", "{ws}/tok.json"),
        TokenizerError, ("vocab_size=100 is too small", "256 base pieces", ">= 262",
                         "--vocab-size 262 with `minillm tokenizer train`")),
    Bad("tokenizer: vocab below 256 via --set", (*NEW_RUN, "--set", "tokenizer.vocab_size=200"),
        TokenizerError, ("vocab_size=200 is too small", ">= 262", "--set tokenizer.vocab_size=262")),
    Bad("tokenizer: training input missing",
        ("tokenizer", "train", "--input", "{ws}/nope.txt", "--out", "{ws}/tok.json"), DataError,
        ("nope.txt does not exist",)),
    Bad("tokenizer: output under a file",
        ("tokenizer", "train", "--input", "{ws}/corpus.txt", "--vocab-size", "280", "--out",
         "{ws}/corpus.txt/tok.json"), OSError, ("corpus.txt", "is a file, not a folder")),
    Bad("tokenizer file given to pretrain is corrupt", (*NEW_RUN_OWN_TOKENIZER, "--tokenizer-file", "{ws}/bad.json"),
        TokenizerError, ("bad.json is not valid JSON",), write("bad.json", "{")),
    # --- checkpoint files ------------------------------------------------------------------------
    Bad("checkpoint: folder without one", ("generate", "--ckpt", "{ws}/empty_run", "hi"), CheckpointError,
        ("no checkpoint at", "empty_run", "train a model there first"),
        lambda ws: (ws / "empty_run").mkdir()),
    Bad("checkpoint: path missing", ("chat", "--ckpt", "{ws}/nope"), CheckpointError, ("no checkpoint at",)),
    Bad("checkpoint: a folder of runs, such as a pipeline's", ("chat", "--ckpt", "{ws}"), CheckpointError,
        ("no checkpoint at", "holds runs in its folders", "gpt", "name one of them")),
    Bad("checkpoint: truncated", ("generate", "--ckpt", "{ws}/cut", "hi"), CheckpointError,
        ("corrupt or truncated", "intact copy"),
        truncated("gpt/ckpt.pt", "cut/ckpt.pt")),
    Bad("checkpoint: random bytes", ("generate", "--ckpt", "{ws}/noise", "hi"), CheckpointError,
        ("corrupt or truncated",), run_folder("noise", raw=random.Random(0).randbytes(4000))),
    Bad("checkpoint: a text file", ("generate", "--ckpt", "{ws}/text", "hi"), CheckpointError,
        ("text/ckpt.pt is corrupt or truncated",), run_folder("text", raw=b"hello world\n")),
    Bad("checkpoint: another file of the run folder", ("generate", "--ckpt", "{ws}/gpt/tokenizer.json", "hi"),
        CheckpointError, ("gpt/tokenizer.json is a JSON file, not a checkpoint", "pass the run folder")),
    Bad("checkpoint: the run folder's loss curve", ("generate", "--ckpt", "{ws}/gpt/loss.png", "hi"),
        CheckpointError, ("gpt/loss.png is a PNG image file, not a checkpoint",)),
    Bad("checkpoint: an empty file", ("generate", "--ckpt", "{ws}/zero", "hi"), CheckpointError,
        ("zero/ckpt.pt is corrupt or truncated", "intact copy"), run_folder("zero", raw=b"")),
    Bad("checkpoint: pickled code (must not run)", ("generate", "--ckpt", "{ws}/evil", "hi"), CheckpointError,
        ("refused", "pickled python object", "could run code", "written by minillm"), malicious_checkpoint),
    Bad("checkpoint: other format version", ("generate", "--ckpt", "{ws}/future", "hi"), CheckpointError,
        ("format version 99", "reads version 1"),
        run_folder("future", raw=torch_bytes({"format_version": 99}))),
    Bad("checkpoint: invalid model config", ("generate", "--ckpt", "{ws}/badcfg", "hi"), CheckpointError,
        ("invalid model config", "n_head=5", "divisible"),
        run_folder("badcfg", lambda ws: gpt_payload(ws, n_head=5))),
    Bad("checkpoint: no tokenizer beside it", ("generate", "--ckpt", "{ws}/notok", "hi"), CheckpointError,
        ("no tokenizer.json", "folder of a training run"), run_folder("notok", gpt_payload, tokenizer=False)),
    # TRACEBACK before the check: AttributeError ('NoneType' object has no attribute 'encode' / 'to_dict' / 'save')
    *[Bad(f"{argv[0]}: the --sft/--init run has no tokenizer.json", argv, CheckpointError,
          ("notok has no tokenizer.json", "put the run's own tokenizer.json back"),
          lambda ws: (write("i.jsonl", BOTH_SPLITS)(ws), write("p.jsonl", good_prefs())(ws),
                      run_folder("notok", gpt_payload, tokenizer=False)(ws)))
      for argv in [(*PPO[:2], "{ws}/notok", *PPO[3:]), (*GRPO[:2], "{ws}/notok", *GRPO[3:]),
                   ("dpo", "--sft", "{ws}/notok", "--prefs", "{ws}/p.jsonl", "--out", "{ws}/dpo", "--preset", "micro"),
                   ("reward", "--sft", "{ws}/notok", "--out", "{ws}/rm", "--preset", "micro", "--data", "{ws}/i.jsonl"),
                   ("sft", "--init", "{ws}/notok", "--out", "{ws}/sft", "--preset", "micro", "--no-baselines")]],
    Bad("checkpoint: corrupt tokenizer beside it", ("generate", "--ckpt", "{ws}/gpt_badtok", "hi"),
        TokenizerError, ("tokenizer.json is not valid JSON", "retrain"),
        lambda ws: (run_folder("gpt_badtok", gpt_payload, tokenizer=False)(ws),
                    write("gpt_badtok/tokenizer.json", '{"kind": ')(ws))),
    Bad("checkpoint: a BERT given to generate", ("generate", "--ckpt", "{ws}/bert", "hi"), CheckpointError,
        ("'bert'", "gpt")),
    Bad("checkpoint: a GPT given to fill-mask", ("fill-mask", "--ckpt", "{ws}/gpt", "a [MASK]"), CheckpointError,
        ("'gpt'", "bert")),
    Bad("checkpoint: a GPT given as the reward model",
        ("ppo", "--sft", "{ws}/gpt", "--reward", "{ws}/gpt", "--out", "{ws}/ppo", "--preset", "micro",
         "--data", "{ws}/i.jsonl"), CheckpointError, ("'gpt'", "reward"), write("i.jsonl", BOTH_SPLITS)),
    Bad("--out is an existing file", (*PRETRAIN, "--out", "{ws}/corpus.txt"), DataError,
        ("corpus.txt is a file, not a folder",)),
    Bad("--out is a folder another run is writing", (*PRETRAIN, "--out", "{ws}/gpt", "--resume"), RunLockedError,
        ("gpt is in use by another minillm process", f"PID {os.getppid()}", "another --out"),
        write("gpt/.minillm.lock", f"{os.getppid()}\n")),
    Bad("fresh run into a folder holding one", (*PRETRAIN, "--out", "{ws}/gpt"), CheckpointError,
        ("gpt already holds a training run", "--resume", "another output folder")),
    # MISLEADING before the check: "cannot resume .../sft: it was trained with another tokenizer than the one given now"
    Bad("resume into another stage's run", (*PRETRAIN, "--out", "{ws}/sft", "--resume"), CheckpointError,
        ("sft/ckpt.pt is a 'sft' run's checkpoint, not a 'clm' run's", "train into another folder"),
        gpt_run_of_stage("sft", "sft", vocab_size=280)),
    Bad("resume with another model config", (*PRETRAIN, "--out", "{ws}/gpt", "--resume",
                                             "--set", "clm.model.n_layer=2"), ConfigError,
        ("cannot resume", "model.n_layer: 1 -> 2", "saved settings")),
    Bad("resume with another tokenizer", (*PRETRAIN, "--out", "{ws}/gpt", "--resume",
                                          "--set", "tokenizer.vocab_size=290"), ConfigError,
        ("cannot resume", "another tokenizer", "tokenizer.json")),
    # SILENT before the check: with the run's own tokenizer, the run went on into the same weights on other text
    Bad("resume on another corpus", ("pretrain", "clm", "--corpus", "{ws}/other.txt", *CLM_MICRO, "--out", "{ws}/gpt",
                                     "--resume", "--tokenizer-file", "{ws}/gpt/tokenizer.json"), ConfigError,
        ("cannot resume", "it read the corpus in", "corpus.txt", "this run reads the corpus in", "other.txt",
         "pass --corpus", "corpus.txt to resume it"), write("other.txt", "Other text.\n\nMore of it.\n")),
    Bad("resume on another split of its corpus", ("pretrain", "clm", "--corpus", "{ws}/corpus.txt", *CLM_MICRO,
                                                  "--set", "data_seed=1", "--out", "{ws}/gpt", "--resume",
                                                  "--tokenizer-file", "{ws}/gpt/tokenizer.json"), ConfigError,
        ("cannot resume", "(data_seed 0, val_fraction 0.05), and this run reads", "(data_seed 1, val_fraction 0.05)",
         "pass --set data_seed=0 to resume it")),
    Bad("resume with another optimizer", (*PRETRAIN, "--out", "{ws}/gpt", "--resume",
                                          "--set", "clm.train.optimizer=muon"), CheckpointError,
        ("trained with optimizer=adamw", "resume it with optimizer=adamw", "new folder")),
    Bad("resume with a corrupt config.json", (*PRETRAIN, "--out", "{ws}/gpt", "--resume"), ConfigError,
        ("config.json", "corrupt"), write("gpt/config.json", "{oops")),
    # TRACEBACK before the check: RecursionError from json (check_resume caught only ValueError and the like)
    Bad("resume with a config.json nested too deeply", (*PRETRAIN, "--out", "{ws}/gpt", "--resume"), ConfigError,
        ("config.json", "corrupt"), write("gpt/config.json", "[" * 100_000)),
    Bad("SFT from a folder without a checkpoint",
        ("sft", "--init", "{ws}/nope", "--out", "{ws}/sft", "--preset", "micro", "--data", "{ws}/i.jsonl"),
        CheckpointError, ("no checkpoint at", "nope"), write("i.jsonl", GOOD_RECORD)),
    # --- what is given to a model ----------------------------------------------------------------
    Bad("fill-mask text without [MASK]", ("fill-mask", "--ckpt", "{ws}/bert", "no blank here"), ModelInputError,
        ("exactly one [MASK]", "found 0", "write e.g.")),
    Bad("fill-mask text with two [MASK]", ("fill-mask", "--ckpt", "{ws}/bert", "[MASK] and [MASK]"),
        ModelInputError, ("exactly one [MASK]", "found 2")),
    Bad("prompt longer than the context", ("generate", "--ckpt", "{ws}/gpt", "word " * 40), ModelInputError,
        ("the prompt is", "tokens with <bos>", "context holds 16", "shorten the prompt to at most 14 tokens")),
    Bad("negative temperature", ("generate", "--ckpt", "{ws}/gpt", "hi", "--temperature", "-1"),
        SystemExit, ("--temperature", "'-1' is not a temperature", ">= 0")),
    Bad("--device cuda without CUDA", (*NEW_RUN, "--device", "cuda"), ConfigError,
        ("'cuda'", "CUDA is not available", "--device cpu")),
    # --- overwriting, mixing up and misreading files ---------------------------------------------
    # DATA LOSS before the check: the corpus is replaced by the tokenizer's JSON, without a word
    Bad("tokenizer train: --out is its own --input",
        ("tokenizer", "train", "--input", "{ws}/corpus.txt", "--vocab-size", "280", "--out", "{ws}/corpus.txt"),
        MinillmError, ("corpus.txt", "--input", "overwrite")),
    # DATA LOSS before the check: a run's checkpoint is replaced by the tokenizer's JSON
    Bad("tokenizer train: --out is a checkpoint",
        ("tokenizer", "train", "--input", "{ws}/corpus.txt", "--vocab-size", "280", "--out", "{ws}/gpt/ckpt.pt"),
        MinillmError, ("ckpt.pt", "not a tokenizer")),
    # DATA LOSS before the check: the pipeline wrote its config.json over the run's (--resume then refused it)
    Bad("pipeline: --out is a single-stage training run",
        ("pipeline", "--preset", "micro", "--out", "{ws}/gpt", "--corpus", "{ws}/nope.txt"),
        MinillmError, ("gpt", "training run", "pipeline")),
    # SILENT before the check: the run resumes with a tokenizer retrained on other text, and writes it into the folder
    Bad("resume a run whose tokenizer.json is missing",
        ("pretrain", "clm", "--corpus", "{ws}/other.txt", *MICRO, "--out", "{ws}/gpt", "--resume"),
        ConfigError, ("cannot resume", "tokenizer.json"), other_corpus_and_no_tokenizer),
    # SILENT before the check: the model's vocab_size is taken from the tokenizer and the setting is dropped
    Bad("--set the model's vocab_size", (*NEW_RUN, "--set", "clm.model.vocab_size=5"), ConfigError,
        ("clm.model.vocab_size", "tokenizer.vocab_size")),
    # SILENT before the check: generate prints text decoded with the wrong tokenizer
    Bad("checkpoint: a tokenizer of another vocabulary beside it", ("generate", "--ckpt", "{ws}/smalltok", "hi"),
        MinillmError, ("tokenizer.json", "280", "300"), smaller_tokenizer_beside("smalltok")),
    # SILENT before the check: a tar archive (valid UTF-8, NUL padded) is trained on as text
    Bad("corpus that is a tar archive",
        (*NEW_RUN_OWN_TOKENIZER, "--corpus", "{ws}/corpus.tar", "--tokenizer-file", "{ws}/tok.json"),
        DataError, ("corpus.tar", "NUL", "text file"), tar_of_corpus),
    # TRACEBACK before the check: AttributeError: 'list' object has no attribute 'items' (check_resume)
    Bad("resume with a config.json whose run is not an object", (*PRETRAIN, "--out", "{ws}/gpt", "--resume"),
        ConfigError, ("config.json", "corrupt"),
        edit_json("gpt/config.json", "gpt/config.json", lambda d: d.update(run=[1]))),
    # UNCLEAR before the check: "ckpt.pt is not valid JSON ('utf-8' codec can't decode ...); retrain it"
    Bad("tokenizer: a checkpoint given as the tokenizer",
        ("tokenizer", "encode", "--tokenizer", "{ws}/gpt/ckpt.pt", "hi"), TokenizerError,
        ("ckpt.pt", "checkpoint", "tokenizer.json")),
    # UNCLEAR before the check: "i.jsonl holds no valid record (... missing field(s) ['answers', 'ranking'])"
    Bad("annotate: --out is the --prompts file",
        ("annotate", "--policy", "{ws}/gpt", "--prompts", "{ws}/i.jsonl", "--out", "{ws}/i.jsonl", "--k", "2"),
        MinillmError, ("--out", "--prompts"), write("i.jsonl", BOTH_SPLITS)),
    # UNCLEAR before the hint: "line 1: invalid JSON (Expecting property name ...); fix the line"
    Bad("instruction JSONL: one pretty-printed JSON document",
        ("sft", "--init", "{ws}/gpt", "--out", "{ws}/sft", "--preset", "micro", "--data", "{ws}/i.jsonl"),
        DataError, ("i.jsonl", "line 1", "one whole object per line"),
        write("i.jsonl", json.dumps({"prompt": "Say hi", "response": "hi"}, indent=2))),
    # TRACEBACK before the check: AttributeError: 'list' object has no attribute 'items' (the PNG already written)
    Bad("compare: a run's config.json that is not an object",
        ("compare", "{ws}/gpt", "{ws}/gpt2", "--out", "{ws}/c.png"), DataError,
        ("gpt2/config.json", "JSON list", "restore it"), copy_of_gpt_run("gpt2", "config.json", "[1]")),
    # TRACEBACK before the check: AttributeError: 'list' object has no attribute 'get' (read_metrics)
    Bad("compare: a metrics.jsonl line that is not a row", ("compare", "{ws}/gpt", "{ws}/gpt2", "--out", "{ws}/c.png"),
        DataError, ("gpt2/metrics.jsonl, line 2", "not a row of metrics", "delete or fix that line"),
        copy_of_gpt_run("gpt2", "metrics.jsonl", '{"step": 1, "loss": 5.0}\n[1]\n')),
    # TRACEBACK before the check: the same AttributeError, when --resume reads the run's metrics
    Bad("resume a run whose metrics.jsonl has a line that is not a row",
        (*PRETRAIN, "--out", "{ws}/gpt", "--resume", "--set", "clm.train.max_steps=2"), DataError,
        ("metrics.jsonl, line 1", "\"step\"", "delete or fix that line"),
        write("gpt/metrics.jsonl", '{"step": "1"}\n')),
    # TRACEBACK before the check: AttributeError: 'list' object has no attribute 'get' (report_figures)
    Bad("compare: a pipeline run's report.json that is not an object", ("compare", "{ws}/j1", "{ws}/j2"), DataError,
        ("j2/report.json", "JSON list", "restore it"),
        lambda ws: (write("j1/report.json", '{"stages": {}}')(ws), write("j2/report.json", "[1]")(ws))),
    Bad("compare: a pipeline run's report.json whose stages are not an object", ("compare", "{ws}/j1", "{ws}/j2"),
        DataError, ("j2/report.json", "stages", "JSON list", "restore it"),
        lambda ws: (write("j1/report.json", '{"stages": {}}')(ws), write("j2/report.json", '{"stages": [1]}')(ws))),
    # TRACEBACK before the check: RuntimeError "index 300 is out of bounds" (logits / 1e-300 = inf, softmax NaN)
    Bad("generate: a temperature so small that logits / temperature overflow",
        ("generate", "--ckpt", "{ws}/gpt", "hi", "--temperature", "1e-300"), ModelInputError,
        ("temperature=1e-300", "below 1e-30", "use 0 for greedy")),
    # SILENT before the check: the sentencepiece kind is dropped and the given BPE tokenizer is used
    Bad("pretrain: --tokenizer KIND with --tokenizer-file",
        (*NEW_RUN_OWN_TOKENIZER, "--tokenizer-file", "{ws}/tok.json", "--tokenizer", "sentencepiece"), ConfigError,
        ("--tokenizer sentencepiece", "--tokenizer-file", "pass one of them")),
    # SILENT before the check: the micro preset's pretrain_mix is 0, so the file was never read (nor checked)
    Bad("sft: --corpus with nothing to replay it",
        ("sft", "--init", "{ws}/gpt", "--out", "{ws}/sft", "--preset", "micro", "--data", "{ws}/i.jsonl",
         "--corpus", "{ws}/corpus.txt"), ConfigError, ("--corpus", "pretrain_mix is 0", "--set sft.pretrain_mix=")),
    # UNCLEAR and a LEFTOVER before the check: "No such file or directory: ...nope.txt; check the path", after
    # journey/config.json was written
    Bad("pipeline: missing corpus, found before anything is written",
        ("pipeline", "--preset", "micro", "--out", "{ws}/journey", "--corpus", "{ws}/nope.txt"), DataError,
        ("nope.txt does not exist", "UTF-8 text file")),
    # LATE before the check: the tokenizer, MLM and CLM trained (minutes in the tiny preset) before SFT refused it
    Bad("pipeline: a context too short for SFT's answers, found before any step",
        ("pipeline", "--preset", "micro", "--out", "{ws}/journey", "--set", "clm.model.block_size=8"), ConfigError,
        ("max_new_tokens=8 leaves no room for a prompt", "(8 tokens)", "lower it, or raise clm.model.block_size")),
    # LATE before the check: every step up to PPO trained before the instruction file was found to lack a test split
    Bad("pipeline: instructions without held-out records, found before any step",
        ("pipeline", "--preset", "micro", "--out", "{ws}/journey", "--data", "{ws}/i.jsonl"), DataError,
        ("no held-out records", "test splits"), write("i.jsonl", GOOD_RECORD)),
    # TRACEBACK before the check: ValueError "max() arg is an empty sequence" naming the single-family baseline
    Bad("sft: no training records, with the single-family baseline",
        ("sft", "--init", "{ws}/gpt", "--out", "{ws}/sft", "--preset", "micro", "--data", "{ws}/i.jsonl"), DataError,
        ("SFT: no training records", "split"), write("i.jsonl", HELD_OUT_RECORD)),
    # --- found by fuzzing the command line ----------------------------------------------------------
    # TRACEBACK before the check: OverflowError from the progress bar's len(range(merges))
    Bad("tokenizer train: a vocabulary too large to count",
        ("tokenizer", "train", "--input", "{ws}/corpus.txt", "--vocab-size", "99999999999999999999999",
         "--out", "{ws}/t.json"), TokenizerError, ("vocab_size=99999999999999999999999 is too large", "2**31 - 1")),
    # TRACEBACK before the check: sentencepiece's ValueError "cannot parse "2147483648" as int"
    Bad("sentencepiece: a vocabulary above 32 bits",
        (*NEW_RUN, "--set", "tokenizer.kind=sentencepiece", "--set", "tokenizer.vocab_size=2147483648"),
        TokenizerError, ("vocab_size=2147483648 is too large",)),
    # TRACEBACK before the check: TypeError: unhashable type: 'list'
    Bad("tokenizer: a kind that is a list", ("tokenizer", "encode", "--tokenizer", "{ws}/bad.json", "hi"),
        TokenizerError, ("unknown tokenizer kind []",), edit_json("tok.json", "bad.json", lambda d: d.update(kind=[]))),
    # TRACEBACK before the check: RecursionError from json (the JSONL reader already caught it)
    Bad("tokenizer: JSON nested too deeply", ("tokenizer", "encode", "--tokenizer", "{ws}/bad.json", "hi"),
        TokenizerError, ("bad.json is not valid JSON", "nested too deeply"),
        write("bad.json", "[" * 100_000 + "]" * 100_000)),
    Bad("compare: a run's config.json nested too deeply", ("compare", "{ws}/gpt", "{ws}/gpt2", "--out", "{ws}/c.png"),
        DataError, ("gpt2/config.json is not valid JSON", "nested too deeply"),
        copy_of_gpt_run("gpt2", "config.json", "[" * 100_000 + "]" * 100_000)),
    # TRACEBACK before the check: "RuntimeError: index 300 is out of bounds" from sampling NaN probabilities
    Bad("checkpoint: NaN weights", ("generate", "--ckpt", "{ws}/nanw", "hi"), CheckpointError,
        ("nanw/ckpt.pt holds NaN or infinite weights", "train the model again"),
        run_folder("nanw", lambda ws: {**gpt_payload(ws), "model": {name: t.float().fill_(float("nan")) if
                                                                      t.is_floating_point() else t for name, t in
                                                                      gpt_payload(ws)["model"].items()}})),
    # DATA LOSS before the check: the run's own tokenizer.json was replaced, and its model then read
    # every id as another piece (loading it stopped at the vocabulary sizes, or silently garbled text)
    Bad("tokenizer train: --out is a trained run's folder",
        ("tokenizer", "train", "--input", "{ws}/corpus.txt", "--vocab-size", "280", "--out", "{ws}/gpt"),
        DataError, ("gpt/tokenizer.json is the tokenizer of the trained model", "new file name or folder")),
    # UNCLEAR before the check: the tokenizer's advice to Python callers, "clean it first, e.g. text.encode(...)"
    *(Bad(f"{command[0]}: a prompt of bytes that are not UTF-8", (*command, "caf\udce9"), SystemExit,
          (r"'caf\udce9' is not UTF-8 text", "set it to UTF-8"))  # (a Latin-1 é, as Python passes it on)
      for command in (("generate", "--ckpt", "{ws}/gpt"), ("fill-mask", "--ckpt", "{ws}/bert"),
                      ("tokenizer", "encode", "--tokenizer", "{ws}/tok.json"))),
    # DATA LOSS before the check: with --resume, SFT went on from the CLM run's optimizer state and wrote
    # its config.json over the CLM's (without it, the error's hint was to add --resume)
    Bad("sft: --out is the run --init reads, even with --resume",
        ("sft", "--init", "{ws}/gpt", "--out", "{ws}/gpt", "--resume", "--preset", "micro", "--data",
         "{ws}/i.jsonl", "--no-baselines"), DataError, ("--out", "gpt is the run --init reads", "a folder of its own"),
        write("i.jsonl", BOTH_SPLITS)),
    Bad("ppo: --out is a run it reads, spelled another way",
        ("ppo", "--sft", "{ws}/sft", "--reward", "{ws}/gpt", "--out", "{ws}/sft/../gpt", "--preset", "micro",
         "--data", "{ws}/i.jsonl"), DataError, ("is the run --reward reads",),
        lambda ws: (write("i.jsonl", BOTH_SPLITS)(ws), shutil.copytree(ws / "gpt", ws / "sft"))),
]

assert len({bad.name for bad in CLI_TABLE}) == len(CLI_TABLE), "row names must be unique"


# --------------------------------------------------------------------------------------------------
# The workspace: good files made once, copied for each row.


@pytest.fixture(scope="module")
def golden(tmp_path_factory) -> Path:
    """A corpus, a tokenizer, a 1-step CLM run (through the CLI) and a BERT run folder."""
    ws = tmp_path_factory.mktemp("golden")
    write_corpus(ws / "corpus.txt", generate_corpus(seed=0, size_mb=0.01))
    tok = train_tokenizer([ws.joinpath("corpus.txt").read_text(encoding="utf-8")], 300, progress=False)
    tok.save(ws / "tok.json")
    argv = [a.replace("{ws}", str(ws)) for a in (*PRETRAIN, "--out", "{ws}/gpt")]
    assert main(argv) == 0
    bert_config = ModelConfig(vocab_size=tok.vocab_size, n_layer=1, n_head=2, n_embd=16, block_size=16,
                              norm="post", activation="gelu")
    save_checkpoint(ws / "bert" / "ckpt.pt", {"model_kind": "bert", "model_config": to_dict(bert_config),
                                              "model": Bert(bert_config).state_dict()})
    tok.save(ws / "bert" / "tokenizer.json")
    return ws


@pytest.fixture
def ws(golden, tmp_path) -> Path:
    return Path(shutil.copytree(golden, tmp_path / "ws"))


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under `root` (folders too, as b"<dir>"), by relative path."""
    return {str(p.relative_to(root)): b"<dir>" if p.is_dir() else p.read_bytes() for p in sorted(root.rglob("*"))}


def run_cli(argv: list[str]) -> int:
    """main(argv)'s exit code, argparse's SystemExit included."""
    try:
        return main(argv)
    except SystemExit as exit_:
        return exit_.code


def _param(bad: Bad):
    return pytest.param(bad, id=bad.name.replace(" ", "-"))


@pytest.mark.parametrize("bad", [_param(bad) for bad in CLI_TABLE])
def test_a_bad_input_gives_one_clear_line_and_breaks_nothing(bad: Bad, ws: Path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same answer on every machine
    argv = [a.replace("{ws}", str(ws)) for a in bad.argv]
    if bad.setup is not None:
        bad.setup(ws)
    before = snapshot(ws)
    capsys.readouterr()

    assert run_cli(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.strip()]
    errors = [line for line in lines if ": error: " in line]
    assert len(errors) == 1 and errors[0] == lines[-1], err
    assert errors[0].startswith("minillm")
    for word in bad.words:
        assert word.lower() in errors[0].lower(), f"{word!r} not in: {errors[0]}"

    if bad.error is not SystemExit:  # argparse's own errors have no traceback to show
        # --debug leaves warnings (a skipped line) to Python, which would print them again in pytest's summary
        with pytest.raises(bad.error), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            main(["--debug", *argv])
    assert snapshot(ws) == before, "a failed command changed or created files"


# --------------------------------------------------------------------------------------------------
# Mistakes only the Python API can make.


def _tiny_gpt() -> GPT:
    return GPT(ModelConfig(vocab_size=50, n_layer=1, n_head=2, n_embd=16, block_size=8))


@functools.lru_cache(maxsize=1)
def _tiny_tok():
    return train_tokenizer(["the river rises at night, the town sits on the river"] * 3, 270, progress=False)


def _tiny_bert() -> Bert:
    return Bert(ModelConfig(vocab_size=_tiny_tok().vocab_size, n_layer=1, n_head=2, n_embd=16, block_size=16,
                            norm="post", activation="gelu"))


LIBRARY_TABLE = [
    ("ids >= vocab_size", lambda: _tiny_gpt()(torch.tensor([[1, 50]])), ModelInputError,
     ("[0, 50)", "max 50", "different tokenizer")),
    ("negative ids", lambda: _tiny_gpt()(torch.tensor([[-1, 2]])), ModelInputError, ("min -1",)),
    ("sequence longer than block_size", lambda: _tiny_gpt()(torch.zeros(1, 9, dtype=torch.long)),
     ModelInputError, ("9 tokens", "block_size=8", "truncate")),
    ("mask of another shape",
     lambda: _tiny_gpt()(torch.zeros(2, 4, dtype=torch.long), torch.ones(2, 3, dtype=torch.bool)),
     ModelInputError, ("(2, 3)", "(2, 4)", "one True/False per token")),
    ("float ids", lambda: _tiny_gpt()(torch.zeros(1, 4)), ModelInputError, ("torch.float32", "torch.long")),
    # TRACEBACK before the check: "Expected all tensors to be on the same device" from inside nn.Embedding on
    # a GPU (model.to("cuda") and ids left on the CPU); "meta" stands in for the GPU here
    ("ids on another device than the model", lambda: _tiny_gpt()(torch.zeros(1, 4, dtype=torch.long, device="meta")),
     ModelInputError, ("ids are on meta", "weights are on cpu", "ids.to('cpu')")),
    ("mask on another device than the model",
     lambda: _tiny_gpt()(torch.zeros(1, 4, dtype=torch.long), torch.ones(1, 4, dtype=torch.bool, device="meta")),
     ModelInputError, ("attention_mask is on meta", "weights are on cpu", "attention_mask.to('cpu')")),
    ("generate: ids on another device than the model",
     lambda: _tiny_gpt().generate(torch.zeros(1, 4, dtype=torch.long, device="meta"), 3), ModelInputError,
     ("ids are on meta",)),
    ("bert: ids on another device than the model",
     lambda: _tiny_bert()(torch.zeros(1, 4, dtype=torch.long, device="meta")), ModelInputError, ("ids are on meta",)),
    # TRACEBACK before the check: RuntimeError "index 50 is out of bounds" from searchsorted
    ("generate: temperature nan", lambda: _tiny_gpt().generate(torch.tensor([[1, 2]]), 3, temperature=float("nan")),
     ModelInputError, ("temperature=nan",)),
    # TRACEBACK before the check: TypeError from KVCache's new_empty (attention.py)
    ("generate: max_new_tokens a float", lambda: _tiny_gpt().generate(torch.tensor([[1, 2]]), 3.0),
     ModelInputError, ("max_new_tokens=3.0", "integer")),
    # SILENT without the bool check: True is an int to isinstance, so generate(ids, True) made one token
    ("generate: max_new_tokens a bool", lambda: _tiny_gpt().generate(torch.tensor([[1, 2]]), True),
     ModelInputError, ("max_new_tokens=True", "integer")),
    # TRACEBACK before the check: TypeError from torch.topk
    ("generate: top_k a float", lambda: _tiny_gpt().generate(torch.tensor([[1, 2]]), 3, top_k=2.5),
     ModelInputError, ("top_k=2.5", "integer")),
    # TRACEBACK without the check: RuntimeError "stack expects a non-empty TensorList"
    ("generate: max_new_tokens 0", lambda: _tiny_gpt().generate(torch.tensor([[1, 2]]), 0), ModelInputError,
     ("max_new_tokens=0", ">= 1")),
    # TRACEBACK without the check: RuntimeError "The size of tensor a (50) must match the size of tensor b (0)"
    ("generate: top_k 0", lambda: _tiny_gpt().generate(torch.tensor([[1, 2]]), 3, top_k=0), ModelInputError,
     ("top_k=0", ">= 1 or None")),
    # TRACEBACK before the check: AttributeError: 'list' object has no attribute 'dim'
    ("generate: ids a list", lambda: _tiny_gpt().generate([[1, 2]], 3), ModelInputError, ("list", "torch.tensor")),
    # TRACEBACK before the check: ValueError "only one element tensors can be converted to Python scalars"
    ("decode: a (batch, time) tensor", lambda: _tiny_tok().decode(torch.tensor([[40, 41]])), TokenizerError,
     ("decode", "ids[0]")),
    # SILENT before the check: decode([5.7]) was "\x05"
    ("decode: float ids", lambda: _tiny_tok().decode([5.7]), TokenizerError, ("5.7", "integer ids")),
    # SILENT before the check: returns []
    ("fill_mask: top_k 0", lambda: fill_mask(_tiny_bert(), _tiny_tok(), "the [MASK] rises", top_k=0),
     ModelInputError, ("top_k=0", ">= 1")),
    # SILENT before the check: True is an int to isinstance, so it listed one candidate
    ("fill_mask: top_k a bool", lambda: fill_mask(_tiny_bert(), _tiny_tok(), "the [MASK] rises", top_k=True),
     ModelInputError, ("top_k=True", "integer")),
    # SILENT before the check: n_train=True made one record per family
    ("generate_instruction_suite: n_train a bool", lambda: generate_instruction_suite(0, n_train=True),
     ConfigError, ("n_train=True",)),
    # TRACEBACK before the check: RuntimeError "selected index k out of range" from torch.topk
    ("fill_mask: top_k negative", lambda: fill_mask(_tiny_bert(), _tiny_tok(), "the [MASK] rises", top_k=-3),
     ModelInputError, ("top_k=-3", ">= 1")),
    # SILENT before the check: a causal GPT ranks candidates for the blank as if it were a BERT
    ("fill_mask: a GPT", lambda: fill_mask(GPT(ModelConfig(vocab_size=_tiny_tok().vocab_size, n_layer=1, n_head=2,
                                                           n_embd=16, block_size=16)), _tiny_tok(), "the [MASK]"),
     MinillmError, ("bert", "gpt")),
    # UNCLEAR before the check: "vocab_size=300.0 is too small ... use vocab_size >= 262"
    ("train_tokenizer: vocab_size a float", lambda: train_tokenizer(["hello world"] * 3, 300.0, progress=False),
     TokenizerError, ("vocab_size=300.0", "integer")),
    # UNCLEAR before the check: "--set 'c': expected the form path=value" (it iterated over the string's characters)
    ("apply_overrides: one str, not a list", lambda: apply_overrides(preset("micro"), "clm.train.lr=0.1"),
     ConfigError, ("list", "str")),
]


# SILENT before the check: train_clm(cfg.mlm, ...) trained a GPT with the MLM's settings (the two sections have the
# same fields); every other one ended in an AttributeError from inside, e.g. GPT(cfg.clm): "'CLMConfig' object has
# no attribute 'vocab_size'". Each function refuses the wrong section at its entry, before it reads or writes a file.
WRONG_SECTIONS = [
    ("GPT", lambda cfg, tmp: GPT(cfg.clm), "ModelConfig", "CLMConfig"),
    ("Bert", lambda cfg, tmp: Bert(cfg.mlm), "ModelConfig", "MLMConfig"),
    ("RewardModel", lambda cfg, tmp: RewardModel(cfg.reward), "ModelConfig", "RewardConfig"),
    ("train_clm", lambda cfg, tmp: train_clm(cfg.mlm, _tiny_tok(), ["a"], ["b"], tmp / "out"), "CLMConfig",
     "MLMConfig"),
    ("train_mlm", lambda cfg, tmp: train_mlm(cfg.clm, _tiny_tok(), ["a"], ["b"], tmp / "out"), "MLMConfig",
     "CLMConfig"),
    ("train_sft", lambda cfg, tmp: train_sft(cfg, [], tmp / "out"), "SFTConfig", "PipelineConfig"),
    ("evaluate_model", lambda cfg, tmp: evaluate_model(_tiny_gpt(), _tiny_tok(), [], cfg.clm), "SFTConfig",
     "CLMConfig"),
    ("run_sft_with_baselines", lambda cfg, tmp: run_sft_with_baselines(cfg.clm, [], tmp / "out", tmp / "in"),
     "SFTConfig", "CLMConfig"),
    ("collect_rankings", lambda cfg, tmp: collect_rankings(cfg.sft, tmp / "in", [], tmp / "out.jsonl"),
     "RewardConfig", "SFTConfig"),
    ("train_reward_model", lambda cfg, tmp: train_reward_model(cfg.sft, tmp / "in", tmp / "p.jsonl",
                                                          tmp / "out"), "RewardConfig", "SFTConfig"),
    ("train_dpo", lambda cfg, tmp: train_dpo(cfg.ppo, tmp / "in", tmp / "p.jsonl", [], tmp / "out"),
     "DPOConfig", "PPOConfig"),
    ("train_ppo", lambda cfg, tmp: train_ppo(cfg.grpo, tmp / "in", tmp / "rm", [], tmp / "out"),
     "PPOConfig", "GRPOConfig"),
    ("reward_hacking", lambda cfg, tmp: reward_hacking(cfg.dpo, tmp / "in", tmp / "rm", [],
                                                  tmp / "out"), "PPOConfig", "DPOConfig"),
    ("train_grpo", lambda cfg, tmp: train_grpo(cfg.ppo, tmp / "in", [], tmp / "out"), "GRPOConfig",
     "PPOConfig"),
    ("make_optimizer", lambda cfg, tmp: make_optimizer(_tiny_gpt(), cfg.clm), "TrainConfig", "CLMConfig"),
    ("train", lambda cfg, tmp: train(_tiny_gpt(), cfg.clm, tmp / "out", get_batch=None, loss_fn=None),
     "TrainConfig", "CLMConfig"),
    ("corpus_splits", lambda cfg, tmp: corpus_splits(cfg.clm, None), "PipelineConfig", "CLMConfig"),
    ("instruction_records", lambda cfg, tmp: instruction_records(cfg.sft, None), "PipelineConfig", "SFTConfig"),
]


@pytest.mark.parametrize("where, call, expected, got", WRONG_SECTIONS, ids=[row[0] for row in WRONG_SECTIONS])
def test_a_config_section_of_the_wrong_kind_is_refused_at_the_entry(where, call, expected, got, tmp_path):
    # the fix named: the section, or for a function that takes the whole config (corpus_splits) that config,
    # not "the section ... that it names", which sent the reader of corpus_splits(cfg.clm) to another section
    fix = "pass the whole pipeline config, e.g. preset" if expected == "PipelineConfig" else "pass the section"
    with pytest.raises(ConfigError, match=rf"^{where}: expected a {expected}, got {got}; {fix}"):
        call(preset("micro"), tmp_path)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("call, error, words", [pytest.param(*row[1:], id=row[0]) for row in LIBRARY_TABLE])
def test_a_bad_model_input_is_a_clear_error(call, error, words):
    with pytest.raises(error) as info:
        call()
    for word in words:
        assert word.lower() in str(info.value).lower(), f"{word!r} not in: {info.value}"


def test_a_whole_number_from_numpy_is_taken_where_an_int_is():
    """numpy's int64 (an array's element) is refused nowhere an int is taken (utils.is_whole_number)."""
    gpt, ids = _tiny_gpt(), torch.tensor([[1, 2]])
    assert gpt.generate(ids, np.int64(3), top_k=np.int64(2)).new_ids.shape == (1, 3)
    assert len(fill_mask(_tiny_bert(), _tiny_tok(), "the [MASK] rises", top_k=np.int64(2))) == 2
    assert generate_instruction_suite(0, n_train=np.int64(1), n_test=np.int64(1))


# SILENT before the check, each of them: one str iterated a character at a time, a prompt or a document each
ONE_STR = [
    ("generate_answers", lambda tmp: generate_answers(_tiny_gpt(), _tiny_tok(), "the river", 3), "prompts"),
    ("split_documents", lambda tmp: split_documents("the river rises"), "docs"),
    ("write_corpus", lambda tmp: write_corpus(tmp / "corpus.txt", "the river"), "docs"),
    # here not silent but misleading: "the train split has 27 tokens ...; use a bigger corpus"
    ("train_clm", lambda tmp: train_clm(preset("micro").clm, _tiny_tok(), "the river", ["b"], tmp / "out"),
     "train_docs"),
    ("train_mlm", lambda tmp: train_mlm(preset("micro").mlm, _tiny_tok(), ["a"], "the river", tmp / "out"),
     "val_docs"),  # the validation documents are checked as the training ones are
]


@pytest.mark.parametrize("where, call, name", ONE_STR, ids=[row[0] for row in ONE_STR])
def test_one_str_where_a_list_of_them_goes_is_refused(where, call, name, tmp_path):
    with pytest.raises(DataError, match=rf"^{where}: {name} is one str; pass a list of them, e.g. \['the river"):
        call(tmp_path)
    assert not list(tmp_path.iterdir())


def test_write_corpus_of_no_documents_is_refused_as_read_corpus_would_refuse_the_file(tmp_path):
    """(It wrote a file that read_corpus refuses, "holds no text": a refusal at the next read, not at the write.)"""
    with pytest.raises(DataError, match="^write_corpus: no documents"):
        write_corpus(tmp_path / "corpus.txt", [])
    assert not list(tmp_path.iterdir())


# --------------------------------------------------------------------------------------------------
# The real thing: a separate process, exit code 2, one line, and --debug's traceback.


def test_in_a_separate_process_exit_code_2_and_one_line_and_debug_shows_the_traceback(tmp_path):
    command = ["-m", "minillm.cli"]
    args = ["tokenizer", "encode", "--tokenizer", str(tmp_path / "missing.json"), "hi"]
    # the two at once: each spends seconds starting Python and torch, and 2 cores run both in the time of one
    debug_run = start_python([*command, "--debug", *args])
    try:
        plain = run_python([*command, *args])
    finally:  # a failing test leaves no process behind
        debug = finish(debug_run, timeout=120)
    assert plain.returncode == 2
    assert plain.stdout == ""
    assert plain.stderr.splitlines() == [
        f"minillm: error: tokenizer file {tmp_path / 'missing.json'} does not exist; train one first "
        f"(minillm tokenizer train --input FILE --out {tmp_path / 'missing.json'})"]
    assert debug.returncode == 1
    assert "Traceback (most recent call last)" in debug.stderr
    assert debug.stderr.strip().splitlines()[-1].startswith("minillm.errors.TokenizerError: tokenizer file")


def test_a_malformed_cuda_index_is_one_line_where_cuda_exists(ws, capsys, monkeypatch):
    """With CUDA present, torch.device('cuda:-1') would raise its own RuntimeError: the format is checked
    first. (CUDA simulated: is_available and device_count patched.)"""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    for argv in (["generate", "--ckpt", str(ws / "gpt"), "hi", "--device", "cuda:-1"],
                 ["pretrain", "clm", "--out", str(ws / "new"), "--preset", "micro", "--device", "cuda:-1"]):
        assert run_cli(argv) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and "cuda:-1" in err and "cuda:0" in err, err


def test_loading_onto_a_missing_device_does_not_call_the_checkpoint_corrupt(ws, monkeypatch):
    """load_model(..., map_location='cuda') on a machine without CUDA names the device, not a
    "corrupt or truncated" checkpoint (torch's error when it cannot map the tensors there)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(MinillmError) as info:
        load_model(ws / "gpt", GPT, map_location="cuda")
    message = str(info.value)
    assert "corrupt" not in message and "cuda" in message and "cpu" in message, message


def test_duplicate_instruction_ids_are_refused(tmp_path):
    """Ids link answers and rankings to their records (reward_model.annotator_ceiling keys a dict by
    them): two records with id "x" are refused, naming both."""
    path = tmp_path / "i.jsonl"
    path.write_text('{"prompt": "a", "response": "b", "id": "x"}\n{"prompt": "c", "response": "d", "id": "x"}\n',
                    encoding="utf-8")
    with pytest.raises(DataError, match=r"records 1 and 2 have the same id 'x'"):
        read_jsonl(path)


def test_an_instruction_file_with_a_byte_order_mark_is_read(tmp_path):
    """Windows editors start UTF-8 files with a byte order mark; it is not part of line 1's JSON
    (read_corpus accepts one too)."""
    path = tmp_path / "i.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + b'{"prompt": "a", "response": "b"}\r\n')
    assert [(r["prompt"], r["response"]) for r in read_jsonl(path)] == [("a", "b")]


def test_a_ranking_with_a_split_name_of_the_instruction_files_is_named(ws, capsys):
    """Rankings are "train" or "test"; one marked "test_seen" (an instruction file's split) is skipped
    with a warning that names it, above the error that follows (no held-out ranking is left)."""
    write("i.jsonl", BOTH_SPLITS)(ws)
    write("p.jsonl", prefs_with_split("test_seen"))(ws)
    assert run_cli(["dpo", "--sft", str(ws / "gpt"), "--prefs", str(ws / "p.jsonl"), "--out", str(ws / "dpo"),
                    "--preset", "micro", "--data", str(ws / "i.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "'split' 'test_seen': a ranking is \"train\" or \"test\"" in err and "Traceback" not in err, err


def test_sampling_survives_a_top_p_and_a_temperature_at_the_edge_of_float32():
    """A top_p below float32's range compares as 0 with every probability (every token was dropped, and
    sampling drew an index past the vocabulary: RuntimeError); the smallest temperature `generate`
    takes keeps logits / temperature finite. The likeliest token must be drawn."""
    logits = torch.tensor([[1.0, 30.0, 2.0], [-5.0, -1.0, -3.0]])
    assert filter_logits(logits, None, 1e-300).argmax(dim=-1).tolist() == [1, 1]
    for temperature, top_p in ((MIN_TEMPERATURE, None), (0.8, 1e-300)):
        token, logprob = sample_next(logits, temperature, None, top_p, torch.Generator().manual_seed(0))
        assert token.tolist() == [1, 1] and torch.isfinite(logprob).all(), (temperature, top_p, logprob)


def test_dpo_into_a_run_it_refuses_stops_before_the_reference_log_probs(ws, capsys, monkeypatch):
    """`minillm dpo` again into its finished run, without --resume, was refused only once the reference
    model had scored every pair of the rankings: minutes at tiny."""
    gpt_run_of_stage("dpo", "dpo")(ws)
    write("i.jsonl", BOTH_SPLITS)(ws)
    write("p.jsonl", good_prefs())(ws)
    monkeypatch.setattr(dpo, "with_reference", lambda *args, **kwargs: pytest.fail("the log-probs came first"))
    assert run_cli(["dpo", "--sft", str(ws / "gpt"), "--prefs", str(ws / "p.jsonl"), "--out", str(ws / "dpo"),
                    "--preset", "micro", "--data", str(ws / "i.jsonl")]) == 2
    assert "dpo already holds a training run" in capsys.readouterr().err


def test_pretraining_into_a_finished_run_is_refused_before_the_corpus_is_packed(ws, capsys, monkeypatch):
    """`minillm pretrain` again into its finished run, without --resume, was refused only once the corpus was
    packed into tokens, as the training loop began (train_clm and train_mlm now call check_run_folder first).
    Into another stage's run the refusal names that stage: "pass --resume" would be bad advice there."""
    gpt_run_of_stage("mlm", "mlm")(ws)
    monkeypatch.setattr("minillm.stage1_pretrain.data.pack_documents",  # (open_pretraining_run's, both stages')
                        lambda *args: pytest.fail("the corpus was packed first"))
    for objective, says in (("mlm", "mlm already holds a training run"),
                            ("clm", "mlm/ckpt.pt is a 'mlm' run's checkpoint, not a 'clm' run's")):
        assert run_cli(["pretrain", objective, "--corpus", str(ws / "corpus.txt"), "--tokenizer-file",
                        str(ws / "tok.json"), "--preset", "micro", "--out", str(ws / "mlm")]) == 2
        assert says in capsys.readouterr().err


def test_an_unwritable_out_names_that_path_not_a_temporary_file(ws, capsys):
    """Files are written through a temporary file beside them (atomic_write_bytes); when that cannot be
    created, the error names the file the user gave."""
    if not Path("/proc/self").is_dir():
        pytest.skip("needs Linux's /proc (a folder where no file can be created, even by root)")
    assert run_cli(["tokenizer", "train", "--input", str(ws / "corpus.txt"), "--vocab-size", "280",
                    "--out", "/proc/t.json"]) == 2
    err = capsys.readouterr().err
    assert "/proc/t.json" in err and ".tmp" not in err, err


def test_compare_reads_a_metrics_line_that_is_not_json_as_no_row(ws, capsys):
    """minillm writes metrics.jsonl in ASCII: a byte that is not UTF-8 was edited in, and its line reads as
    no row (as a line a crash cut short does), not as a UnicodeDecodeError traceback; nor is a line of
    brackets nested too deeply for json a RecursionError traceback. (Both lines in one file: either
    traceback fails the test, and compare, which draws every curve, runs once.)"""
    shutil.copytree(ws / "gpt", ws / "gpt2")
    rows = (ws / "gpt" / "metrics.jsonl").read_bytes()
    (ws / "gpt2" / "metrics.jsonl").write_bytes(b"\xff\xfe garbage\n" + b"[" * 100_000 + b"\n" + rows)
    assert run_cli(["compare", str(ws / "gpt"), str(ws / "gpt2"), "--out", str(ws / "c.png")]) == 0
    assert "Traceback" not in capsys.readouterr().err
    assert (ws / "c.png").is_file()


@pytest.mark.skipif(not getattr(sys, "get_int_max_str_digits", lambda: 0)(), reason="reads integers of any length")
def test_a_number_longer_than_python_reads_is_damaged_json_not_a_traceback(tmp_path):
    """Python reads an integer of at most 4300 digits (sys.set_int_max_str_digits), and json lets its refusal
    through as a plain ValueError, which the readers' `except json.JSONDecodeError` missed: a config.json, a
    metrics.jsonl line or a tokenizer.json edited into one ended in that traceback (utils.parse_json)."""
    number = "1" * (sys.get_int_max_str_digits() + 1)
    (tmp_path / "config.json").write_text(f'{{"lr": {number}}}', encoding="utf-8")
    with pytest.raises(DataError, match=r"config.json is not valid JSON \(a number too long to read"):
        read_json(tmp_path / "config.json")
    (tmp_path / "cut.json").write_text('{"lr": 3', encoding="utf-8")  # json's own refusal: its reason, its place
    with pytest.raises(DataError, match=r"cut.json is not valid JSON \(Expecting ',' delimiter: line 1 column 9"):
        read_json(tmp_path / "cut.json")
    (tmp_path / "metrics.jsonl").write_text(f'{{"step": {number}}}\n{{"step": 1, "loss": 2.0}}\n', encoding="utf-8")
    assert read_metrics(tmp_path / "metrics.jsonl") == [{"step": 1, "loss": 2.0}]  # a line that is no row
    (tmp_path / "tokenizer.json").write_text(f'{{"kind": {number}}}', encoding="utf-8")
    with pytest.raises(TokenizerError, match=r"tokenizer.json is not valid JSON \(a number too long to read"):
        load_tokenizer(tmp_path / "tokenizer.json")
