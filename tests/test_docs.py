"""Do the library's docstrings and comments name things that exist?

A learner follows a backticked name (`train.resume.check_resume`, `GPT.generate`, `--skip-bad-lines`,
`sft.lora.rank`, `metrics.jsonl`) to read more; after a rename or a move, a stale name sends them
nowhere. This test finds every backticked span in minillm/'s docstrings and comments and checks that
each one that looks like a name resolves: to something importable from minillm (or Python, torch), to
a setting of PipelineConfig, to a command-line flag, to a name used somewhere in the library's code
(a function's argument, a local, a metric key), or to a file of the repository or a run. Spans that
are code snippets or token text (`<eos>`, `2 1=4 3`) are not names and are skipped by their shape;
the few name-shaped spans that are not names sit in NOT_NAMES, each with its reason.

The last tests hold the documents a user reads to what can be checked cheaply: docs/cli.md names every
option and states the parser's defaults, every option a document names is one a command takes,
docs/findings.md's contents list its sections, and data/README.md's files exist and its counts are the
shipped files'.
"""

from __future__ import annotations

import argparse
import ast
import builtins
import dataclasses
import importlib
import io
import json
import keyword
import re
import tokenize
from collections import Counter
from pathlib import Path

import pytest

from minillm.cli import build_parser
from minillm.config import PipelineConfig
from minillm.datasets import read_corpus

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "minillm"
BACKTICKED = re.compile(r"`([^`\n]+)`")
# a name, dotted or not, maybe called (`f(x)`) or given a value (`causal=True`)
NAME = re.compile(r"(?P<name>[A-Za-z_][\w.]*?)\.?(\(.*\))?(=.*)?")
FILE = re.compile(r"[\w./*-]+\.(py|json|jsonl|pt|png|md|lock)|[\w./*-]+/")

LESSON_FLAGS = {"--fresh"}  # lessons.lesson_args: a lesson's own command line

NOT_NAMES = {  # name-shaped spans that are not the library's names
    "ignore_index",  # torch.nn.functional.cross_entropy's argument
    "modules_to_save",  # PEFT's setting
    "pyplot",  # matplotlib.pyplot
    "--character_coverage",  # a flag of sentencepiece's own trainer
    "--set path=value",  # the form of every override
    "lock.takeover",  # a file name made at run time (the lock's name + ".takeover")
}


def _has_docstring(node: ast.AST) -> bool:
    return (isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
            and ast.get_docstring(node) is not None)


def text_spans(path: Path) -> list[tuple[int, str]]:
    """(line, span) for every backticked span in the file's docstrings and comments."""
    source = path.read_text(encoding="utf-8")
    texts = [(node.body[0].lineno, node.body[0].value.value) for node in ast.walk(ast.parse(source))
             if _has_docstring(node)]
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            texts.append((tok.start[0], tok.string))
    return [(line, m.group(1)) for line, text in texts for m in BACKTICKED.finditer(text)]


def arguments() -> set[str]:
    """The library's argument names (`config`, `model`, `tokenizer`): a span starting with one is that
    argument's attribute, not the module of the same name."""
    return {node.arg for path in PACKAGE.rglob("*.py") for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(node, ast.arg)}


def code_names() -> set[str]:
    """Every identifier the library's code uses: definitions, arguments, attributes, keywords, and
    string constants shaped like names (metric keys, file names, setting names)."""
    names: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docstrings = {id(node.body[0].value) for node in ast.walk(tree) if _has_docstring(node)}
        for node in ast.walk(tree):
            if id(node) in docstrings:  # what is checked cannot vouch for itself
                continue
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.arg):
                names.add(node.arg)
            elif isinstance(node, ast.Name):
                names.add(node.id)
            elif isinstance(node, ast.Attribute):
                names.add(node.attr)
            elif isinstance(node, ast.keyword) and node.arg:
                names.add(node.arg)
            elif isinstance(node, ast.alias):
                names.add((node.asname or node.name).split(".")[0])
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                names.update(re.findall(r"[\w.-]+", node.value))
    return names


def settings(cfg: object = PipelineConfig(), prefix: str = "") -> set[str]:
    """Every setting's dotted path: `sft.lora.rank`, `train.max_steps`, and the sections themselves."""
    paths: set[str] = set()
    for field in dataclasses.fields(cfg):
        path = prefix + field.name
        paths.add(path)
        value = getattr(cfg, field.name)
        if dataclasses.is_dataclass(value):
            paths |= settings(value, path + ".")
    return paths


def _setting(cfg: object, path: str) -> object:
    for part in path.split("."):
        cfg = getattr(cfg, part)
    return cfg


def flags(parser: argparse.ArgumentParser) -> set[str]:
    """Every option string of the command line, subcommands included."""
    found = {s for action in parser._actions for s in action.option_strings}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found |= flags(sub)
    return found


def importable(dotted: str) -> bool:
    """`dotted` names a module or an attribute of one, under minillm or not."""
    parts = dotted.split(".")
    for prefix in ("minillm.", ""):
        for cut in range(len(parts), 0, -1):
            if parts[cut - 1] == "__main__":
                continue
            try:
                obj = importlib.import_module(prefix + ".".join(parts[:cut]))
            except ImportError:
                continue
            try:
                for attr in parts[cut:]:
                    obj = getattr(obj, attr)
            except AttributeError:
                break
            return True
    return False


def library_scopes() -> dict[str, list[object]]:
    """What a dotted name's first part may be: a module of the library by its last name (`jsonl`,
    `ppo`) or a class defined in one (`GPT`, `ModelConfig`)."""
    found: dict[str, list[object]] = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        if name.endswith("__main__"):  # importing it runs the command line
            continue
        module = importlib.import_module(name)
        found.setdefault(name.rsplit(".", 1)[-1], []).append(module)
        for attr, obj in vars(module).items():
            if isinstance(obj, type) and obj.__module__ == name:
                found.setdefault(attr, []).append(obj)
    return found


@pytest.fixture(scope="module")
def known() -> dict:
    all_settings = settings()
    return {"names": code_names() | set(dir(builtins)) | set(keyword.kwlist), "settings": all_settings,
            "leaves": {p.rsplit(".", 1)[-1] for p in all_settings}, "flags": flags(build_parser()) | LESSON_FLAGS,
            "scopes": library_scopes(), "arguments": arguments(),
            "sections": {path for path in all_settings
                         if dataclasses.is_dataclass(_setting(PipelineConfig(), path))}}


def resolves(span: str, known: dict) -> bool:
    if span.startswith("--"):
        flag, _, rest = span.partition(" ")
        if flag == "--set" and rest:
            return rest.partition("=")[0] in known["settings"]
        return all(f in known["flags"] for f in flag.split("/") if f) or all(
            "--" + f.lstrip("-") in known["flags"] for f in flag.split("/"))
    if FILE.fullmatch(span):
        stem = span.rstrip("/").rsplit("/", 1)[-1]
        return (any(ROOT.rglob(stem)) or stem in known["names"] or "*" in stem)
    match = NAME.fullmatch(span)
    if not match:
        return True  # a snippet or token text, not a name
    name = match["name"]
    if name in known["settings"] or any(path.endswith("." + name) for path in known["settings"]):
        return True
    if importable(name):
        return True
    if any(".".join(name.split(".")[:cut]) in known["sections"] for cut in range(2, name.count(".") + 1)):
        return False  # under a section such as `sft.lora`: only a setting of it will do
    head, *rest = name.split(".")
    if head in known["scopes"] and head not in known["arguments"] and rest:  # found there, not anywhere
        return any(_has_path(scope, rest) for scope in known["scopes"][head])
    return all(part in known["names"] or part in known["leaves"] for part in name.split("."))


def _has_path(obj: object, attrs: list[str]) -> bool:
    for attr in attrs:
        if not hasattr(obj, attr) and attr not in getattr(obj, "__dataclass_fields__", {}):
            return False
        obj = getattr(obj, attr, None)
    return True


def test_backticked_names_resolve(known: dict) -> None:
    stale = [f"{path.relative_to(ROOT)}:{line}: `{span}`"
             for path in sorted(PACKAGE.rglob("*.py")) for line, span in text_spans(path)
             if span not in NOT_NAMES and not resolves(span, known)]
    assert not stale, "names in docstrings/comments that resolve to nothing:\n" + "\n".join(stale)


# --------------------------------------------------------------------------------------------------
# The documents a user reads: each claim below can go stale without any other test noticing.

DOCS = ROOT / "docs"
DATA = ROOT / "data"


def test_the_cli_reference_names_every_option() -> None:
    """docs/cli.md is where a reader looks up an option they saw in `--help`; one added to the parser
    only (`--skip-bad-lines`, `--tokenizer-file` once were) is an option no page explains."""
    reference = (DOCS / "cli.md").read_text(encoding="utf-8")
    named = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", reference))
    missing = sorted(flags(build_parser()) - named - {"-h", "--help"})
    assert not missing, f"options of `minillm ... --help` that docs/cli.md never names: {missing}"


OPTION = re.compile(r"(?<![\w-])--[a-z][a-z_-]*")
OTHER_PROGRAMS = {"--to": "jupytext's (the README: a lesson as a notebook)",
                  "--nproc_per_node": "torchrun's (docs/cli.md: several GPUs)"}
USER_DOCUMENTS = ("README.md", "README.ko.md", "docs/cli.md", "docs/findings.md", "data/README.md")


def repository_options() -> set[str]:
    """Every option a command line of the repository takes: each `add_argument("--...")` in minillm/
    (the minillm command, `lesson_args`' `--fresh`, `python -m minillm.datasets`), lessons/ and bench/,
    and the options bench/gpu_check.sh's `case` accepts."""
    scripts = (*PACKAGE.rglob("*.py"), *(ROOT / "lessons").glob("*.py"), *(ROOT / "bench").glob("*.py"))
    found = {option for path in scripts
             for option in re.findall(r'add_argument\(\s*"(--[\w-]+)"', path.read_text(encoding="utf-8"))}
    shell = (ROOT / "bench" / "gpu_check.sh").read_text(encoding="utf-8")
    return found | set(re.findall(r"^\s*\S*?(--[\w-]+)\)", shell, re.MULTILINE))


def test_every_option_a_document_names_is_one_a_command_takes() -> None:
    """The other way round: an option renamed or dropped in the code but still named in a page a reader
    follows (in prose, where no parse checks it, or for a lesson or a bench script) is refused when they
    type it. Each option a document names is one that minillm, a lesson or a bench script takes, or
    another program's (OTHER_PROGRAMS)."""
    known = repository_options() | set(OTHER_PROGRAMS)
    stale = {name: sorted(set(OPTION.findall((ROOT / name).read_text(encoding="utf-8"))) - known)
             for name in USER_DOCUMENTS}
    assert not any(stale.values()), f"options no command takes: {stale}"


def test_the_defaults_the_cli_reference_states_are_the_parsers() -> None:
    """docs/cli.md gives the defaults of the options its examples show in brackets ("Without the options
    shown in brackets above: `generate --temperature 0.8 ...`"): a default changed in the parser alone
    would leave the page promising the old one. A default of None is the preset's, which the page names
    in words (`pretrain --tokenizer bpe` (the preset's `tokenizer.kind`))."""
    reference = " ".join((DOCS / "cli.md").read_text(encoding="utf-8").split())
    sentence = reference.split("Without the options shown in brackets above: ", 1)[1].split(". ", 1)[0]
    stated = [span.split() for span in re.findall(r"`([a-z][\w -]* --[^`]+)`", sentence)]
    assert len(stated) >= 5, sentence
    root = build_parser()
    for words in stated:
        command = words[: next(i for i, word in enumerate(words) if word.startswith("--"))]
        parser = root
        for name in command:  # `tokenizer train`: a subcommand of a subcommand
            parser = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[name]
        options = words[len(command):]
        for flag, value in zip(options[::2], options[1::2], strict=True):
            default = parser._option_string_actions[flag].default
            assert default is None or str(default) == value, f"`{' '.join(words)}`: {flag}'s default is {default}"


def test_the_cli_reference_names_every_key_of_sfts_metrics_json() -> None:
    """docs/cli.md says what each run writes; SFT's metrics.json gained `trainable_params` and `params`, which
    no page named. Its keys are read from the dict `run_sft_with_baselines` writes (those spelt out in it)."""
    reference = (DOCS / "cli.md").read_text(encoding="utf-8")
    tree = ast.parse((PACKAGE / "stage2_sft" / "evaluate.py").read_text(encoding="utf-8"))
    [writer] = [node for node in ast.walk(tree)
                if isinstance(node, ast.FunctionDef) and node.name == "run_sft_with_baselines"]
    [report] = [node.value for node in ast.walk(writer) if isinstance(node, ast.Assign)
                and [getattr(target, "id", None) for target in node.targets] == ["report"]]
    keys = {key.value for key in report.keys if isinstance(key, ast.Constant)}
    assert {"trainable_params", "params", "models"} <= keys  # (the premise: the dict was found)
    missing = sorted(keys - set(re.findall(r"`(\w+)`", reference)))
    assert not missing, f"keys of SFT's metrics.json that docs/cli.md never names: {missing}"


def _anchor(heading: str) -> str:
    """GitHub's link target for a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_the_findings_contents_list_every_section_in_order() -> None:
    """docs/findings.md is long (a lab notebook of 30 sections); its contents list is how a learner
    finds one, so a section added without an entry, or renamed, breaks the way in."""
    text = (DOCS / "findings.md").read_text(encoding="utf-8")
    assert "\n## Contents\n" in text, "docs/findings.md has no contents list"
    contents = text.split("## Contents\n", 1)[1].split("\n## ", 1)[0]
    entries = re.findall(r"^- \[(.+?)\]\(#([^)]+)\):\s+\S", contents, re.MULTILINE)  # title, link, a line on it
    headings = [h for h in re.findall(r"^## (.+)$", text, re.MULTILINE) if h != "Contents"]
    assert [title for title, _ in entries] == headings
    assert all(target == _anchor(title) for title, target in entries)


def test_every_file_the_data_readme_names_exists() -> None:
    """data/README.md points a reader at the data files, the generators and their test by name."""
    readme = (DATA / "README.md").read_text(encoding="utf-8")
    named = set(re.findall(r"`([\w/]+\.(?:py|txt|jsonl))`", readme))
    assert {"corpus.txt", "instructions.jsonl"} <= named
    assert not [name for name in named if not (DATA / name).exists() and not (ROOT / name).exists()]


def test_the_data_readme_counts_the_shipped_files() -> None:
    """The record and document counts data/README.md states are those of the shipped files (which
    tests/test_datasets.py holds to the generator's output): a change of the generator regenerates
    the files, and nothing else would notice the README's counts."""
    readme = " ".join((DATA / "README.md").read_text(encoding="utf-8").split())
    records = [json.loads(line) for line in (DATA / "instructions.jsonl").read_text(encoding="utf-8").splitlines()]
    splits = Counter(r["split"] for r in records)
    trained = Counter(r["family"] for r in records if r["split"] == "train")
    claims = [f"{len(read_corpus(DATA / 'corpus.txt')):,} documents",
              f"{len(records):,} instruction records: {splits['train']:,} for training",
              f"| `train` | {splits['train']:,} ({trained['plural']:,} per task family + {trained['world_fact']} world",
              *(f"| `{split}` | {count:,}" for split, count in splits.items() if split != "train")]
    assert not [claim for claim in claims if claim not in readme]
