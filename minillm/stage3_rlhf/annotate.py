"""A person ranks answers in the terminal: the human version of the simulated annotator.

For each prompt the SFT policy writes K different answers; we show them numbered 1..K and read a
ranking, best first, such as `2 1 4 3` ("answer 2 is best, then 1, then 4, answer 3 is worst"),
or `2 1=4 3` when answers 1 and 4 seem equally good (a tie teaches nothing, so no pair is made).
The loop is built for real people:

- a malformed ranking (a missing number, a repeat, a word) is refused with the reason, and the
  same question is asked again. Rankings read from a file or a pipe (`< ranks.txt`) cannot be asked
  again: each line answers the next prompt shown, so after a bad line every later ranking would
  answer the prompt before its own. There a bad line stops the session (DataError naming the line
  and the prompt), and the rankings before it are kept;
- each ranking is appended to the file and flushed to disk at once, so Ctrl-C (or `q`) loses
  nothing but the prompt on screen;
- started again on the same file, it skips the prompts already ranked there, goes on counting
  where it stopped ("prompt 4/13686" after 3 ranked), and shows the same answers as before: each
  prompt's answers are sampled with a seed of its own (`prompt_seed`), not from one shared stream;
- every 5th ranking is marked "split": "test", held out to measure the reward model, like the
  simulated annotator's (`preferences.split_of`);
- a second session on the same file stops before its first question (`run_lock.file_lock`): both
  would ask the prompts the file lacks, and each would save its own rankings of them;
- an answer's control characters are shown as escapes (`\\x1b`, `\\r`): an escape sequence could
  clear or recolour the screen, so the person would rank what they never saw. The file keeps the
  answers exactly.

The file has the format of `preferences.py`, so the reward model and DPO read a person's rankings
exactly as they read the simulated annotator's. `annotate_loop` takes its input and output
streams as arguments, so a test can play the person.
"""

from __future__ import annotations

import os
import sys
import unicodedata
import warnings
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

import torch

from minillm.datasets.jsonl import read_records
from minillm.errors import ConfigError, DataError
from minillm.model import GPT
from minillm.run_lock import file_lock
from minillm.stage2_sft.template import check_room_for_prompt
from minillm.stage3_rlhf.preferences import append_preference, read_preferences, sample_distinct_answers, split_of
from minillm.train import load_model_and_tokenizer
from minillm.utils import escape_controls, read_utf8_text


def parse_ranking(text: str, k: int) -> list[int | list[int]]:
    """'2 1 4 3' (1-based, best first) -> [1, 0, 3, 2] (0-based); '2 1=4 3' ties answers 1 and 4:
    -> [1, [0, 3], 2]. ValueError saying what is wrong."""
    places = [word.split("=") for word in text.replace(",", " ").split()]
    if not all(n.isdecimal() for place in places for n in place):  # "²" is a digit, but no number int() reads
        example = " ".join(map(str, range(1, k + 1)))
        raise ValueError(f"use only the numbers 1 to {k}, separated by spaces (= between answers that tie), "
                         f"e.g. {example}")
    numbers = [int(n) for place in places for n in place]
    if sorted(numbers) != list(range(1, k + 1)):
        typed = text.strip() or "nothing"
        raise ValueError(f"name each of the {k} answers exactly once (1 to {k}); you typed {typed}")
    return [int(place[0]) - 1 if len(place) == 1 else [int(n) - 1 for n in place] for place in places]


def example_ranking(n: int) -> str:
    """A ranking of answers 1..n to show as an example, each pair swapped: '2 1 4 3', or '2 1 3' for 3."""
    numbers = list(range(1, n + 1))
    for i in range(0, n - 1, 2):
        numbers[i], numbers[i + 1] = numbers[i + 1], numbers[i]
    return " ".join(map(str, numbers))


def show_question(out: IO[str], number: int, total: int, prompt: str, answers: Sequence[str]) -> None:
    """The prompt and its numbered answers, control characters escaped (`escape_controls`): the file
    gets the answers as they are, the screen must show what is ranked."""
    out.write(f"\n=== prompt {number}/{total} ===\n{escape_controls(prompt)}\n\n")
    for i, answer in enumerate(answers, start=1):
        out.write(f"  [{i}] {escape_controls(answer) or '(empty answer)'}\n")


def annotate_loop(
    records: Sequence[dict], answers_for: Callable[[dict], list[str]], out_path: str | os.PathLike,
    stdin: IO[str] | None = None, stdout: IO[str] | None = None, interactive: bool | None = None,
) -> dict[str, int]:
    """Ask for a ranking of `answers_for(record)` for each record not yet ranked in `out_path`.

    Prompts with fewer than 2 different answers are skipped (nothing to compare). The counter runs
    over all `records`, so a restart goes on from where the last session stopped. Returns
    {"ranked": new rankings written, "skipped_done": prompts already in the file, "remaining":
    prompts left when the person stopped, "saved": rankings in the file now}. The file is locked
    while the session runs: another session on it stops with RunLockedError. The streams default to
    the terminal's, looked up at the call (a default of `sys.stdin` would be the one at import time).
    `interactive` (by default: whether stdin is a terminal) says whether a person answers, who is asked
    again after a line that is not a ranking; lines from a file stop there (DataError).
    """
    stdin = sys.stdin if stdin is None else stdin
    stdout = sys.stdout if stdout is None else stdout
    interactive = stdin.isatty() if interactive is None else interactive
    out_path = Path(out_path)
    with file_lock(out_path):  # a second session on the file would rank the same prompts again
        saved = saved_rankings(out_path)
        done = {r["prompt"] for r in saved}
        todo = [(number, r) for number, r in enumerate(records, start=1) if r["prompt"] not in done]
        ranked = 0
        if records and not todo:
            stdout.write(f"\nall {len(records)} prompt(s) are ranked in {out_path} already: nothing left to ask\n")

        def summary(remaining: int) -> dict[str, int]:
            stdout.write(f"\n{ranked} ranking(s) saved in this session, {len(saved) + ranked} in {out_path}\n")
            return {"ranked": ranked, "skipped_done": len(records) - len(todo), "remaining": remaining,
                    "saved": len(saved) + ranked}

        for left, (number, record) in zip(range(len(todo), 0, -1), todo, strict=True):
            answers = answers_for(record)
            if len(answers) < 2:  # the policy said the same thing every time: nothing to compare
                stdout.write(f"\n(prompt {number}/{len(records)}: fewer than 2 different answers, skipped)\n")
                continue
            show_question(stdout, number, len(records), record["prompt"], answers)
            while True:
                stdout.write(f"ranking, best first (e.g. {example_ranking(len(answers))}; 1={len(answers)} for a tie), "
                             "or q to stop: ")
                stdout.flush()
                line = stdin.readline()
                if line == "" or line.strip().lower() in ("q", "quit"):  # end of input or a request to stop
                    return summary(left)
                try:
                    ranking = parse_ranking(line, len(answers))
                    break
                except ValueError as err:
                    if not interactive:  # no one to ask again: each later line would rank the prompt before its own
                        raise DataError(f"line {ranked + 1} of the rankings read from stdin (for prompt {number}/"
                                        f"{len(records)}) is not a ranking: {err}; "
                                        f"{rerun_advice(ranked, out_path)}") from None
                    stdout.write(f"  not a ranking: {err}\n")
            append_preference(out_path, {"prompt": record["prompt"], "answers": answers, "ranking": ranking,
                                         "split": split_of(len(saved) + ranked), "id": record.get("id", ""),
                                         "annotator": "human"})
            ranked += 1
        return summary(0)


def rerun_advice(ranked: int, out_path: Path) -> str:
    """What to do after a bad line of piped rankings, when the `ranked` lines before it were all rankings:
    a rerun skips the prompts ranked in `out_path`, so its input must start at the bad line."""
    if ranked == 0:
        return "nothing was saved in this session; fix that line and run again"
    return (f"the {ranked} ranking(s) before it are saved in {out_path}, and a rerun skips their prompts: fix that "
            f"line, delete the {ranked} line(s) before it, and run again")


def saved_rankings(path: Path) -> list[dict]:
    """The rankings an earlier session saved in `path`: none for a missing or empty file.

    A crash while a ranking was written leaves its line cut off, without its newline. Among saved
    rankings that line is skipped with a warning (`read_preferences`); when it is the file's only
    line, nothing was saved yet: a warning says so and ranking starts from the first prompt (the
    next ranking goes on a line of its own, `append_preference`). Lines that all fail although they
    were written whole are not a cut-off ranking: that file is refused (DataError).
    """
    raw = path.read_bytes() if path.is_file() else b""
    if not raw.strip():
        return []
    try:
        return read_preferences(path)
    except DataError:
        if b"\n" in raw.strip() or raw.endswith(b"\n"):  # more than one line, or one that was ended
            raise
        warnings.warn(f"{path}: its only line was cut off (a crash while it was written?), so no ranking was "
                      "saved yet; starting from the first prompt (delete that line when you like)", stacklevel=2)
        return []


def check_rankings_file(path: str | os.PathLike) -> None:
    """Before the first question: `path` can take the rankings. A folder is refused, and a missing
    folder above the file is made now, so that no ranking a person typed is lost to the path's error."""
    if Path(path).is_dir() or str(path).endswith(("/", os.sep)):
        raise ConfigError(f"--out {path} is a folder, but the rankings go into a file: give its name, "
                          f"e.g. --out {Path(path) / 'prefs.jsonl'}")
    Path(path).parent.mkdir(parents=True, exist_ok=True)


def check_prompt_record(obj: dict) -> dict:
    """A record to rank answers for: it needs a non-empty "prompt" string, put in NFC as an instruction
    file's prompts are (anything else is kept)."""
    if not isinstance(obj.get("prompt"), str) or not obj["prompt"].strip():
        raise ValueError('expected a non-empty "prompt" string')
    return {**obj, "prompt": unicodedata.normalize("NFC", obj["prompt"])}


def read_prompts(path: str | os.PathLike, skip_bad_lines: bool = False) -> list[dict]:
    """Prompts to rank: a .jsonl of records with a "prompt" field (a bad line stops with its number, or
    with `skip_bad_lines` is reported and skipped), or a text file with one prompt per line. Each
    prompt once: one asked twice would be ranked twice, and one of its rankings could be held out
    ("test") while the other trains the reward model."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"no prompts file at {path}: give a .jsonl of records or a text file, one prompt a line")
    if path.suffix == ".jsonl":
        records = read_records(path, check_prompt_record, on_error="skip" if skip_bad_lines else "stop")
    else:
        records = [{"prompt": line.strip()} for line in
                   unicodedata.normalize("NFC", read_utf8_text(path, "prompts file")).split("\n") if line.strip()]
    if not records:  # as an empty .jsonl is refused (read_records): there would be nothing to ask
        raise DataError(f"{path} holds no prompts: write one prompt a line, or give a .jsonl of records")
    first_of_each: dict[str, dict] = {}  # prompt -> its first record, in the file's order
    for record in records:
        first_of_each.setdefault(record["prompt"], record)
    if len(first_of_each) < len(records):
        warnings.warn(f"{path}: {len(records) - len(first_of_each)} prompt(s) appear more than once; each is "
                      "asked once", stacklevel=2)
    return list(first_of_each.values())


def prompt_seed(seed: int, prompt: str) -> int:
    """A seed for one prompt's answers: the same prompt and seed give the same answers in every session
    (crc32 of the text, not Python's `hash`, which changes from one process to the next)."""
    return (seed * 1_000_003 + zlib.crc32(prompt.encode("utf-8"))) % 2**63


MAX_K = 9  # answers per prompt: a person reads them all and orders them, so few (InstructGPT's: 4 to 9)


def annotate(
    policy_dir: str | os.PathLike, prompts_path: str | os.PathLike, out_path: str | os.PathLike, *,
    k: int = 4, temperature: float = 1.0, max_new_tokens: int = 48, seed: int = 0,
    device: str | torch.device = "cpu", stdin: IO[str] | None = None, stdout: IO[str] | None = None,
    skip_bad_lines: bool = False,
) -> dict[str, int]:
    """`minillm annotate`: sample K different answers per prompt from the policy (run on `device`) and let
    a person rank them."""
    if k < 2:
        raise ConfigError(f"k={k}: a ranking needs at least 2 answers per prompt; ask for k >= 2")
    if k > MAX_K:  # and the model samples all k at once: a huge k would not fit in memory
        raise ConfigError(f"k={k}: a person ranks at most {MAX_K} answers per prompt (InstructGPT's labelers "
                          f"ranked 4 to 9); ask for k from 2 to {MAX_K}")
    if Path(out_path).resolve() == Path(prompts_path).resolve():
        raise ConfigError(f"--out {out_path} is the --prompts file: rankings are appended to --out, so they need "
                          "a file of their own, e.g. rankings.jsonl")
    records = read_prompts(prompts_path, skip_bad_lines)  # a mistake in the small file first, before the model loads
    policy, tokenizer = load_model_and_tokenizer(policy_dir, GPT, map_location=device)
    check_room_for_prompt(policy.config.block_size, max_new_tokens, "--max-new-tokens")
    check_rankings_file(out_path)  # last: a folder it makes is made for a session that starts

    def answers_for(record: dict) -> list[str]:
        generator = torch.Generator().manual_seed(prompt_seed(seed, record["prompt"]))
        return sample_distinct_answers(policy, tokenizer, [record["prompt"]], k, temperature,
                                       max_new_tokens, generator)[0]

    return annotate_loop(records, answers_for, out_path, stdin, stdout)
