"""How a command meets the process it runs in: a Ctrl-C, a stdout or stderr closed, a reader gone.

Python's defaults are right for a short script and wrong for a command that trains for minutes:
- Ctrl-C (SIGINT) is answered with a KeyboardInterrupt wherever the program is, and in two places
  that is wrong: in the middle of `import torch` (the seconds a command starts with, and a worker
  process too), a half-imported torch would print a page of traceback, or crash the interpreter as
  it exits; and a worker of `workers.worker_pool` is not ready for one before its setup has run.
  There the signal is blocked (`ctrl_c_held`): the kernel keeps it pending, and delivers it the
  moment it is unblocked, where a KeyboardInterrupt is expected. A blocked signal is not an ignored
  one: a command started with SIGINT ignored (`minillm pipeline &` in a script) keeps ignoring it.
  Windows has no signal masks: there a Ctrl-C is answered at once.
- SIGTERM (`kill`, `timeout`, a scheduler stopping or preempting the job) ends a process on the spot,
  with no word and no clean-up: inside `cli.main` it is answered as a Ctrl-C (`sigterm_as_ctrl_c`).
- A stdout or stderr closed at the start is None, and the first print or progress bar fails
  (`stand_in_for_closed_output`).
- A reader that left (`| head`) makes the next write raise BrokenPipeError, and output still
  buffered fails again as Python exits (`discard_stdout`, `write_lines_as_they_come`).
cli.main and `errors.one_line_errors` (for the lessons and scripts) use these before torch is imported.

Its last section is how a command reads its arguments and tells an error, in one line ending in
exit code 2 (`OneLineParser`, `one_line`, `path_arg`, `checked_arg`, `description`): the `minillm`
command's, and those of `python -m minillm.datasets`, which sits in a layer below the command line
and reads them here, and of the scripts in bench/.
"""

from __future__ import annotations

import argparse
import atexit
import errno
import io
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any, NoReturn, TextIO

HAS_SIGNAL_MASKS = hasattr(signal, "pthread_sigmask")  # POSIX (Linux, macOS); not Windows
STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}  # a Ctrl-C, and the signal answered as one (sigterm_as_ctrl_c)


@contextmanager
def ctrl_c_held() -> Iterator[None]:
    """Inside the block a Ctrl-C (or a SIGTERM, answered as one) waits; it is answered (a
    KeyboardInterrupt) as the block ends.

    The mask is this thread's, and the kernel gives the signal to a thread that does not block it,
    if there is one (Python then answers it in the main thread at once): it is held only while the
    thread that holds it is the only one that could take it, as when a command starts. A thread
    or process started inside the block starts with them blocked too, and keeps them blocked after
    the block: harmless for a thread (Python answers signals in the main thread), but a process must
    unblock them itself, as `workers._start_worker` does, or no Ctrl-C would ever reach it."""
    if not HAS_SIGNAL_MASKS:
        yield
        return
    before = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


class Terminated(KeyboardInterrupt):
    """A SIGTERM, answered as a Ctrl-C (`sigterm_as_ctrl_c`): a KeyboardInterrupt that says which it was."""


def _raise_terminated(signum: int, frame: object) -> None:
    """The SIGTERM handler of `sigterm_as_ctrl_c`."""
    raise Terminated


@contextmanager
def sigterm_as_ctrl_c() -> Iterator[None]:
    """Inside the block a SIGTERM is answered as a Ctrl-C: a KeyboardInterrupt (`Terminated`), held by
    `ctrl_c_held` as a Ctrl-C is.

    SIGTERM is how a job is stopped from outside: `kill PID`, `timeout`, a scheduler that ends or preempts
    it (SLURM, Kubernetes). By default it ends the process on the spot, and no `finally` runs: the run
    folder's lock stays behind, and so does the temporary file of a checkpoint being written; the workers
    of `pipeline --jobs 2` are not told; nothing says how to go on. Answered as a Ctrl-C, the command ends
    as after one (cli.main): one line naming the step saved last and the command that continues, the lock
    released, the workers stopped (a Ctrl-C is passed on to them: `workers.interrupts_children`), and exit
    code 143 (128 + SIGTERM) where a Ctrl-C's is 130. A command started with SIGTERM ignored keeps ignoring
    it, and a handler of the caller's stays (a notebook's, a test's); only the main thread may set one.
    The default is put back after the block."""
    in_main_thread = threading.current_thread() is threading.main_thread()
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL or not in_main_thread:
        yield
        return
    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


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


def show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                 file: TextIO | None = None, line: str | None = None) -> None:
    """Warnings (e.g. skipped JSONL lines) as one plain line, not Python's source-line format: cli.main's
    `warnings.showwarning`, and its worker processes' too (workers.worker_pool)."""
    print(f"minillm: warning: {message}", file=sys.stderr)


# --------------------------------------------------------------------------------------------------
# A command's arguments and its one-line errors: the `minillm` command's, and any script's that wants
# its arguments and errors read and told the same way (`python -m minillm.datasets`).


def description(doc: str | None) -> str | None:
    """A script's --help description: the first line of its module docstring (`description(__doc__)`).
    `python -OO` (or PYTHONOPTIMIZE=2) strips docstrings and `__doc__` is None then: --help goes
    without a description rather than the script failing before it reads its arguments."""
    return doc.splitlines()[0] if doc else None


def path_arg(text: str) -> str:
    """The argparse type of every file and folder argument: a leading `~` is the home folder, as in the
    lessons' run folders (lessons.resolved). The shell expands `~` only at the start of a word: without
    this, --out=~/runs or a quoted "~/runs" would make a folder named "~" in the current one.

    A blank path is refused: it is what the shell passes for a variable never set (--out "$RUN"), and
    Path("") is the current folder, so a run would be written among the user's own files."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is a blank path (a shell variable never set?): give a file or "
                                         "folder, '.' for the current one")
    return os.path.expanduser(text)


def checked_arg(convert: Callable[[str], Any], accept: Callable[[Any], bool], expected: str) -> Callable[[str], Any]:
    """An argparse type: `convert(text)`, refused unless `accept` takes it; argparse turns the refusal
    ("'0' is not an integer >= 1") into a one-line usage error naming the option, before anything loads."""
    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not accept(value):  # nan fails every comparison, so it is refused too
            raise argparse.ArgumentTypeError(f"{text!r} is not {expected}")
        return value
    return parse


positive_int = checked_arg(int, lambda n: n >= 1, "an integer >= 1")


class OneLineParser(argparse.ArgumentParser):
    """argparse, with its errors on one line like minillm's own (exit code 2), each ending with how to ask
    for the help (`help_command`)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.help_command()})\n")

    def help_command(self) -> str:
        """How to ask for this parser's help, for its errors: "PROG --help"; for a parser of an option's value
        (bench/run_all.py's, prog "run_all.py --model-args"), "run_all.py --model-args=--help": a value that starts
        with a dash must be joined to its option with "=", or the outer parser reads it as an option of its own
        ("run_all.py --model-args --help" is refused: "--model-args: expected one argument")."""
        outer, _, last = self.prog.rpartition(" ")
        return f"{self.prog}{'=' if outer and last.startswith('-') else ' '}--help"


# The errors of a disk that refuses more bytes: full, a file-size limit (`ulimit -f`), a user's quota
DISK_REFUSED = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


def disk_refused(err: Exception) -> bool:
    """True for a write the disk refused (`DISK_REFUSED`) on a file it names: the run can go on from
    what it has saved once there is room, which the error's line says."""
    return isinstance(err, OSError) and err.errno in DISK_REFUSED and err.filename is not None


def one_line(err: Exception) -> str:
    """The error's message on one line; for an OSError, what failed on which path, and the fix."""
    if isinstance(err, (FileExistsError, NotADirectoryError)) and err.filename is not None:
        return f"{err.filename} (or a folder above it) is a file, not a folder; give a folder path"
    if disk_refused(err):
        return (f"could not write {err.filename} ({err.strerror}): the disk is full or a file-size limit was hit; "
                "free some space (or raise the limit) and run the command again")
    if isinstance(err, OSError) and err.filename is not None:
        return f"{err.strerror or err}: {err.filename}; check the path and its permissions"
    return " ".join(str(err).split())
