"""`minillm <command>`: the command line, a thin layer over the library.

Each command parses its arguments, builds the configs (a preset, then `--set path=value`
overrides, then the runtime flags `--device/--dtype/--compile/--detect-anomaly`), and calls one
library function. Mistakes in the input (a `MinillmError`, or a path that cannot be read or
written) are printed as one line with exit code 2, as are argparse's own complaints; `--debug`
(before the command) shows the traceback instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import io
import os
import re
import shlex
import sys
import unicodedata
import warnings
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from minillm.config import (
    DTYPES,
    MAX_SEED,
    PRESETS,
    SPM_MODEL_TYPES,
    TOKENIZER_KINDS,
    PipelineConfig,
    TokenizerConfig,
    apply_overrides,
    device_names,
    preset,
    replace_train_configs,
    train_configs,
)
from minillm.console import (
    OneLineParser,
    Terminated,
    checked_arg,
    ctrl_c_held,
    description,
    discard_stdout,
    disk_refused,
    one_line,
    path_arg,
    positive_int,
    show_warning,
    sigterm_as_ctrl_c,
    stand_in_for_closed_output,
)
from minillm.errors import ConfigError, DataError, MinillmError

if TYPE_CHECKING:  # (the commands import these when they run: importing this module loads no torch)
    from minillm.tokenizer import Tokenizer
    from minillm.train.checkpoint import ModelT

DEFAULT_JOBS = 1  # one step at a time, with torch's threads: faster on a quiet 2-core CPU (docs/findings.md)

# --------------------------------------------------------------------------------------------------
# Building the config every command starts from.


def with_runtime(cfg: PipelineConfig, device: str | None, dtype: str | None, compile: bool,
                 detect_anomaly: bool) -> PipelineConfig:
    """Apply the runtime flags to the pipeline and to every stage's TrainConfig."""
    changes: dict = {}
    if device is not None:
        changes["device"] = device
        cfg = dataclasses.replace(cfg, device=device)  # the top-level setting too, as `--set device=X` gives it
    if dtype is not None:
        changes["dtype"] = dtype
    if compile:
        changes["compile"] = True
    if detect_anomaly:
        changes["detect_anomaly"] = True
    return replace_train_configs(cfg, **changes)


# the config's sections (tokenizer, mlm, ..., grpo_verifiable), each read by one stage
SECTIONS = tuple(name for name, value in vars(PipelineConfig()).items() if dataclasses.is_dataclass(value))


def build_config(args: argparse.Namespace) -> PipelineConfig:
    """The preset, then the --set overrides and the settings the command's own flags stand for
    (`flag_settings`), then the runtime flags; a missing device (--device, or a stage's own
    `--set clm.train.device=cuda`) fails now, not after minutes of tokenizer training."""
    from minillm.utils import resolve_device

    overrides = [*(args.set or []), *flag_settings(args)]
    refuse_unread_sections(overrides, sections_read(args), args.command)
    chosen = preset(args.preset)
    cfg = apply_overrides(chosen, overrides)
    if cfg.preset != chosen.preset:
        raise ConfigError(f"--set preset={cfg.preset}: a preset is a whole set of values; choose it with "
                          f"--preset {cfg.preset}")
    device = args.device
    if device is None and cfg.device != chosen.device:  # `--set device=X` is --device X, said the long way
        device = cfg.device
    cfg = with_runtime(cfg, device, args.dtype, args.compile, args.detect_anomaly)
    for name in sorted({train.device for train in train_configs(cfg)}):
        resolve_device(name)
    note_gpu_preset_on_cpu(cfg)
    return cfg


def flag_settings(args: argparse.Namespace) -> list[str]:
    """The settings a command's own flag stands for, as --set items: pretrain's `--tokenizer KIND` is
    tokenizer.kind=KIND, applied after the --set items and checked with them (a --set of
    tokenizer.spm_model_type, which only a sentencepiece tokenizer reads, then counts the flag's kind)."""
    kind = getattr(args, "tokenizer_kind", None)
    if kind and args.tokenizer_file:  # the kind would be left out without a word
        raise ConfigError(f"--tokenizer {kind} trains a new tokenizer, but --tokenizer-file {args.tokenizer_file} "
                          "gives a trained one; pass one of them")
    return [f"tokenizer.kind={kind}"] if kind else []


def note_gpu_preset_on_cpu(cfg: PipelineConfig) -> None:
    """Say so when the small preset, sized for one GPU, finds none: device=auto then trains it on the
    CPU, a training step of tens of seconds where a GPU takes a fraction of one, and nothing else tells."""
    from minillm.utils import resolve_device

    if cfg.preset == "small" and cfg.device == "auto" and resolve_device("auto").type == "cpu":
        print("minillm: note: the small preset is sized for one GPU and device=auto finds none, so it trains on "
              "the CPU, for many hours; --preset tiny takes minutes on a CPU (--device cpu runs small here "
              "without this note)", file=sys.stderr)


def sections_read(args: argparse.Namespace) -> tuple[str, ...]:
    """The config sections a command trains from: each stage command its own (`minillm ppo` reads
    `ppo`), pretraining its objective and the tokenizer it may train, the pipeline all of them."""
    if args.command == "pretrain":
        return (args.objective,) if args.tokenizer_file else ("tokenizer", args.objective)
    return (args.command,) if args.command in SECTIONS else SECTIONS


def refuse_unread_sections(overrides: Sequence[str], reads: Sequence[str], command: str) -> None:
    """`minillm grpo --set grpo_verifiable.group_size=2` would set a section that `minillm grpo` never
    reads (it trains `grpo`): refuse it, rather than train with the setting silently left out."""
    for item in overrides:
        section = item.split("=", 1)[0].split(".", 1)[0].strip()
        if section in SECTIONS and section not in reads:
            raise ConfigError(f"--set {item}: `minillm {command}` does not read the {section} section; "
                              f"it reads {', '.join(reads)} (and the top-level settings such as device "
                              f"and data_seed)")


# --------------------------------------------------------------------------------------------------
# The commands. Each imports what it needs, so `minillm --help` stays fast.


def cmd_tokenizer_train(args: argparse.Namespace) -> None:
    from minillm.datasets import read_corpus
    from minillm.tokenizer import TOKENIZER_NAME, train_tokenizer

    if args.spm_model_type is not None and args.kind != "sentencepiece":  # it would be left out without a word
        raise ConfigError(f"--spm-model-type {args.spm_model_type} chooses a SentencePiece model, but --kind "
                          f"{args.kind} trains none; add --kind sentencepiece, or drop --spm-model-type")
    out = Path(args.out)
    # a folder, as every other command's --out (one that exists, or a new one written with a trailing
    # slash): the file goes inside it
    if out.is_dir() or args.out.endswith(("/", os.sep)):
        out = out / TOKENIZER_NAME
    _refuse_to_overwrite_with_a_tokenizer(out, args.input)
    docs = [doc for path in args.input for doc in read_corpus(path)]
    tok = train_tokenizer(docs, args.vocab_size, kind=args.kind,
                          spm_model_type=args.spm_model_type or TokenizerConfig().spm_model_type)
    tok.save(out)
    # document by document: the corpus as one string would be split into chunks all at once, a Python
    # string for each (over a gigabyte for 50 MB of text)
    n_bytes = sum(len(doc.encode("utf-8")) for doc in docs)
    n_tokens = sum(len(tok.encode(doc)) for doc in docs)
    print(f"trained a {args.kind} tokenizer with {tok.vocab_size} ids -> {out}")
    print(f"tokens per byte on the training text: {n_tokens / n_bytes:.3f}")
    special = set(tok.special_tokens.values())
    longest = sorted((i for i in range(tok.vocab_size) if i not in special),
                     key=lambda i: -len(tok.id_to_bytes(i)))  # bytes, not how the piece is shown ('\\x80')
    print("some of the longest pieces it learned:", ", ".join(repr(tok.id_to_piece(i)) for i in longest[:12]))


def _refuse_to_overwrite_with_a_tokenizer(out: Path, inputs: Sequence[str]) -> None:
    """`tokenizer train --out` may replace an older tokenizer, but not the text it trains on, nor any
    other file that happens to have the name (a run's ckpt.pt, say): those would be lost; nor a run's
    own tokenizer.json, which the model beside it needs."""
    from minillm.tokenizer import TOKENIZER_NAME, load_tokenizer
    from minillm.train.checkpoint import CKPT_NAME

    if any(Path(path).resolve() == out.resolve() for path in inputs):
        raise DataError(f"--out {out} is one of the --input files: the tokenizer would overwrite it; give "
                        "another path, e.g. tokenizer.json")
    if out.name == TOKENIZER_NAME and out.is_file() and (out.parent / CKPT_NAME).is_file():
        # a run's own tokenizer: the model beside it reads its ids by it
        raise DataError(f"--out {out} is the tokenizer of the trained model beside it ({out.parent / CKPT_NAME}), "
                        "which would then read every id as another piece; give a new file name or folder")
    if out.is_file():
        try:
            load_tokenizer(out)
        except MinillmError:
            raise DataError(f"--out {out} already holds a file that is not a tokenizer, which writing there "
                            "would replace; give a new file name or a folder") from None


def cmd_tokenizer_encode(args: argparse.Namespace) -> None:
    from minillm.tokenizer import load_tokenizer

    tok = load_tokenizer(args.tokenizer)
    ids = tok.encode(args.text)
    print("ids:   ", ids)
    print("pieces:", [tok.id_to_piece(i) for i in ids])


def _tokenizer_for(cfg: PipelineConfig, path: str | None, train_docs: list[str]) -> Tokenizer:
    """The tokenizer in the file `path`, or, with none given, a new one trained on `train_docs` by the config."""
    from minillm.tokenizer import load_tokenizer, train_tokenizer

    if path:
        return load_tokenizer(path)
    return train_tokenizer(train_docs, cfg.tokenizer.vocab_size, kind=cfg.tokenizer.kind,
                           spm_model_type=cfg.tokenizer.spm_model_type)


def cmd_pretrain(args: argparse.Namespace) -> None:
    from minillm.datasets import corpus_splits
    from minillm.datasets.corpus import corpus_record
    from minillm.stage1_pretrain.clm import train_clm
    from minillm.stage1_pretrain.data import SUBSET_NOTE
    from minillm.stage1_pretrain.mlm import train_mlm

    cfg = build_config(args)
    train_docs, val_docs = corpus_splits(cfg, args.corpus)
    corpus = corpus_record((train_docs, val_docs), args.corpus, cfg)
    tok = _tokenizer_for(cfg, args.tokenizer_file, train_docs)
    if args.objective == "mlm":
        result = train_mlm(cfg.mlm, tok, train_docs, val_docs, args.out, resume=args.resume, corpus=corpus)
        keys = ("val_masked_accuracy", "unigram_masked_accuracy", "fill_mask_prompt", "fill_mask_top5")
    else:
        result = train_clm(cfg.clm, tok, train_docs, val_docs, args.out, resume=args.resume, corpus=corpus)
        keys = ("val_perplexity", "unigram_perplexity")
    _print_results(args, result, lambda result: f"{_key_lines(result, keys)}\n({SUBSET_NOTE})")


def cmd_fill_mask(args: argparse.Namespace) -> None:
    from minillm.model.bert import Bert
    from minillm.stage1_pretrain.mlm import fill_mask, plot_fill_mask
    from minillm.utils import pad_to_columns

    model, tok = _load_trained(args, Bert)
    ranking = fill_mask(model, tok, args.text, top_k=args.top_k)
    for rank, (piece, prob) in enumerate(ranking, 1):
        print(f"{rank:2d}. {pad_to_columns(repr(piece), 20)} {prob:.3f}")
    plot_path = Path(args.plot) if args.plot else fill_mask_plot_path(args.ckpt, args.text)
    plot_fill_mask(ranking[:10], plot_path, title=args.text)
    print(f"bar chart: {plot_path}")


def fill_mask_plot_path(ckpt: str, text: str) -> Path:
    """CKPT/fill_mask_<words of the text>_<hash>.png: one chart per sentence, never the run's own
    fill_mask.png (the chart report.md shows beside its text)."""
    folder = Path(ckpt) if Path(ckpt).is_dir() else Path(ckpt).parent
    words = re.sub(r"[^a-z0-9]+", "_", text.lower().replace("[mask]", "mask")).strip("_")[:40]
    digest = hashlib.sha1(text.encode("utf-8")).hexdigest()[:8]
    return folder / f"fill_mask_{words + '_' if words else ''}{digest}.png"


def cmd_generate(args: argparse.Namespace) -> None:
    from minillm.model.gpt import GPT
    from minillm.stage1_pretrain.clm import generate_text
    from minillm.utils import escape_controls

    model, tok = _load_trained(args, GPT)
    text = generate_text(model, tok, args.prompt, max_new_tokens=args.max_new_tokens,
                         temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed)
    # A terminal would obey the control characters a model may write (ESC clears it): there they are
    # shown as escapes. Into a file or a pipe the text goes as the model wrote it, for what reads it.
    print(escape_controls(text) if sys.stdout.isatty() else text)


def cmd_compare(args: argparse.Namespace) -> None:
    from minillm.compare import compare_runs

    print(compare_runs(args.runs, args.out)["report"])


def _load_trained(args: argparse.Namespace, model_cls: type[ModelT]) -> tuple[ModelT, Tokenizer]:
    """(model, tokenizer) of the run in --ckpt, on --device; a run without its tokenizer is refused."""
    from minillm.train import load_model_and_tokenizer
    from minillm.utils import resolve_device

    return load_model_and_tokenizer(args.ckpt, model_cls, map_location=resolve_device(args.device))


def cmd_sft(args: argparse.Namespace) -> None:
    from minillm.datasets import corpus_splits, instruction_records
    from minillm.datasets.corpus import corpus_record
    from minillm.datasets.instructions import instructions_record
    from minillm.stage2_sft.evaluate import format_table, run_sft_with_baselines

    cfg = build_config(args)
    if args.corpus and cfg.sft.pretrain_mix == 0:  # the file would be left unread without a word
        raise ConfigError(f"--corpus {args.corpus} is the pretraining text that sft.pretrain_mix replays, but "
                          f"pretrain_mix is 0 (no replay); add e.g. --set sft.pretrain_mix=0.1, or drop --corpus")
    records = instruction_records(cfg, args.data, args.skip_bad_lines)
    pretrain_docs, corpus = [], None
    if cfg.sft.pretrain_mix > 0:  # the training documents it replays, and the record of the corpus they are of
        splits = corpus_splits(cfg, args.corpus)
        pretrain_docs, corpus = splits[0], corpus_record(splits, args.corpus, cfg)
    report = run_sft_with_baselines(cfg.sft, records, args.out, args.init, baselines=not args.no_baselines,
                                    resume=args.resume, pretrain_docs=pretrain_docs,
                                    instructions=instructions_record(records, args.data, cfg.data_seed), corpus=corpus)
    _print_results(args, report, format_table)


def cmd_chat(args: argparse.Namespace) -> None:
    from minillm.model.gpt import GPT
    from minillm.stage2_sft.chat import chat_loop, template_note

    stdin = _typed_lines("chat")
    model, tok = _load_trained(args, GPT)
    note = template_note(args.ckpt)
    if note:  # on stderr, as the other notes: stdout is the conversation
        print(f"minillm: note: {note}", file=sys.stderr)
    chat_loop(model, tok, stdin, sys.stdout, max_new_tokens=args.max_new_tokens,
              temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed)


def cmd_annotate(args: argparse.Namespace) -> None:
    from minillm.stage3_rlhf.annotate import annotate
    from minillm.utils import resolve_device

    annotate(args.policy, args.prompts, args.out, k=args.k, max_new_tokens=args.max_new_tokens,
             seed=args.seed, device=resolve_device(args.device), stdin=_typed_lines("annotate"),
             skip_bad_lines=args.skip_bad_lines)


def _typed_lines(command: str) -> TextIO:
    """stdin, for the commands a person types into (`chat`, `annotate`). A line of bytes that are not
    UTF-8 (a terminal set to Latin-1, a paste) must not end the session with a traceback: its bad bytes
    become U+FFFD, which the chat reads as text and annotate refuses as no ranking (at a terminal it
    asks again; from a file it stops at that line). Lines from a file or a pipe (< lines.txt) are read
    as UTF-8, as every file a user gives is, and without the byte order mark a Windows editor may
    write first: Python would read them in the locale's encoding (cp1252 on Windows), and a first
    ranking "\ufeff2 1" (or "ï»¿2 1") would be refused. A terminal keeps its encoding. A closed
    stdin (`<&-`, a service without a terminal) has no lines to read: say so before loading."""
    if sys.stdin is None:
        raise DataError(f"`minillm {command}` reads what you type from stdin, but stdin is closed; run it in a "
                        "terminal, or give it the lines from a file (< lines.txt)")
    if isinstance(sys.stdin, io.TextIOWrapper):
        sys.stdin.reconfigure(encoding=sys.stdin.encoding if sys.stdin.isatty() else "utf-8-sig", errors="replace")
    return sys.stdin


def cmd_reward(args: argparse.Namespace) -> None:
    from minillm.stage2_sft.learnt import instructions_after_sft
    from minillm.stage3_rlhf.preferences import PREFS_NAME, collect_rankings
    from minillm.stage3_rlhf.reward_model import train_reward_model
    from minillm.train.distributed import is_main_process, rank_zero_first
    from minillm.utils import resolve_device

    cfg = build_config(args)
    records, instructions = instructions_after_sft(cfg, args.sft, args.data, args.skip_bad_lines)
    prefs = args.prefs
    if prefs is None:
        prefs = str(Path(args.out) / PREFS_NAME)
        if is_main_process():  # (under torchrun rank 0 alone, which holds the folder's lock)
            if Path(prefs).is_file():  # rankings collected before (maybe by hand): never overwrite them
                print(f"using the rankings already in {prefs}, whatever settings made them (delete it, or train "
                      "into another --out, to sample and rank new answers)")
            else:
                collect_rankings(cfg.reward, args.sft, records, prefs)
        rank_zero_first(resolve_device(cfg.reward.train.device))  # the other ranks read the file once it is there
    result = train_reward_model(cfg.reward, args.sft, prefs, args.out, records=records, resume=args.resume,
                                instructions=instructions)
    _print_results(args, result, _reward_lines)


def _reward_lines(result: dict) -> str:
    """The reward model's accuracy and its ceiling: gold_agreement, how often the rankings agree with the gold
    judge; annotator_agreement, how often two noisy rankings of the same answers agree. Both are None (not
    measured) for rankings of your own, whose answers the judge cannot score: a line says why."""
    lines = _key_lines(result, ("pairwise_accuracy", "gold_agreement", "annotator_agreement"))
    if result.get("gold_agreement", 0.0) is None:
        lines += ("\n(the agreements are not measured: no ranking's id names a record of the instruction file, so "
                  "the gold judge has no reference to score the answers by; give each ranking its record's id, as "
                  "annotate does with the records of --prompts, and pass that file as --data)")
    return lines


def cmd_ppo(args: argparse.Namespace) -> None:
    from minillm.stage2_sft.learnt import instructions_after_sft
    from minillm.stage3_rlhf.ppo import train_ppo

    cfg = build_config(args)
    records, instructions = instructions_after_sft(cfg, args.sft, args.data, args.skip_bad_lines)
    result = train_ppo(cfg.ppo, args.sft, args.reward, records, args.out, resume=args.resume,
                       instructions=instructions)
    _print_results(args, result, lambda result: f"{comparison_lines(result, 'PPO')}\n{_last_step_kl_line(result)}")


def cmd_dpo(args: argparse.Namespace) -> None:
    from minillm.stage2_sft.learnt import instructions_after_sft
    from minillm.stage3_rlhf.dpo import train_dpo

    cfg = build_config(args)
    records, instructions = instructions_after_sft(cfg, args.sft, args.data, args.skip_bad_lines)
    result = train_dpo(cfg.dpo, args.sft, args.prefs, records, args.out, resume=args.resume,
                       instructions=instructions)
    _print_results(args, result, lambda result: f"{comparison_lines(result, 'DPO')}\n{_pair_accuracy_line(result)}")


def _pair_accuracy_line(result: dict) -> str:
    """DPO's own check beside the gold judge's: of the held-out ranked pairs, the share whose preferred answer
    the trained policy's implicit reward (its log-probability ratio to the SFT model's) puts first."""
    return (f"held-out pairs ordered right by DPO's implicit reward: {result['pair_accuracy']:.3f} "
            f"(trained on {result['n_pairs']} pairs)")


def cmd_grpo(args: argparse.Namespace) -> None:
    from minillm.stage2_sft.learnt import instructions_after_sft
    from minillm.stage3_rlhf.grpo import train_grpo

    cfg = build_config(args)
    records, instructions = instructions_after_sft(cfg, args.sft, args.data, args.skip_bad_lines)
    result = train_grpo(cfg.grpo, args.sft, records, args.out, rm_dir=args.reward, resume=args.resume,
                        instructions=instructions)
    _print_results(args, result, lambda result: _grpo_lines(result, cfg.grpo.passk_samples))


def _grpo_lines(result: dict, samples: int) -> str:
    """GRPO against the SFT model: the gold judge's comparison, pass@1 and the pass@k curve (each k's gain
    with its standard error, measured prompt by prompt: pass_at_k_gain), and the last step's KL.

    Two pass@1 figures: the share of held-out prompts whose one sampled answer is right, and the curve's
    k=1, estimated from `samples` answers to each of the first grpo.passk_prompts of them. They differ a
    little, so each line says which it is."""
    from minillm.stage3_rlhf.annotator import with_stderr

    before, after, gain = result["pass_at_k_sft"], result["pass_at_k_after"], result["pass_at_k_gain"]
    return "\n".join([
        comparison_lines(result, "GRPO"),
        "pass@1 (the right answer is in it), one answer to each held-out prompt: "
        f"SFT {result['pass_at_1_sft']:.3f} -> {result['pass_at_1_after']:.3f}",
        f"pass@k from {samples} answers to each prompt, SFT -> GRPO (gain ± its standard error): "
        + ", ".join(f"k={k} {before[k]:.3f} -> {after[k]:.3f} "
                    f"({with_stderr(gain[k]['gain'], gain[k]['stderr'], signed=True)})" for k in before),
        _last_step_kl_line(result)])


def _print_results(args: argparse.Namespace, result: dict | None, lines: Callable[[dict], str]) -> None:
    """Print a trained run's results (`lines` of them) and where the run is written: the end of each training
    command. Under torchrun a stage returns its results on rank 0 alone, and None on the
    other ranks (minillm.train.distributed), which print nothing: the results appear once."""
    if result is None:
        return
    print(lines(result))
    print(f"run written to {args.out}")


def _key_lines(result: dict, keys: Sequence[str]) -> str:
    """One "key: value" line for each of `keys` in `result` (None for one it lacks); a float to 4 significant
    digits, as the report shows its figures (0.5022, not 0.5021682567215958)."""
    return "\n".join(f"{key}: {_shown(result.get(key))}" for key in keys)


def _shown(value: object) -> object:
    """A result's value as printed: a float to 4 significant digits, anything else as it is."""
    return f"{value:.4g}" if isinstance(value, float) else value


def _last_step_kl_line(result: dict) -> str:
    """The KL that PPO's and GRPO's training log ends with: nats per answer (summed over its tokens), on the
    last step's training prompts, of answers sampled before that step's update. The pipeline's report calls
    "KL to the SFT model" another number (the trained policy's, on the held-out prompts) and this one
    kl_last_step: named alike here, the two would read as one figure that changed."""
    return (f"KL to the SFT model at the last training step: {result['kl']:.3f} nats per answer (on that step's "
            "training prompts, sampled before its update)")


def comparison_lines(result: dict, name: str) -> str:
    """A policy against the SFT model by the gold judge, each number with its standard error."""
    from minillm.stage3_rlhf.annotator import win_rate_text, with_stderr

    return (f"win rate vs SFT (gold judge): {win_rate_text(result)}\n"
            f"mean gold score: SFT {with_stderr(result['gold_sft'], result['gold_sft_stderr'])} -> "
            f"{name} {with_stderr(result['gold_after'], result['gold_after_stderr'])}")


def cmd_pipeline(args: argparse.Namespace) -> None:
    from minillm.pipeline import run_pipeline

    cfg = build_config(args)
    report = run_pipeline(cfg, args.out, force=args.force, corpus=args.corpus, instructions=args.data,
                          jobs=args.jobs, reuse_from=args.reuse, skip_bad_lines=args.skip_bad_lines)
    print(f"done in {report['wall_seconds']:.0f} s: {Path(args.out) / 'report.md'}")


# --------------------------------------------------------------------------------------------------
# The parser.


def _add_config_args(p: argparse.ArgumentParser, sections: str, example: str) -> None:
    """The arguments every training command shares; --set's help names the `sections` the command reads
    (`refuse_unread_sections` refuses the others) and an `example` that it takes."""
    p.add_argument("--preset", default="tiny", choices=PRESETS,
                   help="micro (tests), tiny (CPU; the default), small (GPU)")
    p.add_argument("--set", action="append", metavar="PATH=VALUE",
                   help=f"override a setting of {sections}, e.g. --set {example} (repeatable)")
    _add_device_arg(p, default=None)
    p.add_argument("--dtype", default=None, choices=DTYPES,
                   help="what autocast computes in (default: float32, no autocast)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--detect-anomaly", action="store_true", help="autograd anomaly detection (slow)")


def _add_run_folder_arg(p: argparse.ArgumentParser) -> None:
    """--out of a command that writes a run folder (the training commands and the pipeline)."""
    p.add_argument("--out", type=path_arg, required=True, metavar="DIR",
                   help="the run folder to write (made if missing)")


def _add_resume_arg(p: argparse.ArgumentParser) -> None:
    """--resume, for every command that trains one run into --out."""
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")


def _add_device_arg(p: argparse.ArgumentParser, default: str | None = "cpu") -> None:
    """--device, for the commands that load a trained model (cpu by default) and for the training
    commands (default None: each stage's config says)."""
    shown = default or "the preset's"
    p.add_argument("--device", default=default, help=f"{device_names(' | ')} (default: {shown})")


_temperature = checked_arg(float, lambda t: t >= 0, "a temperature: a number >= 0 (0 = greedy)")
_probability = checked_arg(float, lambda p: 0 < p <= 1, "a probability in (0, 1]")
_seed = checked_arg(int, lambda n: 0 <= n <= MAX_SEED, "a seed: an integer in [0, 2**63 - 1]")
# NFC: a prompt pasted with decomposed Hangul (three jamo for "한", as macOS file names hold it) is put in
# the composed form that read_corpus gives the tokenizer; decomposed, it would be raw bytes the model never read
_utf8_text = checked_arg(lambda text: unicodedata.normalize("NFC", text),
                         lambda text: not any("\ud800" <= c <= "\udfff" for c in text),  # undecodable bytes
                         "UTF-8 text: the terminal sent bytes in another encoding; set it to UTF-8 (e.g. LANG=C.UTF-8)")


_png_file = checked_arg(path_arg, lambda name: name.lower().endswith(".png") and not Path(name).is_dir(),
                        "a file name ending in .png (the chart is a PNG image)")


def _add_top_p_arg(p: argparse.ArgumentParser) -> None:
    """--top-p, nucleus sampling, for the commands that sample from a trained model."""
    p.add_argument("--top-p", type=_probability, default=None,
                   help="sample from the fewest likeliest tokens whose probabilities add up to p (default: off)")


def _add_skip_bad_lines_arg(p: argparse.ArgumentParser) -> None:
    """--skip-bad-lines, for every command that reads a JSONL file of yours (a bad line's error names it)."""
    p.add_argument("--skip-bad-lines", action="store_true", help="report and skip malformed JSONL lines")


def _add_data_args(p: argparse.ArgumentParser, after_sft: bool = False) -> None:
    """--data and --skip-bad-lines; `after_sft`: of a stage given an SFT run, which by default reads what it learnt."""
    default = "the file the --sft run learnt, else the generated suite" if after_sft else "the generated suite"
    p.add_argument("--data", type=path_arg, default=None, help=f"instruction JSONL (default: {default})")
    _add_skip_bad_lines_arg(p)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="minillm", description=description(__doc__))
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    tok = sub.add_parser("tokenizer", help="train a tokenizer or look at how it splits text")
    tok_sub = tok.add_subparsers(dest="tokenizer_command", required=True, metavar="ACTION")
    p = tok_sub.add_parser("train", help="train a tokenizer on text files")
    p.add_argument("--input", nargs="+", type=path_arg, required=True,
                   help="text files (documents split by blank lines)")
    p.add_argument("--vocab-size", type=int, default=2048,
                   help="how many ids to learn (default 2048; a small corpus may give fewer)")
    p.add_argument("--kind", default="bpe", choices=TOKENIZER_KINDS,
                   help="bpe: minillm's own byte-level BPE (the default); sentencepiece: the industrial library")
    p.add_argument("--spm-model-type", default=None, choices=SPM_MODEL_TYPES,
                   help=f"with --kind sentencepiece: its model (default: {TokenizerConfig().spm_model_type})")
    p.add_argument("--out", type=path_arg, required=True, metavar="FILE_OR_DIR",
                   help="the tokenizer JSON file to write, or a folder to write tokenizer.json into "
                        "(an existing one, or a new one written with a trailing slash)")
    p.set_defaults(func=cmd_tokenizer_train)
    p = tok_sub.add_parser("encode", help="print the ids and pieces of a text")
    p.add_argument("--tokenizer", type=path_arg, required=True,
                   help="a tokenizer JSON file, or a run folder that holds its tokenizer.json")
    p.add_argument("text", type=_utf8_text, help="the text to split into tokens")
    p.set_defaults(func=cmd_tokenizer_encode)

    p = sub.add_parser("pretrain", help="stage 1: masked-LM (BERT) or next-token (GPT) pretraining")
    p.add_argument("objective", choices=("mlm", "clm"),
                   help="mlm: predict masked tokens (a BERT); clm: predict the next token (a GPT)")
    _add_run_folder_arg(p)
    p.add_argument("--corpus", type=path_arg, default=None,
                   help="text file (default: the generated small-world corpus)")
    p.add_argument("--tokenizer", dest="tokenizer_kind", default=None, choices=TOKENIZER_KINDS,
                   help="train this kind of tokenizer first (default: the preset's)")
    p.add_argument("--tokenizer-file", type=path_arg, default=None, help="use this trained tokenizer instead")
    _add_resume_arg(p)
    _add_config_args(p, "the objective's section (mlm or clm) or the tokenizer section", "clm.model.n_layer=6")
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("fill-mask", help="rank the candidates for [MASK] with a trained BERT")
    p.add_argument("--ckpt", type=path_arg, required=True, help="an MLM run folder")
    p.add_argument("text", type=_utf8_text, help='e.g. "A flash flood watch will be in effect all [MASK]."')
    p.add_argument("--top-k", type=positive_int, default=10, help="how many candidates to list (default 10)")
    p.add_argument("--plot", type=_png_file, default=None,
                   help="bar chart PNG (default: CKPT/fill_mask_<the text>_<hash>.png)")
    _add_device_arg(p)
    p.set_defaults(func=cmd_fill_mask)

    p = sub.add_parser("generate", help="sample a continuation with a trained GPT")
    p.add_argument("--ckpt", type=path_arg, required=True,
                   help="a CLM run folder (an SFT, PPO, DPO or GRPO one too, but the prompt is continued as plain "
                        "text, without the chat template: to ask those a question, use `chat`)")
    p.add_argument("prompt", type=_utf8_text, help="the text to continue")
    p.add_argument("--max-new-tokens", type=positive_int, default=60, help="stop after this many tokens at most "
                   "(sooner at <eos>, the end of a document, or where the model's context window is full)")
    p.add_argument("--temperature", type=_temperature, default=0.8, help="0 = greedy; higher = more varied")
    p.add_argument("--top-k", type=positive_int, default=50, help="sample from the k likeliest tokens only")
    _add_top_p_arg(p)
    p.add_argument("--seed", type=_seed, default=0, help="the same seed gives the same text")
    _add_device_arg(p)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("compare", help="overlay several runs' curves; table their final metrics and config differences")
    p.add_argument("runs", nargs="+", type=path_arg, metavar="RUN_DIR",
                   help="run folders (each with metrics.jsonl, config.json), or pipeline runs (report.json)")
    p.add_argument("--out", type=_png_file, default=None,
                   help="the PNG of the overlaid curves (default compare.png; not for pipeline runs, which draw none)")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("sft", help="stage 2: instruction tuning from a CLM run, with its baselines")
    p.add_argument("--init", type=path_arg, required=True, help="the CLM run folder to start from")
    _add_run_folder_arg(p)
    p.add_argument("--no-baselines", action="store_true", help="skip the scratch and single-family runs")
    _add_resume_arg(p)
    p.add_argument("--corpus", type=path_arg, default=None,
                   help="pretraining text mixed in by sft.pretrain_mix (default: the generated small-world corpus)")
    _add_data_args(p)
    _add_config_args(p, "the sft section", "sft.train.max_steps=300")
    p.set_defaults(func=cmd_sft)

    p = sub.add_parser("chat", help="talk to an instruction-tuned GPT in the terminal")
    p.add_argument("--ckpt", type=path_arg, required=True,
                   help="an SFT, PPO, DPO or GRPO run folder (a CLM run never saw the chat template: it continues "
                        "the template's text instead of answering)")
    p.add_argument("--max-new-tokens", type=positive_int, default=48,
                   help="the longest answer, in tokens (default 48; sooner at <eos>)")
    p.add_argument("--temperature", type=_temperature, default=0.0, help="0 = greedy")
    p.add_argument("--top-k", type=positive_int, default=None,
                   help="when sampling, from the k likeliest tokens only (default: all)")
    _add_top_p_arg(p)
    p.add_argument("--seed", type=_seed, default=0, help="when sampling: the same seed gives the same answers")
    _add_device_arg(p)
    p.set_defaults(func=cmd_chat)

    p = sub.add_parser("annotate", help="stage 3: rank a policy's answers yourself, in the terminal")
    p.add_argument("--policy", type=path_arg, required=True, help="the SFT run folder whose answers you rank")
    p.add_argument("--prompts", type=path_arg, required=True,
                   help="a .jsonl with a 'prompt' field per line, or a text file of one prompt a line")
    p.add_argument("--out", type=path_arg, required=True, help="prefs JSONL (appended to; resumes where it left off)")
    p.add_argument("--k", type=positive_int, default=4, help="answers per prompt (2 to 9)")
    p.add_argument("--max-new-tokens", type=positive_int, default=48,
                   help="the longest answer sampled, in tokens (default 48; sooner at <eos>)")
    p.add_argument("--seed", type=_seed, default=0,
                   help="the same seed gives a prompt the same answers in every session (default 0)")
    _add_skip_bad_lines_arg(p)
    _add_device_arg(p)
    p.set_defaults(func=cmd_annotate)

    p = sub.add_parser("reward", help="stage 3: rank sampled answers and train the reward model")
    p.add_argument("--sft", type=path_arg, required=True, help="the SFT run folder")
    _add_run_folder_arg(p)
    p.add_argument("--prefs", type=path_arg, default=None,
                   help="rankings JSONL (default: made by the simulated annotator)")
    _add_resume_arg(p)
    _add_data_args(p, after_sft=True)
    _add_config_args(p, "the reward section", "reward.annotator_noise=1.0")
    p.set_defaults(func=cmd_reward)

    p = sub.add_parser("ppo", help="stage 3: PPO against the reward model, with a KL leash")
    p.add_argument("--sft", type=path_arg, required=True,
                   help="the SFT run folder: the policy starts from it and is kept near it (the KL leash)")
    p.add_argument("--reward", type=path_arg, required=True, help="the reward-model run folder")
    _add_run_folder_arg(p)
    _add_resume_arg(p)
    _add_data_args(p, after_sft=True)
    _add_config_args(p, "the ppo section", "ppo.kl_coef=0.05")
    p.set_defaults(func=cmd_ppo)

    p = sub.add_parser("dpo", help="stage 3: direct preference optimisation on the rankings")
    p.add_argument("--sft", type=path_arg, required=True,
                   help="the SFT run folder: the policy starts from it, and it is DPO's reference model")
    p.add_argument("--prefs", type=path_arg, required=True,
                   help="rankings JSONL, e.g. a reward run's prefs.jsonl or annotate's --out")
    _add_run_folder_arg(p)
    _add_resume_arg(p)
    _add_data_args(p, after_sft=True)
    _add_config_args(p, "the dpo section", "dpo.beta=0.1")
    p.set_defaults(func=cmd_dpo)

    p = sub.add_parser("grpo", help="stage 3: GRPO, group-relative RL with a reward model or a verifiable reward")
    p.add_argument("--sft", type=path_arg, required=True,
                   help="the SFT run folder: the policy starts from it (and grpo.kl_coef > 0 keeps it near it)")
    p.add_argument("--reward", type=path_arg, default=None,
                   help="the reward-model run folder (for grpo.reward=model, the default); "
                        "--set grpo.reward=verifiable needs none")
    _add_run_folder_arg(p)
    _add_resume_arg(p)
    _add_data_args(p, after_sft=True)
    _add_config_args(p, "the grpo section", "grpo.reward=verifiable")
    p.set_defaults(func=cmd_grpo)

    p = sub.add_parser("pipeline", help="all three stages end to end, with a report")
    _add_run_folder_arg(p)
    p.add_argument("--force", action="store_true", help="redo steps whose outputs already exist")
    p.add_argument("--reuse", type=path_arg, default=None, metavar="RUN",
                   help="copy the steps of this earlier pipeline run that were made from the same settings, "
                        "and train only the others (e.g. --set ppo.kl_coef=0 --reuse runs/tiny --out runs/no-kl)")
    p.add_argument("--corpus", type=path_arg, default=None, help="pretraining text file (default: generated)")
    p.add_argument("--jobs", type=positive_int, default=DEFAULT_JOBS,
                   help="steps run side by side, in processes of one thread each, when they do not depend on "
                        f"each other (default {DEFAULT_JOBS}); 1: one step at a time, with torch's own threads")
    _add_data_args(p)
    _add_config_args(p, "any section", "ppo.kl_coef=0")
    p.set_defaults(func=cmd_pipeline)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return the exit code (0 done, 2 a problem with the input, 130 interrupted by Ctrl-C,
    143 by SIGTERM, which is answered as a Ctrl-C (sigterm_as_ctrl_c), 141 when the program reading the
    output stopped early, as `| head` does).

    A MinillmError (a problem with the input), an OSError (a path that cannot be read or written)
    or torch's out-of-memory error (a setting too large for the machine) becomes one line on stderr;
    any other exception is a bug and keeps its traceback.
    """
    stand_in_for_closed_output()
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parse_args(parser, argv)
    func: Callable[[argparse.Namespace], None] = args.func
    with warnings.catch_warnings(), sigterm_as_ctrl_c():
        if not args.debug:
            warnings.showwarning = show_warning
        try:
            # Imported here: torch with it, and --help stays fast. It takes seconds, and a Ctrl-C in them would leave
            # torch half-imported and print a page of traceback: the Ctrl-C waits for the import's end, and stops here.
            with ctrl_c_held():
                from minillm.utils import show_unencodable_output
            show_unencodable_output()  # a stdout that is not UTF-8 (Windows, piped) must not end a run at its "±"
            _refuse_an_input_run_as_out(args)
            with _lock_for(args):
                _say_when_nothing_to_resume(args)
                func(args)
            # Flushed here, inside the try: a pipe's stdout is block-buffered, so a short output is only
            # written now, and a reader gone by then would otherwise fail at exit ("Exception ignored").
            sys.stdout.flush()
        except BrokenPipeError:  # `minillm ... | head`: the reader has all it wanted, nothing went wrong
            discard_stdout()
            return 141  # 128 + SIGPIPE, the code a shell gives a program the pipe ended
        except (MinillmError, OSError) as err:
            if args.debug:
                raise
            hint = _resume_hint(args, argv) if disk_refused(err) else ""  # what is kept, and how to go on
            print(f"minillm: error: {one_line(err)}{hint}", file=sys.stderr)
            return 2
        except RuntimeError as err:  # torch's out-of-memory errors are RuntimeErrors; any other is a bug
            if args.debug or not is_out_of_memory(err):
                raise
            print(f"minillm: error: {out_of_memory_line(err, args)}", file=sys.stderr)
            return 2
        except KeyboardInterrupt as stop:
            what, code = ("stopped by SIGTERM", 143) if isinstance(stop, Terminated) else ("interrupted", 130)
            if _torchrun_rank() in (None, 0):  # under torchrun every rank gets the Ctrl-C: rank 0 says it once
                print(f"minillm: {what}{_resume_hint(args, argv)}", file=sys.stderr)
            return code
    return 0


def _parse_args(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace:
    """`parser.parse_args(argv)`. `--help` prints into stdout's buffer and ends the program (SystemExit)
    before main's try: the help is flushed here, so that a reader gone before it came (`minillm --help
    | true`) ends the command as quietly as any other output does, with 141, not with Python's
    "Exception ignored ... BrokenPipeError" and 120."""
    try:
        return parser.parse_args(argv)
    except SystemExit:
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            discard_stdout()
            raise SystemExit(141) from None
        raise


WRITE_ONE_FILE = (cmd_tokenizer_train, cmd_annotate, cmd_compare)  # their --out is a file, not a run folder


def _out_run(args: argparse.Namespace) -> str | None:
    """The run folder that --out names; None for a command without --out, or whose --out is a file."""
    return None if args.func in WRITE_ONE_FILE else getattr(args, "out", None)


def _lock_for(args: argparse.Namespace) -> AbstractContextManager:
    """Commands whose --out is a run folder hold its lock while they run (two runs in one folder
    would overwrite each other); `tokenizer train`, `annotate` and `compare` write a single file instead
    (annotate, which appends to its file for as long as a person ranks, locks that file itself: file_lock).
    Under torchrun only rank 0 writes files, so only rank 0 holds the lock. `reward` may find your
    own rankings in its folder before any run has been there (cmd_reward)."""
    if _out_run(args) is None:  # first: a command with no run folder (`tokenizer encode`) needs none of the
        return nullcontext()  # imports below, which bring every stage and matplotlib (half a second of its start)
    from minillm.run_lock import run_folder_lock
    from minillm.stage3_rlhf.preferences import PREFS_NAME
    from minillm.train.distributed import is_main_process

    if not is_main_process():
        return nullcontext()
    return run_folder_lock(args.out, inputs=(PREFS_NAME,) if args.func is cmd_reward else ())


INPUT_RUNS = ("init", "sft", "reward")  # the options that name a run folder a command reads


def _refuse_an_input_run_as_out(args: argparse.Namespace) -> None:
    """--out may not be a run the command reads (`sft --init runs/clm --out runs/clm`): the new run
    would write its config.json and checkpoints over it, and with --resume even go on from the
    other stage's optimizer state as if it were its own."""
    out = _out_run(args)
    if out is None:
        return
    for option in INPUT_RUNS:
        run = getattr(args, option, None)
        if run is not None and Path(run).resolve() == Path(out).resolve():
            raise DataError(f"--out {out} is the run --{option} reads: training there would overwrite it; "
                            "give --out a folder of its own")


def _say_when_nothing_to_resume(args: argparse.Namespace) -> None:
    """--resume into a folder without a checkpoint (a typo in --out, say) starts a new run: say so."""
    if not getattr(args, "resume", False):
        return
    from minillm.train.checkpoint import saved_checkpoints  # only now: it imports the training loop, matplotlib

    if not saved_checkpoints(args.out):
        print(f"minillm: nothing to resume in {args.out} (no checkpoint): starting a new run", file=sys.stderr)


def _resume_hint(args: argparse.Namespace, argv: Sequence[str]) -> str:
    """After Ctrl-C (or SIGTERM), or a write the disk refused: which step the newest checkpoint under --out
    holds (for annotate: that the rankings typed are kept), and the command that goes on."""
    out = getattr(args, "out", None)
    if args.func is cmd_pipeline:  # again with --force would delete the steps this run has finished
        argv = [a for a in argv if a != "--force"]
    again = " ".join(shlex.quote(a) for a in ["minillm", *argv])
    if args.func is cmd_annotate:  # each ranking is on disk before the next question (append_preference)
        return f"; the rankings typed so far are kept in {out}. Continue with: {again}"
    if _out_run(args) is None:  # no --out, or a file: written whole or not at all
        return ""
    if hasattr(args, "resume") and not args.resume:
        again += " --resume"
    try:
        from minillm.train.checkpoint import last_saved_step
    except (ImportError, AttributeError):  # Ctrl-C came during `import torch`, which is left half-imported
        return f"; stopped before training began. Continue with: {again}"
    saved = last_saved_step(out)
    if saved and args.func is cmd_pipeline and (saved[0].parent / "result.json").is_file():
        saved = None  # a finished step's checkpoint: the step that was running had saved nothing yet
    where = f"last saved at step {saved[1]} ({saved[0]})" if saved else "no checkpoint saved yet"
    if args.func is cmd_pipeline:
        where += "; finished steps are kept"
    if _torchrun_rank() is not None:  # (a resume is bit-exact with the same number of processes)
        return f"; {where}. Continue with the same torchrun launch, of: {again}"
    return f"; {where}. Continue with: {again}"


def _torchrun_rank() -> int | None:
    """This process's rank among those torchrun launched; None when torchrun launched one process or
    none, and where torch is half-imported (a Ctrl-C during `import torch`, before any rank trained)."""
    try:
        from minillm.train.distributed import launched_world_size
    except (ImportError, AttributeError):
        return None
    return int(os.environ.get("RANK", "0")) if launched_world_size() > 1 else None


# What torch says when memory runs out: on a GPU (torch.OutOfMemoryError), on Apple's GPU, on the CPU
OUT_OF_MEMORY = ("out of memory", "can't allocate memory")


def is_out_of_memory(err: RuntimeError) -> bool:
    """True for an allocation that failed: a setting too large for the machine, not a bug of ours."""
    return any(words in str(err).lower() for words in OUT_OF_MEMORY)


def out_of_memory_line(err: RuntimeError, args: argparse.Namespace) -> str:
    """One line for a failed allocation: how much was asked for, and the settings that decide it."""
    asked = re.search(r"tried to allocate (\d+) bytes|tried to allocate ([\d.]+ [KMGT]iB)", str(err), re.IGNORECASE)
    size = "" if asked is None else f" (it tried to allocate {asked[2] or f'{int(asked[1]) / 2**30:.2f} GiB'})"
    return f"out of memory{size}: {memory_advice(args)}; --debug shows where it failed"


def memory_advice(args: argparse.Namespace) -> str:
    """What decides the memory of the command `args` ran, in the options it takes. PPO's and GRPO's own
    loops split no batch into parts and read no train.batch_size (config.NEVER_READ): their minibatch
    of answers does. A command that runs a trained model has no setting to lower."""
    if args.command in ("ppo", "grpo"):
        prompts = "rollout_batch_size" if args.command == "ppo" else "prompts_per_step"
        return (f"the models or a minibatch of answers do not fit in this device's memory; lower "
                f"{args.command}.minibatch_size (the answers of each gradient step), or {args.command}.{prompts}")
    if not hasattr(args, "set"):  # generate, chat, fill-mask, annotate, tokenizer
        return "the model or its input does not fit in this device's memory"
    section = args.objective if args.command == "pretrain" else args.command if args.command in SECTIONS else "SECTION"
    return (f"the model or a batch does not fit in this device's memory. Split each batch into parts (--set "
            f"{section}.train.grad_accum_steps=K: the same batch for the optimizer, K times less memory for its "
            f"activations), lower {section}.train.batch_size, or make the model smaller (n_layer, n_embd, block_size)"
            + ("; in ppo, grpo and grpo_verifiable, lower minibatch_size instead" if section == "SECTION" else ""))


if __name__ == "__main__":
    sys.exit(main())

