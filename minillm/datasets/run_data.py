"""Which data a run read: the records a run folder keeps of its corpus and its instructions.

No setting names the text a run trained on: `--corpus` and `--data` are files, and generated data is the text
of its settings only as long as the generator does not change. So a training run records what it read in its
config.json, beside its settings, under the data's name (`DATA`):

    "corpus": {"file": null, "corpus_mb": 2.0, "data_seed": 0, "val_fraction": 0.05, "sha256": "5b1e..."}
    "instructions": {"file": "/home/me/mine.jsonl", "data_seed": 0, "sha256": "9f2c..."}

(`corpus_record`: pretraining's, and SFT's where it replays the corpus; `instructions_record`: SFT's and every
stage 3 run's). The sha256 is that of what was read, so a file edited since is other data, and a file moved
elsewhere the same. A stage called from Python with its data (a lesson's `train_clm(cfg, tokenizer, train_docs,
val_docs, folder)`) is told no file or seed: it records what it can say of the data (`data_record`), that it was
given in Python, how many documents or records, and their sha256, hashed as a file's are:

    "instructions": {"file": null, "given_in_python": true, "records": 120, "sha256": "41d7..."}

Like the record of the code (`made_by`, provenance.py), a record is no setting: the pipeline's reuse and
`compare`'s table of settings pass it by, and `compare` names runs that read different data in a line of its
own. A resume is the exception: a run resumed on other data would hold two experiments in one set of weights
while its record named one, so it is refused (`check_same_data`), naming what to pass to read the same data
again (`how_to_read`). A run made before its stage recorded its data (or before a stage called from Python did)
has no record: unknown data, which no check refuses and no comparison names.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from minillm.datasets.corpus import CORPUS, corpus_given, corpus_text
from minillm.datasets.instructions import INSTRUCTIONS, instructions_given, instructions_text
from minillm.errors import ConfigError
from minillm.provenance import saved_record

# the data a run may record -> its record as a phrase, for the lines that name it
DATA: dict[str, Callable[[dict], str]] = {CORPUS: corpus_text, INSTRUCTIONS: instructions_text}
# the data a run may record -> the command-line option that names its file
FILE_OPTIONS = {CORPUS: "--corpus", INSTRUCTIONS: "--data"}
# the data a run may record -> the settings that only generate it: a file read in its place does not read them
# (its record keeps them all the same, as the data a run without the file would read)
GENERATOR_ONLY = {CORPUS: ("corpus_mb",), INSTRUCTIONS: ("data_seed",)}
# the data a run may record -> its record when given in Python: `corpus_given` takes the documents' splits, as
# (train, val) or SFT's (pretrain_docs,); `instructions_given` the records
GIVEN: dict[str, Callable[[Sequence], dict]] = {CORPUS: corpus_given, INSTRUCTIONS: instructions_given}


def data_record(key: str, record: dict | None, data: Sequence | None) -> dict | None:
    """The record a run keeps of the data `key` (a key of `DATA`) that it reads, `data`: `record`, where the
    caller made one (the command line and the pipeline know the file or the generator's settings), else that
    of data given in Python (`GIVEN`), else None when the run reads none (a reward model given no instruction
    records). One rule for every stage that takes its data from Python, so that none of them looks like a run
    made before the records existed: unknown data, which no resume refuses and no comparison names."""
    if record is not None or data is None:
        return record
    return GIVEN[key](data)


def saved_data(config_path: Path, key: str) -> dict | None:
    """The record of the data `key` (a key of `DATA`) that a run read, in its config.json at `config_path`, or
    None where it holds none: a run made before its stage recorded it, one that read none, or no run."""
    record = saved_record(config_path, key)
    readable = (isinstance(record, dict) and isinstance(record.get("sha256"), str)
                and isinstance(record.get("file"), (str, type(None))))  # (not one edited into something else)
    return record if readable else None


def known_records(read: Mapping[str, dict | None] | None) -> dict[str, dict]:
    """The records of `read` (key -> its record) that a run's config.json keeps: a record of None (no such data
    read, `data_record`) is left out, so that a caller passes every key it may record."""
    return {key: record for key, record in (read or {}).items() if record is not None}


def data_text(key: str, record: dict) -> str:
    """A record of the data `key` as a phrase: "the instructions in /home/me/mine.jsonl"."""
    return DATA[key](record)


def same_span(first: dict, second: dict) -> bool:
    """Whether two records hash the same span of their data, so that their sha256s can tell it apart: SFT's
    replayed documents given in Python hash its training split alone (`"split": "train"`, `corpus_given`), a
    file's or the generator's record both splits, so the same text would look like other data."""
    return first.get("split") == second.get("split")


def check_same_data(config_path: Path, read: Mapping[str, dict | None]) -> None:
    """Before resuming the run whose config.json is at `config_path` on the data of `read` (key -> its record,
    None when none): ConfigError when the run read other data so far. The same data is the same whatever
    brought it (a moved file; a file's documents given in Python): the sha256 tells; a run made before its
    stage recorded its data is taken at its word."""
    out_dir = config_path.parent
    for key, now in read.items():
        saved = saved_data(config_path, key)
        if saved is None or now is None or not same_span(saved, now) or saved["sha256"] == now["sha256"]:
            continue  # (unknown, or hashes of different spans: taken at its word)
        changed = " (other contents now)" if data_text(key, saved) == data_text(key, now) else ""
        options = how_to_read(key, saved, now)
        fix = f"{options} to resume it" if options else f"resume it on the {key} it read"
        raise ConfigError(
            f"cannot resume {out_dir}: it read {data_text(key, saved)}, and this run reads {data_text(key, now)}"
            f"{changed}; {fix}, or start a new run in another folder"
        )


def how_to_read(key: str, wanted: dict, now: dict) -> str:
    """The command-line options that make a run reading the data `key` of the record `now` read that of the
    record `wanted` instead, each only where the two differ: the file's option (`FILE_OPTIONS`), or leaving it
    out for generated data; and a `--set` for each setting that `wanted` read (its keys but "file" and "sha256",
    named as in the config: `corpus_mb`, `data_seed`, `val_fraction`; of a file, not those that only generate,
    `GENERATOR_ONLY`) where `now` holds another. `now` is made by this run, which records every setting, a
    file's run too; `wanted` may be older, and a setting it holds as null is unknown, so not named.
    "" when no option would: the same file edited since, the same settings generating other text in
    another version of minillm, or data given in Python on either side (no option reads what a caller held,
    and data given so is no file's or seed's: nothing to name).

        "pass --corpus /home/me/mine.txt", "leave out --data and pass --set data_seed=0"
    """
    if wanted.get("given_in_python") or now.get("given_in_python"):
        return ""
    option, options = FILE_OPTIONS[key], []
    if wanted.get("file") and wanted["file"] != now.get("file"):
        options.append(f"pass {option} {wanted['file']}")
    elif not wanted.get("file") and now.get("file"):
        options.append(f"leave out {option}")
    unread = GENERATOR_ONLY[key] if wanted.get("file") else ()
    settings = [f"--set {name}={value}" for name, value in wanted.items()
                if name not in ("file", "sha256", *unread) and value is not None and value != now.get(name)]
    if settings:
        options.append("pass " + " ".join(settings))
    return " and ".join(options)
