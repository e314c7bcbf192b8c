"""The errors a user of minillm can meet, each with a message that names the problem and the fix.

Everything that can go wrong because of *input* (a config value, a data file, a tokenizer or
checkpoint file, a command-line argument) raises a subclass of `MinillmError`. The command line
catches exactly these and prints one clear line (exit code 2) instead of a traceback; any other
exception is a bug in minillm and keeps its traceback. Scripts (the lessons, bench/) do the same
with `one_line_errors()`, which also ends them as a command ends when its output is cut short or
closed: the helpers for that live here too, where the command line can use them before it imports
torch (minillm.utils imports it).
"""

import atexit
import io
import os
import sys
from contextlib import suppress
from pathlib import Path


class MinillmError(Exception):
    """Base class: a problem with the user's input, explained in plain words."""


class ConfigError(MinillmError, ValueError):
    """A configuration value is out of range or inconsistent with another one."""


class DataError(MinillmError, ValueError):
    """A corpus, JSONL or preferences file is missing, empty or malformed."""


class TokenizerError(MinillmError, ValueError):
    """A tokenizer cannot be trained, loaded or used as asked."""


class CheckpointError(MinillmError, RuntimeError):
    """A checkpoint is missing, corrupt, unsafe, or does not match the model asked for."""


class ModelInputError(MinillmError, ValueError):
    """Ids, masks or lengths given to a model do not fit its configuration."""


class TrainingError(MinillmError, RuntimeError):
    """Training had to stop (e.g. the loss became NaN); the last good checkpoint is kept."""


class RunLockedError(MinillmError, RuntimeError):
    """Another process is writing into the same run folder, or into the same rankings file (annotate)."""


def one_line_errors() -> None:
    """For a script (a lesson, a bench/ script, `python -m minillm.datasets`): it ends as a `minillm`
    command does (cli.main). A MinillmError that nothing caught prints as one line naming the problem
    and the fix; a reader that left (`python lessons/01_tokenizer.py | head`) ends it quietly with 141;
    any other exception is a bug and keeps its traceback. A stdout or stderr closed at the start is
    /dev/null (`stand_in_for_closed_output`), and stdout is written a line at a time (`write_lines_as_they_come`)."""
    stand_in_for_closed_output()
    write_lines_as_they_come()

    def excepthook(kind, err, traceback) -> None:
        if issubclass(kind, BrokenPipeError):  # the reader has all it wanted, nothing went wrong
            discard_stdout()
            raise SystemExit(141)  # 128 + SIGPIPE, as cli.main returns (Python exits with the code a hook raises)
        if issubclass(kind, MinillmError):
            print(f"{Path(sys.argv[0]).name}: error: {err}", file=sys.stderr)
        else:
            sys.__excepthook__(kind, err, traceback)

    sys.excepthook = excepthook


def stand_in_for_closed_output() -> None:
    """Give a stdout or stderr that was closed when the command started (`>&-`, `2>&-`, a service
    launched without them) /dev/null in its place: what is written there is discarded, as asked.

    Python makes a closed stream None, and writing to None fails: every progress bar (tqdm writes to
    stderr) would end training at its first step with exit code 1 and no word, and `chat` at its
    greeting. Its free file descriptor (1 or 2) would also go to the next file or pipe opened, which
    a worker process (`pipeline --jobs 2`) would then print into. So /dev/null is put at that very
    descriptor, inheritable as a real stdout is: the workers print there too. A stream that a caller of
    `main` set to None over a descriptor still open (a test, a script silencing it) gets /dev/null as
    the stream alone: the descriptor is the caller's process's, and stays as it was."""
    for fd, name in ((1, "stdout"), (2, "stderr")):
        if getattr(sys, name) is not None:
            continue
        if _is_open(fd):  # None set by a caller of main: the descriptor is not ours to replace
            setattr(sys, name, open(os.devnull, "w", encoding="utf-8"))  # noqa: SIM115 (open to the end)
            continue
        devnull = os.open(os.devnull, os.O_WRONLY)  # (the lowest free descriptor: 0 if stdin is closed too)
        if devnull != fd:
            os.dup2(devnull, fd)
            os.close(devnull)
        os.set_inheritable(fd, True)
        setattr(sys, name, open(fd, "w", encoding="utf-8", closefd=False))  # noqa: SIM115 (open to the end)


def _is_open(fd: int) -> bool:
    """Whether file descriptor `fd` is open in this process."""
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def write_lines_as_they_come() -> None:
    """Make a script's stdout write each line as it is printed, as it does to a terminal, also into a
    pipe or a file (`| tee log.txt` then shows a lesson as it runs, not 8 KB at a time).

    A script has no `main` whose end can flush its output inside a try, as cli.main does: a reader gone
    (`| head -1`, `| true`) is then found at the print that follows, where `one_line_errors` ends the
    script with 141. Output still buffered at exit would fail there instead, with Python's "Exception
    ignored ... BrokenPipeError" and exit code 120: argparse leaves its `--help` so (it ignores a failed
    write of it and exits 0), and it is dropped quietly as the script exits."""
    if isinstance(sys.stdout, io.TextIOWrapper):  # (a notebook's stdout is not: it is left as it is)
        sys.stdout.reconfigure(line_buffering=True)
        atexit.unregister(_drop_output_for_a_reader_gone)  # (once, however often a script calls this)
        atexit.register(_drop_output_for_a_reader_gone)


def _drop_output_for_a_reader_gone() -> None:
    """At exit: write what stdout still holds; a reader gone by then did not want it (--help | true)."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        discard_stdout()


def discard_stdout() -> None:
    """Point stdout at /dev/null: the output still buffered would fail again as Python exits."""
    with suppress(OSError, ValueError):  # a stdout with no file behind it (a test's) has nothing to point
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
