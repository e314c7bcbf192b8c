"""The command line: help for every command, the README's commands parse, the tokenizer commands end
to end, the runtime flags reach every stage, and the exit-code contract of `main`.

Commands run in-process through `minillm.cli.main` (fast); one test runs the installed `minillm`
script to prove the entry point works. Training commands are exercised with hand-built run folders
(random weights) so that each test takes well under a second; the bad inputs are in
test_bad_inputs.py.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import dataclasses
import errno
import io
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import pytest
import torch

from minillm import cli
from minillm.cli import build_config, build_parser, main, with_runtime
from minillm.config import apply_overrides, preset, train_configs
from minillm.console import HAS_SIGNAL_MASKS, description, one_line
from minillm.errors import ConfigError, DataError
from minillm.run_lock import LOCK_NAME, RUN_MARK_NAME
from minillm.tokenizer import SPECIAL_TOKENS, BPETokenizer, load_tokenizer
from minillm.train import save_checkpoint
from minillm.train.checkpoint import load_checkpoint
from minillm.utils import json_sha256, pad_to_columns

REPO = Path(__file__).resolve().parents[1]
COMMANDS = ("tokenizer", "pretrain", "fill-mask", "generate", "sft", "chat", "annotate", "reward", "ppo", "dpo", "grpo",
            "compare", "pipeline")
TRAINING_COMMANDS = ("pretrain", "sft", "reward", "ppo", "dpo", "grpo", "pipeline")
STAGES = ("mlm", "clm", "sft", "reward", "ppo", "dpo")
TEXT = ("The river rises at night. A flash flood watch will be in effect all night.\n\n"
        "The town of Vell sits on the river. Rain is expected all weekend in Vell.\n\n") * 20


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `minillm argv`, argparse's SystemExit included."""
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


# --------------------------------------------------------------------------------------------------
# Help and the README.


@pytest.mark.parametrize("argv, complaint", [
    (["generate", "--ckpt", "nowhere", "hi", "--top-k", "0"], "'0' is not an integer >= 1"),
    (["generate", "--ckpt", "nowhere", "hi", "--temperature", "-0.5"], "'-0.5' is not a temperature"),
    (["chat", "--ckpt", "nowhere", "--temperature", "nan"], "'nan' is not a temperature"),
    (["chat", "--ckpt", "nowhere", "--temperature", "warm"], "'warm' is not a temperature"),
    (["generate", "--ckpt", "nowhere", "hi", "--top-p", "0"], "'0' is not a probability in (0, 1]"),
    (["generate", "--ckpt", "nowhere", "hi", "--top-p", "1.5"], "'1.5' is not a probability in (0, 1]"),
    (["fill-mask", "--ckpt", "nowhere", "a <mask>", "--plot", "chart.txt"], "'chart.txt' is not a file name ending "
                                                                             "in .png"),
    (["compare", "a", "b", "--out", "curves"], "'curves' is not a file name ending in .png"),
    (["generate", "--ckpt", "nowhere", "hi", "--seed", str(2**63)], f"'{2**63}' is not a seed: an integer in [0, "
                                                                    "2**63 - 1]"),
    (["chat", "--ckpt", "nowhere", "--seed", "-1"], "'-1' is not a seed"),
])
def test_a_bad_count_or_temperature_is_refused_before_anything_loads(argv, complaint, capsys):
    code, _, err = run(argv, capsys)
    assert code == 2 and complaint in err


def test_top_level_help_lists_every_command(capsys):
    code, out, _ = run(["--help"], capsys)
    assert code == 0
    for command in COMMANDS:
        assert re.search(rf"^\s+{re.escape(command)}\s+\S", out, re.MULTILINE), command


def test_python_dash_m_minillm_is_the_command():
    result = subprocess.run([sys.executable, "-m", "minillm", "generate", "--ckpt", "nowhere", "hi", "--top-p", "0"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "'0' is not a probability in (0, 1]" in result.stderr


def test_the_command_runs_under_python_dash_oo():
    """`python -OO` (or PYTHONOPTIMIZE=2) strips docstrings: the parser once took its description from
    cli's and every command ended in an AttributeError traceback."""
    result = subprocess.run([sys.executable, "-OO", "-m", "minillm", "--help"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0 and "usage: minillm" in result.stdout, result.stderr


def test_a_help_description_is_the_docstrings_first_line_and_none_without_a_docstring():
    """console.description, of the minillm command and the bench scripts: -OO leaves __doc__ None."""
    assert description("Train a model.\n\nWhat it writes, and why.") == "Train a model."
    assert description(None) is None and description("") is None


@pytest.mark.parametrize("argv", [[c] for c in COMMANDS if c != "tokenizer"]
                         + [["tokenizer"], ["tokenizer", "train"], ["tokenizer", "encode"]])
def test_each_command_has_help(argv, capsys):
    code, out, _ = run([*argv, "--help"], capsys)
    assert code == 0
    assert out.startswith(f"usage: minillm {' '.join(argv)}")
    if argv[0] in TRAINING_COMMANDS:
        for flag in ("--preset", "--set", "--device", "--dtype", "--compile", "--detect-anomaly"):
            assert flag in out


def arguments_without_help(parser: argparse.ArgumentParser, command: str = "minillm") -> list[str]:
    """Every option and positional argument of `parser` and its subcommands whose --help says nothing of it."""
    missing = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                missing += arguments_without_help(sub, f"{command} {name}")
        elif not action.help:
            missing.append(f"{command} {'/'.join(action.option_strings) or action.dest}")
    return missing


def test_every_argument_of_every_command_has_a_help_line():
    """--help is where a user reads the command line first: `--resume` of five stages, annotate's --seed, dpo's
    --sft and --prefs, tokenizer train's --vocab-size and --kind were listed with no word of what they do."""
    assert arguments_without_help(build_parser()) == []


# each training command with the arguments it requires (pretrain's objective: the example's section)
REQUIRED = {"pretrain": ["--out", "x"], "sft": ["--init", "c", "--out", "x"], "reward": ["--sft", "s", "--out", "x"],
            "ppo": ["--sft", "s", "--reward", "r", "--out", "x"], "dpo": ["--sft", "s", "--prefs", "p", "--out", "x"],
            "grpo": ["--sft", "s", "--out", "x"], "pipeline": ["--out", "x"]}


@pytest.mark.parametrize("command", TRAINING_COMMANDS)
def test_the_set_examples_in_a_commands_help_are_settings_it_takes(command, capsys):
    """Every training command's --help once offered `--set clm.model.n_layer=6`, which all but
    pretrain clm and the pipeline refuse: they read only their own section."""
    _, out, _ = run([command, "--help"], capsys)
    examples = re.findall(r"--set ((?:\w+\.)+\w+=\S+?)[),]?(?:\s|$)", " ".join(out.split()))
    assert examples, out
    for example in examples:
        objective = [example.split(".")[0]] if command == "pretrain" else []
        args = build_parser().parse_args([command, *objective, *REQUIRED[command], "--set", example])
        build_config(args)


def _block_commands(text: str) -> list[str]:
    """The `minillm ...` commands of a text's code blocks, comments removed: each line's, and each one
    chained after `&&` (the README's quick start installs, then runs its first pipeline on one line)."""
    blocks = re.findall(r"```(?:bash|sh)?\n(.*?)```", text, re.DOTALL)
    return [command.strip() for block in blocks for line in block.splitlines()
            for command in line.split("  #")[0].split("&&") if command.strip().startswith("minillm ")]


def _readme_commands() -> list[str]:
    """The commands of the README's and the CLI reference's code blocks."""
    return [line for name in ("README.md", "docs/cli.md") for line in _block_commands(_read(name))]


def _read(name: str) -> str:
    """A document's text; of a lesson, its comments, where it quotes commands (a quote may wrap)."""
    text = (REPO / name).read_text(encoding="utf-8")
    if name.endswith(".py"):
        return "\n".join(line.strip().removeprefix("#") for line in text.splitlines() if line.lstrip().startswith("#"))
    return text


def _with_options(line: str) -> str:
    """The command with its [optional] parts included, each `a|b` choice replaced by its first option."""
    return re.sub(r"\[([^\]]+)\]", lambda m: re.sub(r"(\S+?)\|\S+", r"\1", m.group(1)), line)


def test_the_readme_documents_commands_that_parse():
    commands = _readme_commands()
    assert {shlex.split(c)[1] for c in commands} == set(COMMANDS)  # every command has an example
    parser = build_parser()
    for line in commands:
        for variant in (re.sub(r"\s*\[[^\]]+\]", "", line), _with_options(line)):
            args = parser.parse_args(shlex.split(variant)[1:])
            assert callable(args.func), variant


def test_the_cli_reference_names_the_floors_pyproject_promises():
    """docs/cli.md's Versions section names pyproject.toml's floors: a floor raised in one place only
    (matplotlib 3.7.0 cut a wrapped title's top line off the PNG, so the floor is 3.7.1) would tell a
    reader a version works that does not. Read with a regex, as .ci/floor does (3.10 has no tomllib)."""
    dependencies = re.search(r"^dependencies = \[(.*?)\]", _read("pyproject.toml"), re.S | re.M)
    floors = dict(re.findall(r'"([\w.-]+)>=([\w.]+)"', dependencies.group(1)))
    named = re.search(r"names as floors \((.*?)\)", _read("docs/cli.md"), re.S).group(1)
    assert dict(re.findall(r"([\w.-]+) (\d[\w.]*)", named)) == floors


DOCUMENTS = ("README.md", "README.ko.md", "docs/cli.md", "docs/findings.md", "data/README.md",
             *(f"lessons/{path.name}" for path in sorted((REPO / "lessons").glob("*.py"))))
SHOWN_AS_MISTAKES = {"minillm grpo --set grpo_verifiable.group_size=2"}  # docs/cli.md: a section grpo refuses


@pytest.mark.parametrize("name", DOCUMENTS)
def test_every_command_a_document_quotes_parses_and_sets_settings_that_exist(name, capsys):
    """A command in `backticks` (its spaces and line breaks as one space) or a code block, with options
    ("--"): it parses, and a training command's preset and --set values make a valid config, so a
    reader who copies it is not stopped by a renamed flag or setting."""
    text = _read(name)
    spans = [" ".join(span.split()) for span in re.findall(r"(?<!`)`(minillm [^`]+)`", text)]
    commands = [c for c in (*spans, *_block_commands(text)) if "--" in c and c not in SHOWN_AS_MISTAKES]
    parser = build_parser()
    for command in commands:
        for variant in (re.sub(r"\s*\[[^\]]+\]", "", command), _with_options(command)):
            try:
                args = parser.parse_args(shlex.split(variant)[1:])
            except SystemExit as exit_:  # --help exits with 0; a flag argparse refuses, with 2
                assert exit_.code == 0, f"{name}: {variant}\n{capsys.readouterr().err}"
                continue
            if hasattr(args, "preset"):
                args.device = None  # the settings are checked here, not whether this machine has the device
                build_config(args)


SECTIONS = set(dataclasses.asdict(preset("tiny")))  # tokenizer, mlm, clm, sft, ..., and the top-level fields
PLACEHOLDERS = {"path", "경로"}  # `--set path=value`: the syntax, not a setting
_VALUE = r"([^\s`;()]+)"


def _settings_named(text: str) -> list[list[str]]:
    """The "path=value" settings a text tells a reader to try, in groups that apply together: the
    `--set`s of one `code span` (e.g. mask_token_prob=1.0 with random_token_prob=0.0); a span's bare
    `section.field=value`; `CFG.section.field = value` in a lesson; a `--set` outside any span."""
    text = re.sub(r"```.*?```", "", text, flags=re.DOTALL)  # code blocks: their commands are parsed above

    def setting(path: str, value: str) -> str:
        return f"{path}={value.rstrip('.,:').strip(chr(34) + chr(39))}"  # a sentence's full stop, "gold"

    groups, spans = [], re.findall(r"`([^`]+)`", text)
    for span in (" ".join(span.split()) for span in spans):
        sets = re.findall(r"--set ((?:\w+\.)*\w+)=" + _VALUE, span)
        groups.append([setting(p, v) for p, v in sets if p not in PLACEHOLDERS])
        groups += [[setting(p, v)] for p, v in re.findall(r"(?:^|\s)((?:\w+\.)+\w+)=" + _VALUE, span)
                   if p.split(".")[0] in SECTIONS and f"--set {p}=" not in span]  # not a relative train.lr=...
    outside = re.sub(r"`[^`]+`", "", text)
    groups += [[setting(p, v)] for p, v in re.findall(r"--set ((?:\w+\.)*\w+)=" + _VALUE, outside)]
    groups += [[setting(p, v)] for p, v in re.findall(r"\bCFG\.((?:\w+\.)+\w+) ?= ?" + _VALUE, text)]
    return [group for group in groups if group]


@pytest.mark.parametrize("name", DOCUMENTS)
def test_every_setting_a_document_suggests_exists_and_takes_its_value(name):
    """`--set sft.pretrain_mix=0`, `reward.answers_per_prompt=2` or a lesson's "CFG.ppo.kl_coef = 0.5"
    quoted in prose, outside any command the test above parses: a renamed field, or a value the
    field no longer takes, stops the reader who tries it."""
    groups = _settings_named(_read(name))
    for group in groups:
        try:
            apply_overrides(preset("tiny"), group)
        except ConfigError as err:
            pytest.fail(f"{name}: {' '.join(group)}: {err}")


def test_the_settings_a_document_suggests_are_found():
    """The finder above sees each form (so that a test of nothing cannot pass)."""
    text = ("Try `--set mlm.mask_token_prob=1.0 --set mlm.random_token_prob=0.0`, `reward.answers_per_prompt=2`,\n"
            " CFG.ppo.kl_coef = 0.5, then CFG.ppo.reward = \"gold\". Pretrain with --set clm.train.max_steps=50.\n"
            "Not `--set path=value`, nor `train.lr=3e-3` (relative), nor `minillm` alone.")
    assert _settings_named(text) == [
        ["mlm.mask_token_prob=1.0", "mlm.random_token_prob=0.0"], ["reward.answers_per_prompt=2"],
        ["clm.train.max_steps=50"], ["ppo.kl_coef=0.5"], ["ppo.reward=gold"]]
    with pytest.raises(ConfigError, match="has no field 'kl_coeff'"):
        apply_overrides(preset("tiny"), _settings_named("CFG.ppo.kl_coeff = 0.5")[0])


@pytest.mark.parametrize("buffered", [True, False])
def test_a_reader_that_stops_early_is_no_error(untrained_runs, buffered):
    """`minillm tokenizer encode ... | head -c 20`: the pipe is closed before the ids are written. That
    is the reader's choice, not a failure: no error line, and a shell's exit code for it (141).
    Buffered is how a user's pipe behaves (PYTHONUNBUFFERED unset): the ids are still in the buffer when
    the command returns, and the broken pipe comes at the last flush, which once ended in Python's
    "Exception ignored ... BrokenPipeError" and exit code 120; this suite's own environment may set
    PYTHONUNBUFFERED, which hid it, so the test sets it either way."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    if not buffered:
        env["PYTHONUNBUFFERED"] = "1"
    # a short output (all of it still buffered at the end) and a long one (the pipe breaks mid-print, and
    # what is left in the buffer must not fail again as Python exits), both at once: each process spends
    # its seconds importing torch, and a 2-core machine runs two in the time of one
    texts = ("river town " * 100, "Rain in Vell, " * 2000)
    with contextlib.ExitStack() as stack:  # (each Popen closes its pipes and is waited for at the end)
        processes = []
        for text in texts:
            argv = ["tokenizer", "encode", "--tokenizer", str(untrained_runs / "gpt"), text]
            processes.append(stack.enter_context(subprocess.Popen(
                [sys.executable, "-m", "minillm", *argv], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                env=env)))
            processes[-1].stdout.close()  # the reader leaves before the first byte
        for text, process in zip(texts, processes, strict=True):
            err = process.stderr.read().decode()
            assert (process.wait(timeout=120), err) == (141, ""), len(text)


def test_a_stdout_that_is_not_utf8_shows_what_it_cannot_encode_as_escapes(untrained_runs, monkeypatch):
    """On Windows, output sent to a file or a pipe is written in the code page (cp1252: "±" but no Hangul);
    under the C locale with PYTHONUTF8=0 it is ASCII. A model's Korean answer, or the "±" that ppo, dpo and
    grpo print after training, used to end the command there with UnicodeEncodeError. (The stdout Python
    makes of such a file: a text stream of bytes in cp1252, as PYTHONIOENCODING=cp1252 would give.)"""
    stdout = io.TextIOWrapper(io.BytesIO(), encoding="cp1252")
    monkeypatch.setattr(sys, "stdout", stdout)
    assert main(["generate", "--ckpt", str(untrained_runs / "gpt"), "밤 ±", "--max-new-tokens", "2"]) == 0
    stdout.flush()
    assert stdout.buffer.getvalue().startswith(b"\\ubc24 \xb1")  # only what cp1252 lacks is escaped


def test_the_installed_script_runs():
    script = Path(sys.executable).with_name("minillm")
    if not script.is_file():
        pytest.skip("the minillm console script is not installed in this environment")
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0
    assert result.stdout.startswith("usage: minillm")


# --------------------------------------------------------------------------------------------------
# The tokenizer commands, end to end.


def test_tokenizer_train_then_encode(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    tok_path = tmp_path / "tok.json"
    code, out, err = run(["tokenizer", "train", "--input", str(corpus), "--vocab-size", "300",
                          "--out", str(tok_path)], capsys)
    assert code == 0, err
    assert f"trained a bpe tokenizer with 300 ids -> {tok_path}" in out
    tok = load_tokenizer(tok_path)
    assert tok.vocab_size == 300

    docs = [d.strip() for d in TEXT.split("\n\n") if d.strip()]  # what the command trained on, read independently
    ratio = float(re.search(r"tokens per byte on the training text: ([\d.]+)", out).group(1))
    n_tokens, n_bytes = sum(len(tok.encode(d)) for d in docs), sum(len(d.encode("utf-8")) for d in docs)
    assert ratio == pytest.approx(n_tokens / n_bytes, abs=5e-4)
    assert ratio < 1.0  # merges were learnt: fewer tokens than bytes
    # a few merges, all of 2 or 3 bytes: the longest pieces are those, not bytes shown as 4 characters ('\\x80')
    code, out, err = run(["tokenizer", "train", "--input", str(corpus), "--vocab-size", "268",
                          "--out", str(tmp_path / "few.json")], capsys)
    few = load_tokenizer(tmp_path / "few.json")
    shown = re.search(r"some of the longest pieces it learned: (.*)", out).group(1).split(", ")
    [first] = few.encode(ast.literal_eval(shown[0]))  # one id, a learned merge
    merges = range(256, few.vocab_size - len(SPECIAL_TOKENS))
    assert len(few.id_to_bytes(first)) == max(len(few.id_to_bytes(i)) for i in merges)

    sentence = "A flash flood watch in Vell."
    code, out, err = run(["tokenizer", "encode", "--tokenizer", str(tok_path), sentence], capsys)
    assert code == 0, err
    ids = ast.literal_eval(re.search(r"^ids:\s+(\[.*\])$", out, re.MULTILINE).group(1))
    pieces = ast.literal_eval(re.search(r"^pieces:\s+(\[.*\])$", out, re.MULTILINE).group(1))
    assert tok.decode(ids) == sentence
    assert "".join(pieces) == sentence
    assert len(ids) < len(sentence.encode("utf-8"))


def test_tokenizer_train_counts_tokens_document_by_document(tmp_path, capsys, monkeypatch):
    # the whole corpus encoded as one string is split into one Python string per chunk at once:
    # the command peaked at 1.15 GB for a 50 MB corpus, where training itself took 0.58 GB
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    encoded: list[str] = []
    encode = BPETokenizer.encode

    def recording_encode(self, text: str, **kwargs) -> list[int]:
        encoded.append(text)
        return encode(self, text, **kwargs)

    monkeypatch.setattr(BPETokenizer, "encode", recording_encode)
    code, _, err = run(["tokenizer", "train", "--input", str(corpus), "--vocab-size", "300",
                        "--out", str(tmp_path / "tok.json")], capsys)
    assert code == 0, err
    longest_document = max(len(d.strip()) for d in TEXT.split("\n\n"))
    assert encoded and max(map(len, encoded)) <= longest_document


def test_a_folder_is_a_run_folder_to_the_tokenizer_commands(tmp_path, capsys):
    corpus, run_dir = tmp_path / "corpus.txt", tmp_path / "run"
    corpus.write_text(TEXT, encoding="utf-8")
    run_dir.mkdir()
    code, out, err = run(["tokenizer", "train", "--input", str(corpus), "--vocab-size", "300", "--out", str(run_dir)],
                         capsys)
    assert code == 0 and f"-> {run_dir / 'tokenizer.json'}" in out, err
    code, out, err = run(["tokenizer", "encode", "--tokenizer", str(run_dir), "Rain in Vell."], capsys)
    assert code == 0 and out.startswith("ids:"), err
    code, out, err = run(["tokenizer", "encode", "--tokenizer", str(tmp_path), "Rain"], capsys)
    assert code == 2 and f"{tmp_path} is a folder without a tokenizer.json" in err
    new_folder = tmp_path / "new"  # not there yet: a trailing slash says it is a folder, not a file name
    code, out, err = run(["tokenizer", "train", "--input", str(corpus), "--vocab-size", "300",
                          "--out", f"{new_folder}/"], capsys)
    assert code == 0 and (new_folder / "tokenizer.json").is_file(), err


def test_tokenizer_train_on_several_files_with_sentencepiece(tmp_path, capsys):
    files = []
    for i, part in enumerate(TEXT.split("\n\n")[:2]):
        files.append(tmp_path / f"part{i}.txt")
        files[-1].write_text(part * 30, encoding="utf-8")
    out_path = tmp_path / "spm.json"
    code, out, err = run(["tokenizer", "train", "--input", *map(str, files), "--vocab-size", "300",
                          "--kind", "sentencepiece", "--out", str(out_path)], capsys)
    assert code == 0, err
    tok = load_tokenizer(out_path)
    assert type(tok).__name__ == "SentencePieceTokenizer"
    assert tok.decode(tok.encode("Rain in Vell.")) == "Rain in Vell."


# --------------------------------------------------------------------------------------------------
# The configs a command builds: preset, then --set, then the runtime flags on every stage.


def _config(argv: list[str]):
    return build_config(build_parser().parse_args(argv))


COMMANDS_AND_SECTIONS = [(["pretrain", "clm", "--out", "x"], "clm"), (["sft", "--init", "a", "--out", "x"], "sft"),
                         (["reward", "--sft", "a", "--out", "x"], "reward"),
                         (["ppo", "--sft", "a", "--reward", "b", "--out", "x"], "ppo"),
                         (["dpo", "--sft", "a", "--prefs", "p", "--out", "x"], "dpo"),
                         (["grpo", "--sft", "a", "--out", "x"], "grpo")]


@pytest.mark.parametrize("command, overrides", [
    *[(command, [f"{section}.train.max_steps=7", "data_seed=3"]) for command, section in COMMANDS_AND_SECTIONS],
    (["pipeline", "--out", "x"], ["sft.train.max_steps=7", "clm.model.n_layer=2", "data_seed=3"])])
def test_runtime_flags_and_overrides_reach_every_stage(command, overrides):
    cfg = _config([*command, "--preset", "micro", *(f"--set={item}" for item in overrides),
                   "--device", "cpu", "--dtype", "bfloat16", "--compile", "--detect-anomaly"])
    expected = apply_overrides(preset("micro"), overrides)
    assert cfg.data_seed == 3
    for stage in STAGES:
        train = getattr(cfg, stage).train
        assert (train.device, train.dtype, train.compile, train.detect_anomaly) == ("cpu", "bfloat16", True, True)
        unchanged = dataclasses.replace(train, dtype="float32", compile=False, detect_anomaly=False)
        assert unchanged == getattr(expected, stage).train  # nothing else moved
    assert cfg.clm.model == expected.clm.model
    assert cfg.tokenizer == expected.tokenizer


@pytest.mark.parametrize("command, section", COMMANDS_AND_SECTIONS)
def test_a_stage_command_refuses_settings_of_sections_it_never_reads(command, section):
    other = "grpo_verifiable" if section == "grpo" else "mlm"
    with pytest.raises(ConfigError, match=rf"--set {other}.train.lr=1: `minillm {command[0]}` does not read "
                                          rf"the {other} section; it reads .*{section}"):
        _config([*command, "--set", f"{other}.train.lr=1"])


def test_pretrain_reads_the_tokenizer_section_unless_given_a_tokenizer_file():
    assert _config(["pretrain", "mlm", "--out", "x", "--set", "tokenizer.vocab_size=300"]).tokenizer.vocab_size == 300
    with pytest.raises(ConfigError, match="does not read the tokenizer section"):
        _config(["pretrain", "mlm", "--out", "x", "--tokenizer-file", "t.json", "--set", "tokenizer.vocab_size=300"])


def test_pretrain_tokenizer_flag_is_a_setting_checked_with_the_set_ones():
    """Only a sentencepiece tokenizer reads tokenizer.spm_model_type (a --set of it is refused otherwise):
    `--tokenizer sentencepiece` chooses one, and counts when the --set is checked."""
    cfg = _config(["pretrain", "clm", "--out", "x", "--tokenizer", "sentencepiece",
                   "--set", "tokenizer.spm_model_type=unigram"])
    assert (cfg.tokenizer.kind, cfg.tokenizer.spm_model_type) == ("sentencepiece", "unigram")
    # applied after the --set items, as --device is: the flag wins over a --set of the same setting
    assert _config(["pretrain", "clm", "--out", "x", "--set", "tokenizer.kind=bpe", "--tokenizer", "sentencepiece"]
                   ).tokenizer.kind == "sentencepiece"


@pytest.mark.parametrize("device", [["--device", "cuda"], ["--set", "device=cuda"], ["--set", "clm.train.device=cuda"]])
def test_a_device_that_is_not_there_is_refused_when_the_config_is_built(device, monkeypatch):
    """A stage's own device (`--set clm.train.device=cuda`) was refused only when its training began: after
    the corpus was generated and the tokenizer trained (20 s at tiny, on 2 cores)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="CUDA is not available here"):
        _config(["pretrain", "clm", "--out", "x", *device])


@pytest.mark.parametrize("flag", [["--device", "cpu"], ["--set", "device=cpu"]])
def test_device_and_set_device_move_every_stage(flag):
    cfg = _config(["pipeline", "--out", "x", "--preset", "small", *flag])  # the small preset trains on "auto"
    assert cfg.device == "cpu" and {train.device for train in train_configs(cfg)} == {"cpu"}


@pytest.mark.parametrize("argv, gpu, noted", [
    (["pipeline", "--out", "x", "--preset", "small"], False, True),
    (["pretrain", "clm", "--out", "x", "--preset", "small"], False, True),
    (["pipeline", "--out", "x", "--preset", "small"], True, False),
    (["pipeline", "--out", "x", "--preset", "small", "--device", "cpu"], False, False),
    (["pipeline", "--out", "x", "--preset", "tiny", "--device", "auto"], False, False),
])
def test_the_small_preset_says_when_it_finds_no_gpu(argv, gpu, noted, monkeypatch, capsys):
    """Without a GPU, device=auto trained the small preset on the CPU for many hours, and only tqdm's ETA told."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu)
    monkeypatch.setattr("minillm.utils.mps_available", lambda: False)
    _config(argv)
    assert ("sized for one GPU and device=auto finds none" in capsys.readouterr().err) == noted


def test_one_stages_device_stays_its_own():
    cfg = _config(["pipeline", "--out", "x", "--preset", "small", "--set", "clm.train.device=cpu"])
    assert cfg.clm.train.device == "cpu" and cfg.sft.train.device == "auto" and cfg.device == "auto"


def test_the_preset_is_chosen_with_preset_not_set():
    with pytest.raises(ConfigError, match=r"choose it with --preset tiny"):
        _config(["pipeline", "--out", "x", "--preset", "micro", "--set", "preset=tiny"])
    with pytest.raises(ConfigError, match=r"preset='bogus' .*expected one of micro, tiny, small"):
        _config(["pipeline", "--out", "x", "--set", "preset=bogus"])


def test_without_runtime_flags_the_config_is_the_preset_with_its_overrides():
    cfg = _config(["pretrain", "mlm", "--out", "x", "--preset", "tiny", "--set", "mlm.mask_prob=0.2"])
    assert cfg == apply_overrides(preset("tiny"), ["mlm.mask_prob=0.2"])
    assert with_runtime(cfg, None, None, False, False) == cfg


def test_later_flags_win_over_set_for_the_runtime_fields():
    cfg = _config(["pipeline", "--out", "x", "--preset", "micro", "--set", "ppo.train.dtype=float16",
                   "--dtype", "float32"])
    assert cfg.ppo.train.dtype == "float32"


# --------------------------------------------------------------------------------------------------
# The model commands, on hand-built run folders (random weights: the plumbing, not the quality).


def test_fill_mask_prints_a_ranking_and_draws_it(untrained_runs, tmp_path, capsys):
    plot = tmp_path / "ranking.png"
    code, out, err = run(["fill-mask", "--ckpt", str(untrained_runs / "bert"), "Rain all [MASK].", "--top-k", "5",
                          "--plot", str(plot)], capsys)
    assert code == 0, err
    rows = re.findall(r"^\s*(\d+)\. (.+?)\s+([\d.]+)$", out, re.MULTILINE)
    assert [int(rank) for rank, _, _ in rows] == [1, 2, 3, 4, 5]
    probs = [float(p) for _, _, p in rows]
    assert probs == sorted(probs, reverse=True) and sum(probs) <= 1.0 + 1e-3
    assert plot.read_bytes().startswith(b"\x89PNG")


def test_fill_mask_columns_line_up_after_korean_pieces(untrained_runs, capsys, monkeypatch):
    # a Hangul syllable takes two terminal columns: padded by characters, its probability sat further right
    monkeypatch.setattr("minillm.stage1_pretrain.mlm.fill_mask", lambda *a, **k: [("한국", 0.5), ("ab", 0.25)])
    code, out, err = run(["fill-mask", "--ckpt", str(untrained_runs / "bert"), "Rain all [MASK]."], capsys)
    assert code == 0, err
    assert out.splitlines()[:2] == [" 1. '한국'" + " " * 14 + " 0.500",  # 6 columns of text, 14 of padding
                                    " 2. 'ab'" + " " * 16 + " 0.250"]
    assert pad_to_columns("Ａb", 5) == "Ａb  "  # a full-width letter takes two columns too


def test_fill_mask_without_plot_leaves_the_runs_own_chart_alone(untrained_runs, capsys):
    bert = untrained_runs / "bert"
    own = bert / "fill_mask.png"
    own.write_bytes(b"the chart report.md shows")
    code, out, err = run(["fill-mask", "--ckpt", str(bert), "Rain all [MASK].", "--top-k", "3"], capsys)
    assert code == 0, err
    assert own.read_bytes() == b"the chart report.md shows"
    chart = cli.fill_mask_plot_path(str(bert), "Rain all [MASK].")
    assert chart.name.startswith("fill_mask_rain_all_mask_") and chart.read_bytes().startswith(b"\x89PNG")
    assert f"bar chart: {chart}" in out
    assert cli.fill_mask_plot_path(str(bert), "Rain all [MASK]!") != chart  # one chart per sentence
    assert cli.fill_mask_plot_path(str(bert / "ckpt.pt"), "x [MASK]").parent == bert


def test_generate_continues_the_prompt_and_is_repeatable(untrained_runs, capsys):
    argv = ["generate", "--ckpt", str(untrained_runs / "gpt"), "The river", "--max-new-tokens", "5", "--seed", "3"]
    first = run(argv, capsys)
    assert first[0] == 0, first[2]
    assert first[1].startswith("The river")
    assert run(argv, capsys)[1] == first[1]


def test_generate_with_a_tiny_top_p_is_greedy(untrained_runs, capsys):
    """A nucleus of probability 1e-9 holds the likeliest token alone: sampling from it is the argmax."""
    argv = ["generate", "--ckpt", str(untrained_runs / "gpt"), "The river", "--max-new-tokens", "8"]
    greedy = run([*argv, "--temperature", "0"], capsys)
    nucleus = run([*argv, "--top-p", "1e-9", "--temperature", "1.5", "--seed", "4"], capsys)
    sampled = run([*argv, "--temperature", "1.5", "--seed", "4"], capsys)
    assert greedy[0] == nucleus[0] == sampled[0] == 0
    assert nucleus[1] == greedy[1] != sampled[1]


def test_generate_and_chat_help_say_which_runs_answer_questions(capsys):
    """`generate --ckpt` named SFT and PPO runs without a word that their prompt is not wrapped in the
    chat template (a question came back continued, not answered), and `chat --ckpt` had no help."""
    _, generate_help, _ = run(["generate", "--help"], capsys)
    _, chat_help, _ = run(["chat", "--help"], capsys)
    assert "without the chat template" in " ".join(generate_help.split())
    assert "where the model's context window is full" in " ".join(generate_help.split())
    assert "an SFT, PPO, DPO or GRPO run folder" in " ".join(chat_help.split())


def test_a_sentence_longer_than_the_context_is_refused_without_naming_a_cache(untrained_runs, capsys):
    """A BERT has no KV cache, but its refusal read "sequence of N tokens (0 cached + N new)"."""
    code, _, err = run(["fill-mask", "--ckpt", str(untrained_runs / "bert"), "rain " * 40 + "[MASK]."], capsys)
    assert code == 2 and "is longer than the context block_size=32" in err and "cached" not in err


def test_chat_answers_each_line_until_end_of_input(untrained_runs, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("hello\n\nhow is the river?\n"))
    code, out, err = run(["chat", "--ckpt", str(untrained_runs / "gpt"), "--max-new-tokens", "3"], capsys)
    assert code == 0, err
    assert out.count("bot> ") == 2  # the blank line is not a turn


def test_a_line_that_is_not_utf8_does_not_end_the_chat(untrained_runs, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"caf\xe9 latin-1\nhello\n"), encoding="utf-8"))
    code, out, err = run(["chat", "--ckpt", str(untrained_runs / "gpt"), "--max-new-tokens", "3"], capsys)
    assert code == 0 and out.count("bot> ") == 2, err


def test_decomposed_hangul_typed_or_pasted_reaches_the_model_composed(untrained_runs, capsys, monkeypatch):
    # "한빛" as six jamo (a macOS file name) is the same text as two syllables, which the corpus is read as
    nfc, nfd = "\ud55c\ube5b", "\u1112\u1161\u11ab\u1107\u1175\u11be"
    commands = (["generate", "--ckpt", "r"], ["fill-mask", "--ckpt", "r"], ["tokenizer", "encode", "--tokenizer", "t"])
    for command in commands:
        args = build_parser().parse_args([*command, nfd + " [MASK]"])
        assert (args.prompt if command[0] == "generate" else args.text) == nfc + " [MASK]"
    seen = []
    monkeypatch.setattr("minillm.stage2_sft.chat.generate_answers",
                        lambda model, tok, prompts, *a, **k: seen.extend(prompts) or ["ok"])
    monkeypatch.setattr(sys, "stdin", io.StringIO(nfd + "\n"))
    code, _, err = run(["chat", "--ckpt", str(untrained_runs / "gpt"), "--max-new-tokens", "3"], capsys)
    assert code == 0 and seen == [nfc + "\n"], err


class LinesTyped(io.StringIO):
    """stdin for a chat: the lines typed, and what stderr held when the first was read (before any prompt's)."""

    err_before_first_line: str | None = None

    def readline(self, size: int = -1) -> str:
        if self.err_before_first_line is None:
            self.err_before_first_line = sys.stderr.getvalue()  # (capsys's stderr keeps what was written)
        return super().readline(size)


@pytest.mark.parametrize(("saved", "noted"), [({"stage": "clm"}, True), ({"stage": "sft"}, False),
                                              ({"stage": "dpo"}, False), ({"method": "GRPO"}, False), ({}, False)])
def test_chat_with_a_clm_run_notes_once_before_the_first_prompt_that_it_never_saw_the_template(
        untrained_runs, tmp_path, capsys, monkeypatch, saved, noted):
    """A CLM run continued the template's text with no word of why (only --help said it); an SFT, DPO, PPO or
    GRPO run (the online methods' checkpoints name their method, not a stage), or one older than stages, no note."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "tokenizer.json").write_bytes((untrained_runs / "gpt" / "tokenizer.json").read_bytes())
    save_checkpoint(run_dir / "ckpt.pt", {**load_checkpoint(untrained_runs / "gpt" / "ckpt.pt"), **saved})
    stdin = LinesTyped("hello\nhow is the river?\n")
    monkeypatch.setattr(sys, "stdin", stdin)
    code, out, err = run(["chat", "--ckpt", str(run_dir), "--max-new-tokens", "2"], capsys)
    assert code == 0 and out.count("bot> ") == 2, err
    note = (f"minillm: note: {run_dir} is a CLM run, which never saw the chat template: it continues the template's "
            "text instead of answering (chat with an SFT, PPO, DPO or GRPO run for answers)\n")
    assert err == stdin.err_before_first_line == (note if noted else "")


def test_chat_samples_by_its_seed_top_k_and_top_p(untrained_runs, capsys, monkeypatch):
    def answers(*options: str) -> list[str]:
        monkeypatch.setattr(sys, "stdin", io.StringIO("hello\nhow is the river?\n"))
        code, out, err = run(["chat", "--ckpt", str(untrained_runs / "gpt"), "--max-new-tokens", "6", *options],
                             capsys)
        assert code == 0, err
        return re.findall(r"bot> (.*)", out)

    sampled = answers("--temperature", "1.5", "--seed", "1")
    assert answers("--temperature", "1.5", "--seed", "1") == sampled != answers("--temperature", "1.5", "--seed", "2")
    assert answers("--temperature", "1.5", "--top-k", "1") == answers() != sampled  # one token to draw from: greedy
    assert answers("--temperature", "1.5", "--top-p", "1e-9") == answers()  # a nucleus of one token: greedy


def test_chat_commands_are_listed_and_never_sent_to_the_model(untrained_runs, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("hello\n/help\n/reset\nhello\n/nonsense\n/quit\n"))
    code, out, err = run(["chat", "--ckpt", str(untrained_runs / "gpt"), "--max-new-tokens", "3", "--temperature", "1"],
                         capsys)
    assert code == 0, err
    assert out.count("bot> ") == 2  # only the two "hello" lines were prompts
    assert out.count("commands: /help") == 3  # at the start, for /help, and after an unknown command
    assert "unknown command /nonsense" in out and "sampling starts over" in out
    first, second = re.findall(r"bot> (.*)", out)
    assert first == second  # /reset: the same seed again, the same sampled answer


def test_chat_reads_only_the_first_word_of_a_command(untrained_runs, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("  /help\n/quit now\nhello\n"))
    code, out, err = run(["chat", "--ckpt", str(untrained_runs / "gpt"), "--max-new-tokens", "3"], capsys)
    assert code == 0, err
    assert out.count("commands: /help") == 2 and "unknown command" not in out  # " /help" is /help too
    assert out.endswith("bye\n") and "bot> " not in out  # "/quit now" quits; "hello" is never sent


class _Typist(io.TextIOBase):
    """A person at the terminal: types `lines`, one per question, then presses Ctrl-C."""

    def __init__(self, *lines: str) -> None:
        self.lines = list(lines)

    def readable(self) -> bool:
        return True

    def readline(self, size: int = -1) -> str:
        if not self.lines:
            raise KeyboardInterrupt
        return self.lines.pop(0)


def _annotate(runs: Path, prompts: Path, out: Path) -> list[str]:
    return ["annotate", "--policy", str(runs / "gpt"), "--prompts", str(prompts), "--out", str(out),
            "--k", "2", "--max-new-tokens", "2"]


class _TerminalBytes(io.TextIOWrapper):
    """Bytes typed at a terminal (isatty): a person who is asked again after a line that is no ranking."""

    def isatty(self) -> bool:
        return True


def test_a_line_that_is_not_utf8_is_no_ranking_and_annotate_asks_again(untrained_runs, tmp_path, capsys,
                                                                       monkeypatch):
    prompts, out = tmp_path / "prompts.txt", tmp_path / "prefs.jsonl"
    prompts.write_text("how is the river?\n", encoding="utf-8")
    monkeypatch.setattr(sys, "stdin", _TerminalBytes(io.BytesIO(b"caf\xe9\n2 1\n"), encoding="utf-8"))
    code, shown, err = run(_annotate(untrained_runs, prompts, out), capsys)
    assert code == 0, err
    assert "not a ranking" in shown and len(out.read_text(encoding="utf-8").splitlines()) == 1


def test_rankings_from_a_file_stop_at_a_line_that_is_not_one(untrained_runs, tmp_path, capsys, monkeypatch):
    """`< ranks.txt` cannot be asked again: after "2 2" each later line ranked the prompt before its own."""
    prompts, out = tmp_path / "prompts.txt", tmp_path / "prefs.jsonl"
    prompts.write_text("how is the river?\nhow is the sea?\nwhere is Vell?\n", encoding="utf-8")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"2 1\n2 2\n1 2\n"), encoding="utf-8"))
    code, _, err = run(_annotate(untrained_runs, prompts, out), capsys)
    assert (code, err.count("\n")) == (2, 1), err
    assert err.startswith("minillm: error: line 2 of the rankings read from stdin (for prompt 2/3) is not a ranking")
    assert [json.loads(line)["prompt"] for line in out.read_text(encoding="utf-8").splitlines()] == [
        "how is the river?"]


@pytest.mark.parametrize("encoding", ("utf-8", "cp1252"))  # cp1252: Python's on Windows for a redirected stdin
def test_rankings_from_a_file_that_starts_with_a_byte_order_mark_go_to_their_own_prompts(
        encoding, untrained_runs, tmp_path, capsys, monkeypatch):
    """`minillm annotate ... < ranks.txt`, the file saved by a Windows editor with a byte order mark: its first
    ranking was refused ("\ufeff2 1", or "ï»¿2 1" read as cp1252), and each later line went to the prompt
    before its own, with exit code 0."""
    prompts, out = tmp_path / "prompts.txt", tmp_path / "prefs.jsonl"
    prompts.write_text("how is the river?\nhow is the sea?\n", encoding="utf-8")
    ranks = io.TextIOWrapper(io.BytesIO("\ufeff2 1\n1 2\n".encode("utf-8")), encoding=encoding)
    monkeypatch.setattr(sys, "stdin", ranks)
    code, shown, err = run(_annotate(untrained_runs, prompts, out), capsys)
    assert code == 0 and "not a ranking" not in shown, err
    saved = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [(r["prompt"], r["ranking"]) for r in saved] == [("how is the river?", [1, 0]), ("how is the sea?", [0, 1])]


def test_annotate_takes_the_skip_bad_lines_that_its_error_names(untrained_runs, tmp_path, capsys, monkeypatch):
    """A bad line of the --prompts file stops annotate with "--skip-bad-lines on the command line", a
    flag that annotate itself once refused ("unrecognized arguments")."""
    prompts, out = tmp_path / "prompts.jsonl", tmp_path / "prefs.jsonl"
    prompts.write_text('{"prompt": "how is the river?"}\n{"prompt": \n', encoding="utf-8")
    code, _, err = run(_annotate(untrained_runs, prompts, out), capsys)
    assert code == 2 and "prompts.jsonl, line 2" in err and "--skip-bad-lines" in err
    monkeypatch.setattr(sys, "stdin", io.StringIO("2 1\n"))
    code, _, err = run([*_annotate(untrained_runs, prompts, out), "--skip-bad-lines"], capsys)
    assert code == 0 and "minillm: warning:" in err and "skipped 1 bad line(s): line 2" in err, err
    assert json.loads(out.read_text(encoding="utf-8"))["prompt"] == "how is the river?"


@pytest.mark.parametrize("name", ("chat", "annotate"))
def test_a_closed_stdin_is_one_line_before_the_model_loads(name, untrained_runs, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", None)  # `minillm chat <&-`
    code, out, err = run(_model_command(name, untrained_runs, tmp_path), capsys)
    assert (code, out) == (2, "")
    assert f"`minillm {name}` reads what you type from stdin, but stdin is closed" in err


def test_annotate_shows_examples_of_the_answers_on_screen_and_says_when_all_are_ranked(untrained_runs, tmp_path,
                                                                                        capsys, monkeypatch):
    prompts, out = tmp_path / "prompts.txt", tmp_path / "new" / "folder" / "prefs.jsonl"  # made before the question
    prompts.write_text("how is the river?\n", encoding="utf-8")
    monkeypatch.setattr(sys, "stdin", io.StringIO("2 1\n"))
    code, shown, err = run(_annotate(untrained_runs, prompts, out), capsys)
    assert code == 0, err
    assert "ranking, best first (e.g. 2 1; 1=2 for a tie)" in shown  # not "2 1 4 3": there are 2 answers
    # the ranking typed is kept, in the folder made for it
    assert len(out.read_text(encoding="utf-8").splitlines()) == 1
    code, shown, err = run(_annotate(untrained_runs, prompts, out), capsys)
    assert code == 0 and f"all 1 prompt(s) are ranked in {out} already: nothing left to ask" in shown, err


def test_ctrl_c_in_annotate_says_the_rankings_are_kept_and_how_to_go_on(untrained_runs, tmp_path, capsys,
                                                                        monkeypatch):
    prompts, out = tmp_path / "prompts.txt", tmp_path / "prefs.jsonl"
    prompts.write_text("how is the river?\nwhere is Vell?\n", encoding="utf-8")
    monkeypatch.setattr(sys, "stdin", _Typist("2 1\n"))  # one ranking, then Ctrl-C at the second question
    argv = _annotate(untrained_runs, prompts, out)
    code, _, err = run(argv, capsys)
    assert code == 130 and len(out.read_text(encoding="utf-8").splitlines()) == 1
    assert err == (f"minillm: interrupted; the rankings typed so far are kept in {out}. Continue with: "
                   f"{shlex.join(['minillm', *argv])}\n")


def test_a_second_annotate_on_the_same_file_is_refused_while_the_first_runs(untrained_runs, tmp_path, capsys,
                                                                           monkeypatch):
    """Both would ask the prompts the file lacks, and each would append its own rankings of them."""
    prompts, out = tmp_path / "prompts.txt", tmp_path / "prefs.jsonl"
    prompts.write_text("how is the river?\n", encoding="utf-8")
    argv = _annotate(untrained_runs, prompts, out)
    first = subprocess.Popen([sys.executable, "-m", "minillm", *argv], cwd=REPO, text=True, encoding="utf-8",
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        while "=== prompt 1/1 ===" not in first.stdout.readline():  # the first one asks its question
            assert first.poll() is None, "the first session ended before its question"
        monkeypatch.setattr(sys, "stdin", io.StringIO("2 1\n"))
        code, shown, err = run(argv, capsys)
        lock = tmp_path / f"{LOCK_NAME}-prefs.jsonl"
        assert (code, err.count("\n")) == (2, 1) and "=== prompt" not in shown
        assert f"{out} is in use by another minillm process (PID {first.pid})" in err and f"delete {lock}" in err
    finally:
        first.communicate("2 1\n", timeout=120)
    assert first.returncode == 0 and not lock.exists()  # the first one ranked, then let go
    assert len(out.read_text(encoding="utf-8").splitlines()) == 1  # its ranking only


def _model_command(name: str, runs: Path, tmp_path: Path) -> list[str]:
    """A short call of each command that loads a trained model, on the run folders in `runs`."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("how is the river?\n", encoding="utf-8")
    return {"fill-mask": ["fill-mask", "--ckpt", str(runs / "bert"), "Rain all [MASK].",
                          "--plot", str(tmp_path / "p.png")],
            "generate": ["generate", "--ckpt", str(runs / "gpt"), "The river", "--max-new-tokens", "2"],
            "chat": ["chat", "--ckpt", str(runs / "gpt"), "--max-new-tokens", "2"],
            "annotate": ["annotate", "--policy", str(runs / "gpt"), "--prompts", str(prompts),
                         "--out", str(tmp_path / "prefs.jsonl"), "--k", "2", "--max-new-tokens", "2"]}[name]


class _Terminal(io.StringIO):
    """A stdout that says it is a terminal, as a person's is."""
    def isatty(self) -> bool:
        return True


WILD = "calm\x1b[2J\rsea"  # what a byte-level model may write: ESC [2J clears a terminal, \r overwrites the line


@pytest.mark.parametrize("name", ("generate", "chat"))
def test_a_terminal_is_shown_the_models_control_characters_as_escapes(name, untrained_runs, tmp_path, monkeypatch):
    from minillm.stage1_pretrain import clm
    from minillm.stage2_sft import chat

    monkeypatch.setattr(clm, "generate_text", lambda *args, **kwargs: WILD)
    monkeypatch.setattr(chat, "generate_answers", lambda *args, **kwargs: [WILD])
    monkeypatch.setattr(sys, "stdin", io.StringIO("hello\n"))
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    assert main(_model_command(name, untrained_runs, tmp_path)) == 0
    assert "calm\\x1b[2J\\rsea\n" in terminal.getvalue() and not {"\x1b", "\r"} & set(terminal.getvalue())


def test_generate_writes_the_models_exact_text_into_a_file_or_a_pipe(untrained_runs, tmp_path, capsys, monkeypatch):
    from minillm.stage1_pretrain import clm

    monkeypatch.setattr(clm, "generate_text", lambda *args, **kwargs: WILD)
    assert run(_model_command("generate", untrained_runs, tmp_path), capsys)[:2] == (0, WILD + "\n")


def test_generate_without_any_stdout_is_no_error(untrained_runs, tmp_path, monkeypatch):
    """`minillm generate ... >&-` (or pythonw): Python's sys.stdout is None, print writes nowhere, and the
    question whether stdout is a terminal must not end the command with an AttributeError."""
    monkeypatch.setattr(sys, "stdout", None)
    assert main(_model_command("generate", untrained_runs, tmp_path)) == 0


@pytest.mark.parametrize("name", ("fill-mask", "generate", "chat", "annotate"))
def test_the_model_commands_load_the_model_onto_the_device_named(name, untrained_runs, tmp_path, capsys, monkeypatch):
    """--device goes through resolve_device to the checkpoint's map_location (a spy stands in for a GPU:
    it hands back cpu:0, a device no default could give, and loads onto the plain cpu)."""
    import minillm.train.checkpoint as checkpoint
    import minillm.utils as utils

    asked, loaded_to = [], []
    real_load = checkpoint.load_checkpoint
    monkeypatch.setattr(utils, "resolve_device", lambda name: asked.append(name) or torch.device("cpu:0"))
    monkeypatch.setattr(checkpoint, "load_checkpoint",
                        lambda path, map_location="cpu": loaded_to.append(map_location) or real_load(path, "cpu"))
    monkeypatch.setattr(sys, "stdin", io.StringIO("q\n"))
    code, _, err = run([*_model_command(name, untrained_runs, tmp_path), "--device", "auto"], capsys)
    assert code == 0, err
    assert asked == ["auto"] and loaded_to == [torch.device("cpu:0")]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message for a machine without CUDA")
@pytest.mark.parametrize("name", ("fill-mask", "generate", "chat", "annotate"))
def test_the_model_commands_refuse_a_missing_device_in_one_line(name, untrained_runs, tmp_path, capsys):
    code, out, err = run([*_model_command(name, untrained_runs, tmp_path), "--device", "cuda"], capsys)
    assert (code, out) == (2, "")
    assert err == "minillm: error: device='cuda': CUDA is not available here; use --device cpu or auto\n"


# --------------------------------------------------------------------------------------------------
# main's contract: 0 done, 2 a problem with the input, 130 interrupted, a bug keeps its traceback.


def _fake_command(monkeypatch, error: BaseException) -> None:
    def command(args) -> None:
        raise error
    monkeypatch.setattr(cli, "cmd_tokenizer_encode", command)  # build_parser binds the module's function


def test_an_input_error_is_one_line_and_exit_code_2(monkeypatch, capsys):
    _fake_command(monkeypatch, DataError("the file is empty;\n  give it some text"))
    code, out, err = run(["tokenizer", "encode", "--tokenizer", "t", "x"], capsys)
    assert (code, out, err) == (2, "", "minillm: error: the file is empty; give it some text\n")


def test_debug_shows_the_original_exception(monkeypatch):
    _fake_command(monkeypatch, DataError("boom"))
    with pytest.raises(DataError, match="boom"):
        main(["--debug", "tokenizer", "encode", "--tokenizer", "t", "x"])


def test_a_path_that_cannot_be_written_is_one_line(monkeypatch, capsys):
    _fake_command(monkeypatch, PermissionError(13, "Permission denied", "/root/out.json"))
    code, _, err = run(["tokenizer", "encode", "--tokenizer", "t", "x"], capsys)
    assert code == 2
    assert err == "minillm: error: Permission denied: /root/out.json; check the path and its permissions\n"


@pytest.mark.parametrize(("error", "size"), [
    (RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you "
                  "tried to allocate 51539607552 bytes. Error code 12 (Cannot allocate memory)"), "48.00 GiB"),
    (torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.1 "
                            "GiB of which 1.2 GiB is free."), "2.00 GiB"),
    (RuntimeError("MPS backend out of memory (MPS allocated: 17.00 GB, other allocations: 1.00 GB)"), None),
])
def test_memory_running_out_is_one_line_naming_the_size_asked_for(error, size, monkeypatch, capsys):
    """`--set clm.model.n_embd=65536` ended in torch's traceback, from inside nn.Linear's __init__."""
    _fake_command(monkeypatch, error)
    code, out, err = run(["tokenizer", "encode", "--tokenizer", "t", "x"], capsys)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith("minillm: error: out of memory" + (f" (it tried to allocate {size})" if size else "") + ":")


@pytest.mark.parametrize(("argv", "named", "not_named"), [
    (["pretrain", "clm"], ["--set clm.train.grad_accum_steps=K", "lower clm.train.batch_size"], []),
    (["sft", "--init", "a"], ["--set sft.train.grad_accum_steps=K"], []),
    (["ppo", "--sft", "a", "--reward", "b"], ["lower ppo.minibatch_size", "ppo.rollout_batch_size"], ["grad_accum"]),
    (["grpo", "--sft", "a"], ["lower grpo.minibatch_size", "grpo.prompts_per_step"], ["grad_accum", "train.batch"]),
    (["pipeline"], ["SECTION.train.grad_accum_steps=K", "grpo_verifiable, lower minibatch_size"], []),
    (["generate", "--ckpt", "a", "hi"], ["the model or its input does not fit"], ["--set", "grad_accum"]),
])
def test_memory_running_out_names_the_settings_of_the_command_that_ran(argv, named, not_named, monkeypatch,
                                                                       capsys, tmp_path):
    """The settings the line names are the command's own: PPO and GRPO refuse train.grad_accum_steps and
    train.batch_size (their loops read minibatch_size), and `generate` takes no --set at all."""
    def command(args) -> None:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB.")
    monkeypatch.setattr(cli, f"cmd_{argv[0]}", command)  # build_parser binds the module's function
    out = [] if argv[0] == "generate" else ["--out", str(tmp_path / "run")]
    code, _, err = run([*argv, *out], capsys)
    assert code == 2 and err.count("\n") == 1
    assert all(words in err for words in named) and not any(words in err for words in not_named), err


def test_a_runtime_error_that_is_not_memory_is_a_bug_and_keeps_its_traceback(monkeypatch):
    _fake_command(monkeypatch, RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x3 and 5x6)"))
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        main(["tokenizer", "encode", "--tokenizer", "t", "x"])
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # put back by main as the error left it


def test_ctrl_c_exits_130(monkeypatch, capsys):
    _fake_command(monkeypatch, KeyboardInterrupt())
    assert run(["tokenizer", "encode", "--tokenizer", "t", "x"], capsys)[:3] == (130, "", "minillm: interrupted\n")


def send(stop: signal.Signals) -> None:
    """Send `stop`, a Ctrl-C or a SIGTERM, to this thread (a signal sent to the process may go to a thread of
    an earlier test, where no mask holds it). A SIGTERM is sent only where main answers it: left at its
    default, it would end the whole test run."""
    if stop == signal.SIGTERM and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        pytest.fail("main left SIGTERM at its default, which ends the process on the spot, with no word")
    signal.raise_signal(stop)


@pytest.mark.skipif(not HAS_SIGNAL_MASKS, reason="POSIX signals (Windows ends a process at its SIGTERM)")
def test_sigterm_ends_a_command_as_a_ctrl_c_does_with_exit_code_143(monkeypatch, capsys):
    """SIGTERM (`kill`, `timeout`, a scheduler stopping or preempting a job) ended a command on the spot: no
    line, its run folder's lock left behind, its workers not told. It is answered as a Ctrl-C now, with its
    own line and exit 128 + 15, and SIGTERM's default is put back after main."""
    monkeypatch.setattr(cli, "cmd_tokenizer_encode", lambda args: send(signal.SIGTERM))
    assert run(["tokenizer", "encode", "--tokenizer", "t", "x"], capsys) == (143, "", "minillm: stopped by SIGTERM\n")
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


@pytest.mark.skipif(not HAS_SIGNAL_MASKS, reason="POSIX signals (Windows ends a process at its SIGTERM)")
@pytest.mark.parametrize("found", ["ignored", "handled by the caller"])
def test_a_sigterm_that_main_finds_ignored_or_handled_is_left_so(monkeypatch, capsys, found):
    """A command started with SIGTERM ignored (by the program that launched it) was asked not to stop at it;
    a caller of main with a SIGTERM handler of its own (a notebook, a test) keeps it, and it answers."""
    received = []
    handler = signal.SIG_IGN if found == "ignored" else lambda signum, frame: received.append(signum)
    monkeypatch.setattr(cli, "cmd_tokenizer_encode", lambda args: send(signal.SIGTERM))
    before = signal.signal(signal.SIGTERM, handler)
    try:
        assert run(["tokenizer", "encode", "--tokenizer", "t", "x"], capsys) == (0, "", "")
        assert signal.getsignal(signal.SIGTERM) is handler
    finally:
        signal.signal(signal.SIGTERM, before)
    assert received == ([] if found == "ignored" else [signal.SIGTERM])


def test_main_called_from_a_thread_other_than_the_main_one_runs_its_command(monkeypatch, capsys):
    """Only the main thread may set a signal handler: main run from another thread (a notebook's or an
    application's) must leave SIGTERM as it is, not end in signal.signal's ValueError."""
    monkeypatch.setattr(cli, "cmd_tokenizer_encode", lambda args: print("ran"))
    codes = []
    thread = threading.Thread(target=lambda: codes.append(main(["tokenizer", "encode", "--tokenizer", "t", "x"])))
    thread.start()
    thread.join(timeout=60)
    assert codes == [0] and capsys.readouterr().out == "ran\n"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


@pytest.mark.skipif(not HAS_SIGNAL_MASKS, reason="no signal masks (Windows): a Ctrl-C is answered at once")
@pytest.mark.parametrize(("stop", "code", "line"), [(signal.SIGINT, 130, "minillm: interrupted\n"),
                                                    (signal.SIGTERM, 143, "minillm: stopped by SIGTERM\n")])
def test_ctrl_c_or_sigterm_while_main_imports_torch_waits_for_the_import_then_ends_the_command(
        monkeypatch, capsys, stop, code, line):
    """A command's first seconds go to `import torch` (with minillm.utils): a Ctrl-C there printed a page of
    torch's traceback, and one caught there would leave a half-imported torch that crashed the interpreter
    at exit. The Ctrl-C (and a SIGTERM, answered as one) waits for the import's end, then stops the command
    with its one line."""
    import builtins

    real_import, events = builtins.__import__, []

    def stop_during_the_import(name, *args, **kwargs):
        if name != "minillm.utils" or events:
            return real_import(name, *args, **kwargs)
        events.append(stop.name)
        send(stop)  # as the import begins
        module = real_import(name, *args, **kwargs)
        events.append("imported")
        return module

    monkeypatch.setattr(builtins, "__import__", stop_during_the_import)
    _fake_command(monkeypatch, AssertionError(f"the command ran after the {stop.name}"))
    try:
        result = run(["tokenizer", "encode", "--tokenizer", "t", "x"], capsys)
    except KeyboardInterrupt:  # (caught: left alone it would stop the whole test run)
        pytest.fail(f"a {stop.name} during the import of torch escaped main as a KeyboardInterrupt")
    assert result == (code, "", line)
    assert events == [stop.name, "imported"]  # the import went on to its end: no half-imported torch


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="reads which file a descriptor is from /proc")
def test_a_sigterm_while_a_checkpoint_is_written_leaves_the_last_one_whole_and_no_partial_file(tmp_path, capsys,
                                                                                                monkeypatch):
    """SIGTERM (a scheduler stopping or preempting the job) as the second checkpoint's bytes reach the disk:
    the first stays, whole and named in the line a Ctrl-C gives, with the command that continues, and the
    half-written file is deleted (SIGTERM's default left it, and the lock, for the next run)."""
    out = tmp_path / "run"
    argv = ["pretrain", "clm", "--preset", "micro", "--set", "clm.train.save_every=4", "--out", str(out)]
    fsync, writes = os.fsync, []

    def fsync_then_sigterm(fd: int) -> None:
        fsync(fd)
        if ".ckpt.pt." in os.readlink(f"/proc/self/fd/{fd}"):  # a checkpoint's temporary file
            writes.append(fd)
            if len(writes) == 2:
                send(signal.SIGTERM)

    monkeypatch.setattr(os, "fsync", fsync_then_sigterm)
    code, _, err = run(argv, capsys)
    assert code == 143, err[-2000:]
    assert err.splitlines()[-1] == (f"minillm: stopped by SIGTERM; last saved at step 4 ({out / 'ckpt.pt'}). "
                                    f"Continue with: {shlex.join(['minillm', *argv, '--resume'])}")
    assert sorted(path.name for path in out.iterdir() if path.name.startswith(".")) == [RUN_MARK_NAME]  # no lock
    assert load_checkpoint(out / "ckpt.pt")["step"] == 4


@pytest.mark.parametrize(("fd", "name"), [(1, "stdout"), (2, "stderr")])
def test_a_stream_a_caller_of_main_set_to_none_is_discarded_and_its_descriptor_left_alone(monkeypatch, capfd, fd,
                                                                                         name):
    """main stands /dev/null in for a stdout or stderr closed at the start, at its descriptor. A caller that
    set the stream to None over a descriptor still open (a test, a script silencing main) must keep that
    descriptor: /dev/null put there swallowed all its process wrote afterwards (`pytest -s` lost its report)."""
    monkeypatch.setattr(cli, "cmd_tokenizer_encode", lambda args: print("discarded", file=getattr(sys, name)))
    before, saved = os.fstat(fd), os.dup(fd)
    monkeypatch.setattr(sys, name, None)
    try:
        assert main(["tokenizer", "encode", "--tokenizer", "t", "x"]) == 0
        after = os.fstat(fd)
    finally:
        os.dup2(saved, fd)  # (the descriptor back for the rest of the run, had main replaced it)
        os.close(saved)
    assert (after.st_dev, after.st_ino) == (before.st_dev, before.st_ino)
    assert "discarded" not in "".join(capfd.readouterr())


def test_reward_keeps_the_rankings_it_finds_in_its_folder_and_says_how_to_make_new_ones(monkeypatch, capsys, tmp_path):
    from minillm.stage3_rlhf import preferences, reward_model

    (tmp_path / "prefs.jsonl").write_text("ranked by hand\n", encoding="utf-8")
    collected, trained_on = [], []
    monkeypatch.setattr(preferences, "collect_rankings", lambda *args: collected.append(args))
    monkeypatch.setattr(reward_model, "train_reward_model",
                        lambda cfg, sft, prefs, out, **kw: trained_on.append(prefs) or {"pairwise_accuracy": 0.5})
    code, out, err = run(["reward", "--sft", "s", "--preset", "micro", "--out", str(tmp_path)], capsys)
    assert code == 0 and collected == [] and trained_on == [str(tmp_path / "prefs.jsonl")], err
    assert f"using the rankings already in {tmp_path / 'prefs.jsonl'}, whatever settings made them (delete it" in out
    assert (tmp_path / "prefs.jsonl").read_text(encoding="utf-8") == "ranked by hand\n"


def test_reward_prints_the_ceiling_its_accuracy_is_read_against(monkeypatch, capsys, tmp_path):
    """Lesson 6's Try 1 says the ceiling (agreement with gold) falls with a noisier annotator: the command
    prints it, not only the annotator's agreement with itself, which a reader took for the ceiling."""
    from minillm.stage3_rlhf import preferences, reward_model

    result = {"pairwise_accuracy": 0.79, "gold_agreement": 0.86, "annotator_agreement": 0.78}
    monkeypatch.setattr(preferences, "collect_rankings", lambda *args: None)
    monkeypatch.setattr(reward_model, "train_reward_model", lambda *args, **kw: result)
    code, out, err = run(["reward", "--sft", "s", "--preset", "micro", "--out", str(tmp_path)], capsys)
    assert code == 0, err
    assert "pairwise_accuracy: 0.79\ngold_agreement: 0.86\nannotator_agreement: 0.78\n" in out


def test_reward_says_why_rankings_of_your_own_have_no_ceiling(monkeypatch, capsys, tmp_path):
    """Rankings written by hand, whose ids name no instruction record, have no gold judge to agree with:
    the command printed "gold_agreement: nan" and "annotator_agreement: nan" without a word of why.
    Not measured, they are None (written null: a strict JSON parser refuses NaN)."""
    from minillm.stage3_rlhf import reward_model

    (tmp_path / "prefs.jsonl").write_text("ranked by hand\n", encoding="utf-8")
    result = {"pairwise_accuracy": 0.74, "gold_agreement": None, "annotator_agreement": None}
    monkeypatch.setattr(reward_model, "train_reward_model", lambda *args, **kw: result)
    code, out, err = run(["reward", "--sft", "s", "--preset", "micro", "--out", str(tmp_path)], capsys)
    assert code == 0, err
    assert ("gold_agreement: None\nannotator_agreement: None\n(the agreements are not measured: no ranking's id names "
            "a record of the instruction file, so the gold judge has no reference to score the answers by;") in out


def test_under_torchrun_reward_collects_its_rankings_on_rank_0_alone(monkeypatch, capsys, tmp_path):
    """Rank 1 sampled and wrote the same prefs.jsonl beside rank 0, outside the lock. (The torchrun test of
    test_distributed.py passes without the check too: both ranks find no file, and neither says so.)"""
    from minillm.stage3_rlhf import preferences, reward_model
    from minillm.train import distributed

    collected = []
    monkeypatch.setattr(preferences, "collect_rankings", lambda *args: collected.append(args))
    monkeypatch.setattr(reward_model, "train_reward_model", lambda *args, **kw: {})
    monkeypatch.setattr(distributed, "rank_zero_first", lambda device: None)  # no group here to wait in
    monkeypatch.setenv("WORLD_SIZE", "2")
    for rank in ("1", "0"):
        monkeypatch.setenv("RANK", rank)
        code, _, err = run(["reward", "--sft", "s", "--preset", "micro", "--out", str(tmp_path / "rm")], capsys)
        assert code == 0, err
    assert len(collected) == 1


def sft_run_that_learnt(folder: Path, instructions: Path) -> list[dict]:
    """An SFT run folder whose config.json records that it learnt the file `instructions`, as `minillm sft --data`
    records it (the record alone: the tests that use it stop the stage before it loads a model); the file's records."""
    from minillm.datasets.instructions import INSTRUCTIONS, instructions_record, read_jsonl

    records = read_jsonl(instructions)
    folder.mkdir()
    config = {"run": {}, INSTRUCTIONS: instructions_record(records, instructions, data_seed=0)}
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return records


def instruction_file(path: Path, answer: str = "4") -> Path:
    """A small instruction file of a learner's own: two training records and a test record."""
    records = [{"prompt": "2 + 2?", "response": answer}, {"prompt": "3 + 3?", "response": "6"},
               {"prompt": "1 + 1?", "response": "2", "split": "test_seen"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def stop_at_training(monkeypatch, command: str) -> list:
    """Stub `command`'s training function (reward, ppo, dpo or grpo) with one that keeps the instruction records
    it is given, in the list returned, and stops the command there (exit code 2, "stopped before training")."""
    module, function = {"reward": ("reward_model", "train_reward_model"), "ppo": ("ppo", "train_ppo"),
                        "dpo": ("dpo", "train_dpo"), "grpo": ("grpo", "train_grpo")}[command]
    given = []

    def train(*args, **kwargs):
        given.append(kwargs["records"] if "records" in kwargs else args[-2])  # (each takes them before --out)
        raise DataError("stopped before training")

    monkeypatch.setattr(f"minillm.stage3_rlhf.{module}.{function}", train)
    return given


STAGE_ARGS = {"reward": ["--prefs", "p.jsonl"], "ppo": ["--reward", "rm"], "dpo": ["--prefs", "p.jsonl"], "grpo": []}


@pytest.mark.parametrize("command", STAGE_ARGS)
def test_a_stage_after_sft_reads_the_instructions_sft_learnt_when_given_no_data(command, monkeypatch, capsys, tmp_path):
    """`minillm sft --data mine.jsonl`, then `minillm ppo --sft runs/sft` without --data: the stage read the
    generated suite, prompts of a world the SFT model never learnt, and nothing said so."""
    sft, mine = tmp_path / "sft", instruction_file(tmp_path / "mine.jsonl")
    learnt = sft_run_that_learnt(sft, mine)
    given = stop_at_training(monkeypatch, command)
    code, out, err = run([command, "--sft", str(sft), *STAGE_ARGS[command], "--preset", "micro",
                          "--out", str(tmp_path / "out")], capsys)
    assert (code, err) == (2, "minillm: error: stopped before training\n")  # and no warning
    assert given == [learnt]
    assert out == f"note: reading the instructions in {mine}, which {sft} learnt (--data reads others)\n"


def test_a_stage_after_sft_warns_of_other_instructions_and_stops_where_the_file_it_learnt_is_gone(
        monkeypatch, capsys, tmp_path):
    from minillm.stage2_sft.learnt import other_instructions

    sft, mine = tmp_path / "sft", instruction_file(tmp_path / "mine.jsonl")
    sft_run_that_learnt(sft, mine)
    given = stop_at_training(monkeypatch, "ppo")
    ppo = ["ppo", "--sft", str(sft), "--reward", "rm", "--preset", "micro", "--out", str(tmp_path / "out")]
    other = instruction_file(tmp_path / "other.jsonl", answer="four")
    code, out, err = run([*ppo, "--data", str(other)], capsys)
    assert out == "" and given[-1][0]["response"] == "four"
    assert err.splitlines() == [
        f"minillm: warning: {sft} learnt the instructions in {mine}, but this run reads the instructions in {other}, "
        f"so its prompts are not all those SFT learnt; pass --data {mine} to read those",
        "minillm: error: stopped before training"]
    instruction_file(mine, answer="four")  # the file SFT learnt, edited since
    code, out, err = run(ppo, capsys)
    assert err.startswith(f"minillm: warning: {mine} has changed since {sft} learnt it (sha256 ")
    assert "so its prompts are not all those SFT learnt; restore the file, or train SFT again on it\n" in err
    mine.unlink()
    code, out, err = run(ppo, capsys)
    assert (code, out) == (2, "") and err == (
        f"minillm: error: {sft} learnt the instructions in {mine}, which is not there now: pass --data with that "
        "file (moved?), or with the instructions this run should read\n")
    (sft / "config.json").write_text(json.dumps({"run": {}}), encoding="utf-8")  # made before the record existed
    code, out, err = run([*ppo, "--data", str(other)], capsys)
    assert (out, err) == ("", "minillm: error: stopped before training\n")  # what it learnt is unknown: no word
    suite = {"file": None, "data_seed": 0, "sha256": "41d7" * 16}  # and a run on the generated suite:
    assert other_instructions("sft", suite, {**suite, "data_seed": 3, "sha256": "0" * 64}) == (
        "sft learnt the generated suite (data_seed 0), but this run reads the generated suite (data_seed 3), so its "
        "prompts are not all those SFT learnt; pass --set data_seed=0 to read those")  # (no --data to leave out)
    file = {"file": str(other), "data_seed": 0, "sha256": "0" * 64}  # (a file's record holds the run's data_seed)
    assert other_instructions("sft", suite, file).endswith(  # (its data_seed is the suite's already)
        "not all those SFT learnt; leave out --data to read those")
    assert other_instructions("sft", suite, {**file, "data_seed": 3}).endswith(
        "not all those SFT learnt; leave out --data and pass --set data_seed=0 to read those")
    assert other_instructions("sft", {**file, "file": str(mine)}, suite).endswith(  # (the suite's seed: none of its)
        f"not all those SFT learnt; pass --data {mine} to read those")
    assert other_instructions("sft", suite, {**suite, "sha256": "0" * 64}) == (  # after an upgrade
        "sft learnt the generated suite (data_seed 0) as another version of minillm generated it, so its prompts are "
        "not all those SFT learnt; train SFT again with this version")


def test_sft_records_the_file_it_learnt_for_the_stages_after_it(monkeypatch, capsys, tmp_path):
    from minillm.datasets.instructions import read_jsonl
    from minillm.stage2_sft import evaluate

    mine = instruction_file(tmp_path / "mine.jsonl")
    recorded = []
    monkeypatch.setattr(evaluate, "run_sft_with_baselines", lambda *args, **kw: recorded.append(kw["instructions"]))
    monkeypatch.chdir(tmp_path)  # a path relative to the folder the command runs in
    code, _, err = run(["sft", "--init", "clm", "--data", "mine.jsonl", "--preset", "micro", "--out", "sft"], capsys)
    assert code == 0, err
    assert recorded == [{"file": str(mine), "data_seed": 0, "sha256": json_sha256(read_jsonl(mine), sort_keys=True)}]


def test_pretraining_and_an_sft_run_that_replays_record_the_corpus_they_read(monkeypatch, capsys, tmp_path):
    """What `minillm pretrain` and `minillm sft --corpus` pass their runs to record (datasets/run_data.py): the
    file by its absolute path, given relative to the folder the command runs in, and the hash of both its
    splits, training and validation documents, as corpus_splits makes them (the validation text is read too)."""
    from minillm.datasets import corpus_splits
    from minillm.stage1_pretrain import clm
    from minillm.stage2_sft import evaluate

    (tmp_path / "mine.txt").write_text("One document.\n\nAnother one.\n\nA third.\n", encoding="utf-8")
    instruction_file(tmp_path / "mine.jsonl")
    recorded = []
    monkeypatch.setattr(cli, "_tokenizer_for", lambda *args: None)  # (no tokenizer to train: the record alone)
    monkeypatch.setattr(clm, "train_clm", lambda *args, **kw: recorded.append(kw["corpus"]) or {})
    monkeypatch.setattr(evaluate, "run_sft_with_baselines", lambda *args, **kw: recorded.append(kw["corpus"]))
    monkeypatch.chdir(tmp_path)
    for argv in (["pretrain", "clm", "--out", "clm"],
                 ["sft", "--init", "clm", "--data", "mine.jsonl", "--set", "sft.pretrain_mix=0.1", "--out", "sft"]):
        code, _, err = run([*argv, "--corpus", "mine.txt", "--preset", "micro"], capsys)
        assert code == 0, err
    splits = corpus_splits(preset("micro"), tmp_path / "mine.txt")
    assert recorded == [{"file": str(tmp_path / "mine.txt"), "corpus_mb": preset("micro").corpus_mb, "data_seed": 0,
                         "val_fraction": 0.05, "sha256": json_sha256(splits)}] * 2  # (corpus_mb: the setting in effect)


def test_resume_into_a_folder_without_a_checkpoint_says_it_starts_anew(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(cli, "cmd_pretrain", lambda args: None)
    code, _, err = run(["pretrain", "clm", "--preset", "micro", "--out", str(tmp_path / "typo"), "--resume"], capsys)
    assert code == 0
    assert err == f"minillm: nothing to resume in {tmp_path / 'typo'} (no checkpoint): starting a new run\n"
    save_checkpoint(tmp_path / "run" / "ckpt.pt", {"step": 3})
    (tmp_path / "run" / RUN_MARK_NAME).touch()  # the run that saved it marked its folder
    assert run(["pretrain", "clm", "--preset", "micro", "--out", str(tmp_path / "run"), "--resume"], capsys)[2] == ""


def test_ctrl_c_says_which_step_is_saved_and_how_to_go_on(monkeypatch, capsys, tmp_path):
    def interrupted_training(args) -> None:
        save_checkpoint(Path(args.out) / "ckpt.pt", {"step": 40})
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_pretrain", interrupted_training)
    argv = ["pretrain", "clm", "--preset", "micro", "--out", str(tmp_path / "my run")]
    code, _, err = run(argv, capsys)
    assert code == 130
    assert err == (f"minillm: interrupted; last saved at step 40 ({tmp_path / 'my run' / 'ckpt.pt'}). Continue with: "
                   f"minillm pretrain clm --preset micro --out '{tmp_path / 'my run'}' --resume\n")
    assert not (tmp_path / "my run" / ".minillm.lock").exists()  # Ctrl-C lets go of the folder too
    code, _, err = run([*argv, "--resume"], capsys)  # interrupted again: the same command goes on, once more
    assert code == 130 and err.endswith(f"Continue with: minillm pretrain clm --preset micro --out "
                                        f"'{tmp_path / 'my run'}' --resume\n")

    def interrupted_at_once(args) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_pipeline", interrupted_at_once)
    code, _, err = run(["pipeline", "--force", "--out", str(tmp_path / "p")], capsys)
    assert code == 130 and err == ("minillm: interrupted; no checkpoint saved yet; finished steps are kept. "
                                   f"Continue with: minillm pipeline --out {tmp_path / 'p'}\n")  # (without --force)


def test_a_full_disk_is_one_line_naming_the_file_and_how_to_go_on(monkeypatch, capsys, tmp_path):
    """A write the disk refused ended the run with "[Errno 28] No space left on device", or with "File too
    large: ...; check the path and its permissions", which sends the user to the wrong fix."""
    metrics = tmp_path / "run" / "metrics.jsonl"

    def disk_full(args) -> None:
        save_checkpoint(Path(args.out) / "ckpt.pt", {"step": 40})
        raise OSError(errno.ENOSPC, "No space left on device", str(metrics))

    monkeypatch.setattr(cli, "cmd_pretrain", disk_full)
    code, out, err = run(["pretrain", "clm", "--preset", "micro", "--out", str(tmp_path / "run")], capsys)
    assert (code, out) == (2, "")
    assert err == (f"minillm: error: could not write {metrics} (No space left on device): the disk is full or a "
                   "file-size limit was hit; free some space (or raise the limit) and run the command again; last "
                   f"saved at step 40 ({tmp_path / 'run' / 'ckpt.pt'}). Continue with: minillm pretrain clm --preset "
                   f"micro --out {tmp_path / 'run'} --resume\n")


def test_ctrl_c_under_torchrun_is_said_once_and_names_the_torchrun_launch(monkeypatch, capsys, tmp_path):
    """torchrun passes a Ctrl-C to every rank: each printed the interrupted line, with a hint to go on
    with one process, whose resume is not bit-exact with dropout (another number of processes)."""
    def interrupted_training(args) -> None:
        save_checkpoint(Path(args.out) / "ckpt.pt", {"step": 40})
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_pretrain", interrupted_training)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert run(["pretrain", "clm", "--preset", "micro", "--out", str(tmp_path / "rank1")], capsys)[0::2] == (130, "")
    monkeypatch.setenv("RANK", "0")  # (in a folder of its own: rank 1 marks no folder as a run)
    code, _, err = run(["pretrain", "clm", "--preset", "micro", "--out", str(tmp_path / "run")], capsys)
    assert code == 130 and err.endswith("Continue with the same torchrun launch, of: minillm pretrain clm --preset "
                                        f"micro --out {tmp_path / 'run'} --resume\n"), err


def test_ctrl_c_while_torch_is_being_imported_still_exits_130_with_the_command_that_goes_on(
        monkeypatch, capsys, tmp_path):
    """A Ctrl-C in a run's first second lands in `import torch` and leaves torch half-imported: the
    hint's own import of the checkpoint module then failed (AttributeError: partially initialized
    module 'torch'), so the run ended in a traceback with exit code 1, not 130 and one line. So may
    main's import of the module that tells a torchrun rank (_torchrun_rank), before the hint's."""
    import builtins

    real_import = builtins.__import__

    def half_imported_torch(name, *args, **kwargs):
        if name in ("minillm.train.checkpoint", "minillm.train.distributed"):
            raise AttributeError("partially initialized module 'torch' has no attribute 'fx'")
        return real_import(name, *args, **kwargs)

    def interrupted_while_importing(args) -> None:
        monkeypatch.setattr(builtins, "__import__", half_imported_torch)
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_pretrain", interrupted_while_importing)
    out = tmp_path / "run"
    code, _, err = run(["pretrain", "clm", "--preset", "micro", "--out", str(out)], capsys)
    assert (code, err) == (130, "minillm: interrupted; stopped before training began. Continue with: "
                                f"minillm pretrain clm --preset micro --out {out} --resume\n")
    assert not out.exists()  # nothing written, the lock let go


def test_ctrl_c_before_the_running_step_saved_names_no_finished_steps_checkpoint(monkeypatch, capsys, tmp_path):
    out = tmp_path / "p"

    def interrupted_pipeline(args) -> None:
        save_checkpoint(out / "03_clm" / "ckpt.pt", {"step": 10})
        # a finished step, its checkpoint the newest
        (out / "03_clm" / "result.json").write_text("{}", encoding="utf-8")
        (out / "04_sft").mkdir()  # the running step, which has saved nothing yet
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_pipeline", interrupted_pipeline)
    code, _, err = run(["pipeline", "--out", str(out)], capsys)
    assert code == 130 and err == ("minillm: interrupted; no checkpoint saved yet; finished steps are kept. "
                                   f"Continue with: minillm pipeline --out {out}\n")


def test_under_torchrun_only_rank_0_holds_the_run_folders_lock(monkeypatch, capsys, tmp_path):
    """Ranks 1, 2, ... write no files; rank 0 holds the lock (a live process other than this one stands
    in for it), and the other ranks of the same run must not be refused by it."""
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / LOCK_NAME).write_text(f"{os.getppid()}\n", encoding="utf-8")
    monkeypatch.setattr(cli, "cmd_pretrain", lambda args: None)
    argv = ["pretrain", "clm", "--preset", "micro", "--out", str(tmp_path / "run")]
    monkeypatch.setenv("WORLD_SIZE", "2")  # (as torchrun sets it)
    monkeypatch.setenv("RANK", "1")
    assert run(argv, capsys)[0] == 0
    monkeypatch.setenv("RANK", "0")
    code, _, err = run(argv, capsys)
    assert code == 2 and f"in use by another minillm process (PID {os.getppid()})" in err


def test_an_out_that_is_a_file_is_named_a_file(capsys, tmp_path):
    err = FileExistsError(17, "File exists", str(tmp_path / "x"))
    assert one_line(err) == f"{tmp_path / 'x'} (or a folder above it) is a file, not a folder; give a folder path"


def test_ppo_and_dpo_print_each_number_with_its_standard_error():
    from minillm.stage3_rlhf.annotator import win_rate_text

    result = {"win_rate_vs_sft": 0.6512, "win_rate_stderr": 0.0341, "gold_sft": -0.14166666666666666,
              "gold_sft_stderr": 0.05, "gold_after": 0.25, "gold_after_stderr": 0.049}
    assert cli.comparison_lines(result, "PPO") == ("win rate vs SFT (gold judge): 0.651 ± 0.034\n"
                                                   "mean gold score: SFT -0.142 ± 0.050 -> PPO 0.250 ± 0.049")
    for none in (None, float("nan")):  # --set ppo.eval_prompts=1: no spread to measure (NaN: a run made before)
        one_prompt = {**result, "win_rate_stderr": none, "gold_sft_stderr": none, "gold_after_stderr": none}
        lines = cli.comparison_lines(one_prompt, "PPO")
        assert "nan" not in lines and "None" not in lines
        assert lines.startswith("win rate vs SFT (gold judge): 0.651 ± n/a (1 prompt)\n")
    assert win_rate_text({"win_rate_vs_sft": 0.6512}) == "0.651"  # the report's, of a run made before the errors


def test_a_bug_keeps_its_traceback(monkeypatch):
    _fake_command(monkeypatch, ZeroDivisionError("a bug in minillm"))
    with pytest.raises(ZeroDivisionError):
        main(["tokenizer", "encode", "--tokenizer", "t", "x"])


def test_warnings_are_one_plain_line(monkeypatch, capsys):
    def command(args) -> None:
        warnings.warn("skipped 2 bad line(s): line 3: invalid JSON", stacklevel=1)
    monkeypatch.setattr(cli, "cmd_tokenizer_encode", command)
    code, _, err = run(["tokenizer", "encode", "--tokenizer", "t", "x"], capsys)
    assert (code, err) == (0, "minillm: warning: skipped 2 bad line(s): line 3: invalid JSON\n")


def test_ctrl_c_in_a_pipeline_names_the_newest_readable_checkpoint_of_the_running_step(monkeypatch, capsys, tmp_path):
    out = tmp_path / "p"

    def interrupted_pipeline(args) -> None:
        finished, running, damaged = out / "03_clm" / "ckpt.pt", out / "04_sft" / "ckpt.pt", out / "05_x" / "ckpt.pt"
        save_checkpoint(finished, {"step": 10})
        (out / "03_clm" / "result.json").write_text("{}", encoding="utf-8")  # a finished step
        save_checkpoint(running, {"step": 7})  # the step that was running
        damaged.parent.mkdir()
        damaged.write_bytes(b"not a checkpoint")  # newest, unreadable: skipped
        for i, path in enumerate((finished, running, damaged)):
            import os
            os.utime(path, (1_000_000 + i, 1_000_000 + i))
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_pipeline", interrupted_pipeline)
    code, _, err = run(["pipeline", "--out", str(out)], capsys)
    assert code == 130
    assert f"interrupted; last saved at step 7 ({out / '04_sft' / 'ckpt.pt'}); finished steps are kept." in err


def test_a_full_disk_that_names_no_file_keeps_the_systems_own_words(monkeypatch, capsys, tmp_path):
    """A write that no `writing` wrapped refuses with an OSError that names no file: the line must not
    claim "could not write None", nor tell the user to resume from a file that was never named."""
    def disk_full(args) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cli, "cmd_pretrain", disk_full)
    code, _, err = run(["pretrain", "clm", "--preset", "micro", "--out", str(tmp_path / "run")], capsys)
    assert (code, err) == (2, "minillm: error: [Errno 28] No space left on device\n")


def _text_arguments(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """Every argument of every command of `parser` that takes a value (no flag, no fixed choices)."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found += [a for sub in action.choices.values() for a in _text_arguments(sub)]
        elif action.nargs != 0 and action.choices is None:
            found.append(action)
    return found


def test_a_path_given_with_a_home_folder_tilde_is_the_home_folder(monkeypatch, tmp_path, capsys):
    """The shell expands `~` only at a word's start: `--out=~/tok.json` (or a quoted "~/tok.json") wrote into a
    folder named `~` of the current one."""
    home, here = tmp_path / "home", tmp_path / "here"
    home.mkdir()
    here.mkdir()
    (home / "corpus.txt").write_text("A flash flood watch is in effect.\n\nThe Misk runs by Gundby.\n")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(here)
    code, _, err = run(["tokenizer", "train", "--input=~/corpus.txt", "--vocab-size", "270", "--out=~/tok.json"],
                       capsys)
    assert code == 0, err
    assert (home / "tok.json").is_file() and list(here.iterdir()) == []
    compare = build_parser().parse_args(["compare", "~/a", "--out", "~/curves.png"])
    assert compare.runs == [str(home / "a")] and compare.out == str(home / "curves.png")


@pytest.mark.parametrize("argv", [["chat", "--ckpt", ""], ["sft", "--init", "nowhere", "--out", " "],
                                  ["compare", "a", "b", "--out", ""], ["compare", "a", ""]])
def test_a_blank_path_is_refused_not_read_as_the_current_folder(argv, tmp_path, monkeypatch, capsys):
    """`--out ""` (an unset shell variable: --out "$RUN") was the current folder, reported as "--out ."; every path
    argument is read by console.path_arg (the test below), which refuses it before anything loads or is written."""
    monkeypatch.chdir(tmp_path)
    code, out, err = run(argv, capsys)
    refusal = f"{argv[-1]!r} is a blank path (a shell variable never set?): give a file or folder, '.' for the current"
    assert code == 2 and out == "" and refusal in err and list(tmp_path.iterdir()) == []


def test_every_argument_that_takes_text_is_a_path_unless_named_here():
    """A new file or folder argument takes the type that expands `~` (console.path_arg, or _png_file, built on it)."""
    plain = {action.dest for action in _text_arguments(build_parser()) if action.type is None}
    assert plain == {"set", "device"}


def test_pretrain_mlm_prints_its_accuracies_and_the_sentence_its_top_5_fills(monkeypatch, capsys, tmp_path):
    """What `pretrain mlm` prints of train_mlm's result (faked: its keys, made-up values). The top 5 was
    printed without the sentence whose [MASK] it fills, a ranking of pieces for no blank a reader could see,
    and a figure with every digit of its float."""
    from minillm.stage1_pretrain import mlm
    from minillm.stage1_pretrain.data import SUBSET_NOTE

    result = {"val_masked_loss": 2.5, "val_masked_accuracy": 0.5021682567215958, "unigram_masked_accuracy": 0.082,
              "val_masked_positions": 900, "fill_mask_prompt": "Rain is expected all [MASK].",
              "fill_mask_top5": [[" weekend", 0.0866], [" night", 0.0784]], "unigram_prediction": " the",
              "unigram_masked_loss": 5.1, "train_tokens": 1000, "steps": 30, "final_train_loss": 2.4}
    (tmp_path / "mine.txt").write_text(TEXT, encoding="utf-8")
    monkeypatch.setattr(cli, "_tokenizer_for", lambda *args: None)  # (no tokenizer to train: the printing alone)
    monkeypatch.setattr(mlm, "train_mlm", lambda *args, **kw: result)
    code, out, err = run(["pretrain", "mlm", "--corpus", str(tmp_path / "mine.txt"), "--preset", "micro",
                          "--out", str(tmp_path / "mlm")], capsys)
    assert (code, err) == (0, "")
    assert out == ("val_masked_accuracy: 0.5022\nunigram_masked_accuracy: 0.082\n"  # 4 significant digits
                   "fill_mask_prompt: Rain is expected all [MASK].\n"
                   "fill_mask_top5: [[' weekend', 0.0866], [' night', 0.0784]]\n"
                   f"({SUBSET_NOTE})\nrun written to {tmp_path / 'mlm'}\n")


# A policy's comparison with the SFT model (preferences.comparison_summary's keys), made-up values: each differs,
# so a figure printed from the wrong key shows another number
COMPARISON = {"win_rate_vs_sft": 0.6181, "win_rate_stderr": 0.0271, "win_rate_ceiling": 0.81, "win_rate_by_family": {},
              "gold_sft": 1.6512, "gold_after": 2.2004, "gold_sft_stderr": 0.1383, "gold_after_stderr": 0.1391,
              "style_flaws_sft": 0.1, "style_flaws_after": 0.05, "wrong_sft": 0.47, "wrong_after": 0.41,
              "examples": [], "changed_examples": []}
WIN_AND_GOLD = "win rate vs SFT (gold judge): 0.618 ± 0.027\nmean gold score: SFT 1.651 ± 0.138 -> {} 2.200 ± 0.139\n"
LAST_STEP_KL = ("KL to the SFT model at the last training step: 0.469 nats per answer (on that step's training "
                "prompts, sampled before its update)\n")
RL_RESULTS = {  # each command's training function and its result (online_rl.summarize_run's keys, and the stage's)
    "ppo": ("ppo.train_ppo", {**COMPARISON, "kl": 0.4685, "seconds": 9.0, "history": [], "rm_score": 0.3},
            WIN_AND_GOLD.format("PPO") + LAST_STEP_KL),
    "dpo": ("dpo.train_dpo", {**COMPARISON, "pair_accuracy": 0.7, "n_pairs": 80, "seconds": 9.0, "history": []},
            WIN_AND_GOLD.format("DPO") + "held-out pairs ordered right by DPO's implicit reward: 0.700 (trained "
            "on 80 pairs)\n"),
    "grpo": ("grpo.train_grpo",
             {**COMPARISON, "kl": 0.4685, "seconds": 9.0, "history": [], "train_seconds": 8.0, "reward": "model",
              "pass_at_1_sft": 0.5349, "pass_at_1_after": 0.5901, "pass_at_k_sft": {"1": 0.5212, "2": 0.6338},
              "pass_at_k_after": {"1": 0.5833, "2": 0.6671},
              "pass_at_k_gain": {"1": {"gain": 0.0621, "stderr": 0.0244}, "2": {"gain": 0.0333, "stderr": 0.0196}}},
             WIN_AND_GOLD.format("GRPO") + "pass@1 (the right answer is in it), one answer to each held-out "
             "prompt: SFT 0.535 -> 0.590\n"
             f"pass@k from {preset('micro').grpo.passk_samples} answers to each prompt, SFT -> GRPO (gain ± its "
             "standard error): k=1 0.521 -> 0.583 (+0.062 ± 0.024), "
             "k=2 0.634 -> 0.667 (+0.033 ± 0.020)\n" + LAST_STEP_KL),
}


@pytest.mark.parametrize("command", RL_RESULTS)
def test_ppo_dpo_and_grpo_print_each_figure_of_their_result_by_its_name(command, monkeypatch, capsys, tmp_path):
    """What `ppo`, `dpo` and `grpo` print of their training function's result (faked). The KL PPO and GRPO
    print is their training log's last step's: it was called "KL to the SFT model", the name the pipeline's
    report gives another figure (the trained policy's on the held-out prompts, 0.615 to this one's 0.469 in
    the tiny journey). GRPO's pass@1 and its pass@k curve's k=1 are two estimates (one answer to each
    held-out prompt; grpo.passk_samples answers to each of the first prompts), printed without saying so."""
    function, result, printed = RL_RESULTS[command]
    monkeypatch.setattr(f"minillm.stage3_rlhf.{function}", lambda *args, **kw: result)
    out_dir = tmp_path / command
    code, out, err = run([command, "--sft", "s", *STAGE_ARGS[command], "--data",
                          str(instruction_file(tmp_path / "mine.jsonl")), "--preset", "micro", "--out", str(out_dir)],
                         capsys)
    assert (code, err) == (0, "")
    assert out == f"{printed}run written to {out_dir}\n"
