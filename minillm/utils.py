"""Small helpers used across the stages: seeding, device choice, safe JSON files, model text made
safe to show in a terminal. (The locks on run folders are in run_lock.py, the processes beside this
one in workers.py.)"""

from __future__ import annotations

import codecs
import hashlib
import io
import json
import math
import numbers
import os
import random
import re
import sys
import tempfile
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from minillm.config import expected_devices, is_device_name
from minillm.errors import ConfigError, DataError


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch so that a run is repeatable."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # NumPy's global generator takes a 32-bit seed; torch's and Python's take more
    torch.manual_seed(seed)


def mps_available() -> bool:
    """Whether this torch has Apple's MPS backend and this machine can use it."""
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def resolve_device(device: str) -> torch.device:
    """Turn a name of config.DEVICES ("auto", "cpu", "cuda", "cuda:N", "mps") into a torch.device, checking
    it exists here. A new device gets its branch here and its name in config.DEVICES."""
    if not is_device_name(device):
        raise ConfigError(f"device={device!r}: {expected_devices()}")
    kind = device.split(":")[0]  # "cuda:1" is a cuda device
    if kind == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if kind == "cpu":
        return torch.device("cpu")
    if kind == "mps":
        if not mps_available():
            raise ConfigError("device='mps': Apple's MPS backend is not available here; use --device cpu or auto")
        return torch.device("mps")
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device={device!r}: CUDA is not available here; use --device cpu or auto")
        resolved = torch.device(device)
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ConfigError(f"device={device!r}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                              f"numbered from 0; use --device cuda:0 to cuda:{torch.cuda.device_count() - 1}")
        return resolved
    raise ConfigError(f"device={device!r}: resolve_device (minillm/utils.py) knows no device of that name; add "
                      "its branch there, beside mps's")


def to_device(batch: dict[str, torch.Tensor], device: torch.device | str) -> dict[str, torch.Tensor]:
    """The same batch {name: tensor}, every tensor moved to `device` (the model's)."""
    return {name: tensor.to(device) for name, tensor in batch.items()}


def is_whole_number(value: object) -> bool:
    """Whether `value` is an integer: a Python int or any integral number (numpy's int64 from an array,
    say), but not a bool (True is an int to Python, and never meant as a count) and not a float."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_not_one_str(where: str, **texts: object) -> None:
    """A DataError when one str comes where a list of them goes (`check_not_one_str("f", docs=docs)`):
    iterated over, each of its characters would be a document, or a prompt, of its own."""
    for name, value in texts.items():
        if isinstance(value, str):
            raise DataError(f"{where}: {name} is one str; pass a list of them, e.g. [{value[:30]!r}]")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write a file so that a reader sees either the old content or the new, never half of it.

    We write to a temporary file in the same folder, flush it to disk (fsync), then rename it over
    the target: a rename within one file system is atomic.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with writing(path):  # an error names the file the caller asked for, not the temporary one beside it
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes owner-only files; give the usual permissions
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise


@contextmanager
def writing(path: str | os.PathLike) -> Iterator[None]:
    """Around the writing of `path`: an OSError raised there names `path`.

    A write that the disk refuses half way (it is full, or a file-size limit was hit) raises an
    OSError that names no file at all ("[Errno 28] No space left on device"), and one about a
    temporary file names a file the user never asked for. The command line turns the error, once
    it names `path`, into one line saying which file could not be written and what to do.
    """
    try:
        yield
    except OSError as err:
        if err.errno is None:  # not the operating system's refusal (no errno to name it by): keep it as it is
            raise
        raise type(err)(err.errno, err.strerror, str(path)) from err


# The name of atomic_write_bytes's temporary file: ".ckpt.pt.", mkstemp's 8 random characters, ".tmp".
INTERRUPTED_WRITE = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp")


def remove_interrupted_writes(folder: Path) -> None:
    """Delete the temporary files that atomic_write_bytes left in `folder`, or in a folder below it,
    when its process was killed in the middle of a write (kill -9, the OOM killer, a power cut: no
    `except` ran to remove them).

    Each is the unfinished new version of a file whose old version is intact, and nothing ever
    reads it; but a checkpoint's is as large as the checkpoint, and every kill would leave one more.
    Call this only while holding the folder's lock (run_folder_lock): no write of ours is under way then.
    """
    for tmp in folder.rglob("*.tmp"):
        if INTERRUPTED_WRITE.fullmatch(tmp.name) and tmp.is_file():
            tmp.unlink(missing_ok=True)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write `obj` as indented JSON (`json_text`), atomically."""
    atomic_write_bytes(path, (json_text(obj, indent=2) + "\n").encode("utf-8"))


def json_text(obj: Any, **options: Any) -> str:
    """`obj` as strict JSON: the one way minillm writes JSON (write_json, metrics.jsonl, JSONL files).

    JSON has no NaN or infinity. Python's json writes them anyway, as the words NaN and Infinity, which
    Python reads back but a strict parser (JavaScript's JSON.parse, jq, most other languages) refuses.
    So a figure that is not a finite number is written null, JSON's "no value", as a figure that was
    not measured is (the gold agreement of rankings of your own, the standard error of one prompt: None
    in Python): a float16 step the loss scaler skipped, whose gradient norm was infinite, logs null.
    A reader takes null as a figure the run has not got: a gap in a curve, "-" in a table.
    `options` go to json.dumps (indent, ensure_ascii)."""
    return json.dumps(finite_or_none(obj), allow_nan=False, **options)


def finite_or_none(obj: Any) -> Any:
    """`obj` with each float in it that is NaN or infinite, at any depth of its dicts and lists, None."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {key: finite_or_none(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_none(value) for value in obj]
    return obj


def json_sha256(data: Any, sort_keys: bool = False) -> str:
    """The sha256 of `data` written as JSON: which generated documents, or which instruction records, a run
    read. With `sort_keys`, each object's keys are written in order, so that two objects holding the same
    are hashed alike whatever order their keys came in (a record read from a file, the same one generated).
    A value JSON has no type for (a numpy number in records given in Python) is written as its str: hashed, not
    a TypeError from inside json; what JSON holds, a file's or the generator's data, is hashed as before."""
    return hashlib.sha256(json.dumps(data, sort_keys=sort_keys, default=str).encode("utf-8")).hexdigest()


def read_utf8_text(path: Path, what: str) -> str:
    """The text of a file the user gave (`what` names it, e.g. "corpus file"), or a DataError when it
    is not UTF-8 (naming the first byte that cannot be decoded and how to convert it) or not text."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # (-sig: a byte order mark some editors write first is dropped)
    except UnicodeDecodeError as e:
        raise DataError(f"{what} {path} is not UTF-8 text (byte {e.start} cannot be decoded); convert it, "
                        "e.g. with `iconv -t utf-8`") from None
    if "\x00" in text:  # valid UTF-8, but no text file holds NUL: an archive (tar pads with them) or binary data
        raise DataError(f"{what} {path} holds NUL bytes (character {text.index(chr(0))}), so it is not a text "
                        "file (an archive? extract it first); give plain UTF-8 text")
    return text


def parse_json(text: str) -> Any:
    """json.loads, whose every refusal is a json.JSONDecodeError (a ValueError). json itself lets two
    others through, which a reader's `except json.JSONDecodeError` would miss: a RecursionError for
    brackets nested about a thousand deep, and int's plain ValueError for a number of more digits than
    Python reads (4300: sys.set_int_max_str_digits)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise
    except RecursionError:
        why = "nested too deeply to read"
    except ValueError:
        why = "a number too long to read"
    raise json.JSONDecodeError(why, text, 0)


def read_json(path: str | os.PathLike) -> dict:
    """The JSON object that minillm wrote at `path` (a result.json, report.json, config.json), or a
    DataError naming it when it is damaged or edited into something that is not a JSON object."""
    try:
        data = parse_json(Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise damaged(path, f"is not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise damaged(path, f"holds a JSON {type(data).__name__}, not an object {{...}}")
    return data


def damaged(path: str | os.PathLike, problem: str) -> DataError:
    """The error for a file minillm wrote that no longer reads as it wrote it: `problem` says how."""
    return DataError(f"{path} {problem}: minillm wrote it, so it was damaged or edited since; restore it, "
                     "or make that run again")


def spread_rows(rows: list, n: int) -> list:
    """About `n` rows taken evenly from `rows`, always including the last one, each once: a log to print."""
    shown = rows[:: max(1, len(rows) // n)]
    return shown if not rows or shown[-1] is rows[-1] else shown + rows[-1:]


def show_unencodable_output() -> None:
    """Make stdout write a character its encoding lacks as an escape (`\\xb1` for "±", `\\ud55c`
    for "한") instead of raising UnicodeEncodeError. Called first by each command and lesson.

    stdout is not always UTF-8: on Windows, output sent to a file or a pipe is written in the
    system's code page (cp1252 in Western Europe, which has "±" but no Hangul), and under the C
    locale with PYTHONUTF8=0 it is ASCII. There, printing a model's Korean answer or a figure's "±"
    would end the command with a traceback, after its training had finished. Python's stderr
    already writes escapes (errors="backslashreplace"); this makes stdout do the same. A UTF-8 stdout,
    and one that is not a file's text stream (a notebook's), is left as it is.
    """
    stream = sys.stdout
    if isinstance(stream, io.TextIOWrapper) and codecs.lookup(stream.encoding).name != "utf-8":
        stream.reconfigure(errors="backslashreplace")


# Each control character but newline and tab, and how it is shown: "\x1b", "\r", "\x08", "\x9b", ...
_CONTROL_ESCAPES = {code: chr(code).encode("unicode_escape").decode("ascii")
                    for code in (*range(0x20), *range(0x7F, 0xA0)) if chr(code) not in "\n\t"}


def escape_controls(text: str) -> str:
    """`text` as it may be shown in a terminal: each control character but newline and tab written
    out as its escape, `\\x1b` or `\\r`.

    A model's text may hold any character (a byte-level tokenizer can spell every byte), and a
    terminal obeys the control ones: ESC starts a sequence that can clear the screen or recolour
    it, `\\r` sends the cursor back to overwrite the line, `\\x08` steps back over what was shown. A
    person ranking answers would then rank something other than what they saw. Only what is shown
    is escaped: what is saved to a file keeps the model's exact text.
    """
    return text.translate(_CONTROL_ESCAPES)


def pad_to_columns(text: str, columns: int) -> str:
    """`text` followed by spaces up to `columns` terminal columns. A wide character (Hangul, a CJK
    ideograph, a full-width form) takes two columns, so str.ljust, which counts characters, would
    leave the next column of a table out of line after Korean text."""
    width = sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)
    return text + " " * max(0, columns - width)
