"""JSON Lines files: one JSON object per line, read with line-numbered errors, never silently.

JSONL is the usual format for instruction and preference data: a file can be appended to one
record at a time, and one broken line does not spoil the others. That is also its trap: a reader
that quietly drops bad lines trains on less data than you think. So `read_records` either stops at
the first bad line (`on_error="stop"`) or skips bad lines (`on_error="skip"`) and *says so*: a
warning lists every skipped line number with its reason, and the caller may collect them too.

Each kind of record (instructions here, preferences in stage 3) brings its own `check` function,
which validates one parsed object and returns it completed with defaults, or raises ValueError
with a reason. Both kinds may name their split (`record_split`); a record that names none is training data.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from minillm.errors import ConfigError, DataError
from minillm.utils import atomic_write_bytes, json_text, parse_json

ON_ERROR = ("stop", "skip")


def record_split(record: dict) -> str:
    """The split a record belongs to: its "split" field, or "train" where it has none, so a file of
    your own records that names no splits is all training data (instructions and rankings alike)."""
    return record.get("split", "train")


def read_records(path: str | os.PathLike, check: Callable[[dict], dict], on_error: str = "stop",
                 skipped: list[tuple[int, str]] | None = None) -> list[dict]:
    """The checked records of a JSONL file; blank lines are ignored.

    on_error="stop": the first bad line raises DataError naming the file, the line number and why.
    on_error="skip": bad lines are left out, a warning lists them, and (line number, reason) pairs
    are appended to `skipped` if given. A file with no good record at all raises DataError.
    """
    if on_error not in ON_ERROR:
        raise ConfigError(f"on_error={on_error!r}: expected 'stop' or 'skip'")
    path = Path(path)
    if path.is_dir():  # a run folder, say, given for the rankings file inside it (dpo --prefs runs/rm)
        inside = ", ".join(sorted(p.name for p in path.glob("*.jsonl"))) or "none"
        raise DataError(f"{path} is a folder, not a JSONL file: give the file itself (the JSONL files in it: "
                        f"{inside})")
    if not path.is_file():
        raise DataError(f"JSONL file {path} does not exist (or is not a file)")
    # A JSON line ends at "\n" only: str.splitlines() would also cut at U+2028, U+0085 and the like,
    # which json_text(..., ensure_ascii=False) writes unescaped inside a string. Each line is decoded
    # on its own, so a line that a crash cut inside a character is one bad line, not a bad file.
    lines = path.read_bytes().removeprefix(b"\xef\xbb\xbf").split(b"\n")  # (the BOM some editors write first)
    records, bad = [], []
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            obj = parse_json(raw.decode("utf-8"))
            if not isinstance(obj, dict):
                raise ValueError(f"expected a JSON object {{...}}, got {type(obj).__name__}")
            records.append(check(obj))
        except ValueError as e:  # UnicodeDecodeError and json.JSONDecodeError are ValueErrors too
            reason = (f"not UTF-8 text (byte {e.start} of the line): convert it to UTF-8"
                      if isinstance(e, UnicodeDecodeError)
                      else f"invalid JSON ({e.msg})" if isinstance(e, json.JSONDecodeError) else str(e))
            if raw.strip() in (b"{", b"["):  # how a pretty-printed JSON file (json.dump with indent) begins
                reason += ("; the file looks like one JSON document spread over lines, and JSONL needs one whole "
                           "object per line")
            if on_error == "stop":
                raise DataError(f"{path}, line {number}: {reason}; fix the line, or leave bad lines out "
                                f"(--skip-bad-lines on the command line, on_error='skip' in Python)") from e
            bad.append((number, reason))
    if bad:
        listing = "; ".join(f"line {n}: {why}" for n, why in bad[:20])
        more = f" (and {len(bad) - 20} more)" if len(bad) > 20 else ""
        warnings.warn(f"{path}: skipped {len(bad)} bad line(s): {listing}{more}", stacklevel=2)
        if skipped is not None:
            skipped.extend(bad)
    if not records:
        first = f"; line {bad[0][0]}: {bad[0][1]}" if bad else ""
        raise DataError(f"{path} holds no valid record ({len(bad)} bad line(s){first}); "
                        f"expected one JSON object per line")
    return records


def check_records(records: Sequence[dict], check: Callable[[dict], dict], who: str) -> list[dict]:
    """Records built in Python, each passed through `check` as `read_records` checks a file's lines:
    the checked records, or DataError naming the first bad record (its index and id) and why."""
    checked = []
    for i, rec in enumerate(records):
        try:
            if not isinstance(rec, dict):
                raise ValueError(f"expected a dict, got {type(rec).__name__}")
            checked.append(check(rec))
        except ValueError as err:
            name = f" (id {rec.get('id', '?')!r})" if isinstance(rec, dict) else ""
            raise DataError(f"{who}: record {i}{name} is invalid: {err}; fix or drop it") from None
    return checked


def write_jsonl(path: str | os.PathLike, records: Iterable[dict]) -> None:
    """Write one JSON object per line (UTF-8, atomically: a reader never sees half a file)."""
    text = "".join(json_text(r, ensure_ascii=False) + "\n" for r in records)
    atomic_write_bytes(path, text.encode("utf-8"))
