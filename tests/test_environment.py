"""The commands in the environments users launch them in: output that a reader cuts short, and a
stdout or stderr closed before the command starts (`>&-`, `2>&-`, a service launched without them).

A closed stream is None in Python, which the tests that call `main` here set; what a shell gives a
process (a pipe whose reader left, descriptors 1 and 2 closed) is tested in a process of its own.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from minillm.cli import main
from minillm.console import HAS_SIGNAL_MASKS, ctrl_c_held

REPO = Path(__file__).resolve().parents[1]


def users_env() -> dict[str, str]:
    """This environment with PYTHONUNBUFFERED unset, as in a user's shell: this suite's own may set it,
    which hides what a block-buffered stdout does."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}


@pytest.mark.parametrize("argv", [["--help"], ["pipeline", "--help"]])
def test_help_to_a_reader_that_left_ends_quietly(argv):
    """`minillm --help | true`: the reader is gone before the help is written. argparse prints it into
    stdout's buffer and exits before `main`'s try, so Python's own flush at exit failed with "Exception
    ignored ... BrokenPipeError" and exit code 120; every command's output already ended with 141."""
    assert run_with_its_reader_gone(["-m", "minillm", *argv]) == (141, "")


def run_with_its_reader_gone(argv: list[str]) -> tuple[int, str]:
    """Run `python *argv` with its stdout a pipe whose reading end is closed before it starts: its first
    write finds the reader gone, however late or early it comes. (Its exit code, its stderr.)"""
    read, write = os.pipe()
    os.close(read)
    try:
        done = subprocess.run([sys.executable, *argv], cwd=REPO, env=users_env(), stdout=write,
                              stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write)
    return done.returncode, done.stderr


def test_training_with_stderr_closed_runs_to_the_end(tmp_path, monkeypatch, capsys):
    """`minillm tokenizer train ... 2>&-`: Python makes a closed stderr None, and the first progress bar
    (tqdm writes to stderr) ended the command with exit code 1 and no word said; a pipeline ended at
    its first step the same way."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("The river rises at night. Rain is expected all weekend in Vell.\n\n" * 20, encoding="utf-8")
    out = tmp_path / "tok.json"
    monkeypatch.setattr(sys, "stderr", None)
    assert main(["tokenizer", "train", "--input", str(corpus), "--vocab-size", "300", "--out", str(out)]) == 0
    assert out.is_file()
    assert capsys.readouterr().out.startswith("trained a bpe tokenizer")


def test_chat_with_stdout_closed_reads_its_input_to_the_end(untrained_runs, monkeypatch):
    """`minillm chat ... < questions.txt >&-` (a smoke test of a model, say): the chat wrote its greeting
    to a stdout that Python had made None, and ended with an AttributeError traceback."""
    monkeypatch.setattr(sys, "stdout", None)
    monkeypatch.setattr(sys, "stdin", io.StringIO("The river\n"))
    assert main(["chat", "--ckpt", str(untrained_runs / "gpt"), "--max-new-tokens", "2"]) == 0


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="reads the descriptors from Linux's /proc")
@pytest.mark.parametrize("closed", [(2,), (1, 2), (0, 1, 2)])  # `2>&-`, `>&- 2>&-`, and stdin closed too (`0<&-`)
def test_a_closed_stdout_or_stderr_is_dev_null_for_the_processes_it_starts(closed):
    """Started with both closed, the command's descriptors 1 and 2 are /dev/null, and so are those of the
    processes it starts (`pipeline --jobs 2`'s workers): a worker with a closed stderr ended at its
    first progress bar, and a free descriptor would have gone to the next file the command opened.
    With stdin closed as well, the first file opened takes descriptor 0, not 1; with stderr alone closed, its
    /dev/null is descriptor 2, not the next one free."""
    read, write = os.pipe()
    shown = [fd for fd in (1, 2) if fd in closed]
    worker = f"import os; os.write({write}, ' '.join(os.readlink(f'/proc/self/fd/{{fd}}') for fd in {shown}).encode())"
    code = ("import subprocess, sys; from minillm.console import stand_in_for_closed_output; "
            f"stand_in_for_closed_output(); subprocess.run([sys.executable, '-c', {worker!r}], pass_fds=({write},))")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, pass_fds=(write,), timeout=120,
                   preexec_fn=lambda: [os.close(fd) for fd in closed])
    os.close(write)
    with os.fdopen(read) as answer:
        assert answer.read() == " ".join([os.devnull] * len(shown))


# What does not go through `main`: a lesson (each imports minillm.lessons first: `import minillm.lessons` below is
# one), `python -m minillm.datasets`, a bench/ script. Each ends as a `minillm` command does (one_line_errors).


# argparse's --help ignores a failed write from Python 3.11 on, and ends with its 0; 3.10's meets the reader gone.
HELP_CODE = 0 if sys.version_info >= (3, 11) else 141


@pytest.mark.parametrize("argv, code", [
    (["-c", "import minillm.lessons; print('the lesson')"], 141),
    ([str(REPO / "lessons" / "09_end_to_end.py"), "--help"], HELP_CODE),  # a lesson with a command line of its own
    (["-m", "minillm.datasets", "--help"], HELP_CODE),
])
def test_a_script_whose_reader_left_ends_quietly(argv, code):
    """`python lessons/01_tokenizer.py | head -1`: the lesson ran on into a BrokenPipeError traceback and exit code
    1 (or, with a short output, Python's "Exception ignored ... BrokenPipeError" and 120 as it exited), as did
    `python -m minillm.datasets --help | true`. A lesson now stops at the print that finds the reader gone, with
    141 as `minillm` does; a --help argparse failed to write ends with its 0 (141 on Python 3.10, whose argparse
    lets the write's error through), and nothing is said."""
    assert run_with_its_reader_gone(argv) == (code, "")


def test_a_lesson_with_stderr_closed_runs_past_its_progress_bars():
    """`python lessons/01_tokenizer.py > log.txt 2>&-`: Python makes a closed stderr None, and the lesson ended
    at its first progress bar (tqdm writes to stderr) with exit code 1 and no word said."""
    lesson = "import minillm.lessons; from tqdm import tqdm; print('the lesson', sum(tqdm(range(3))))"
    done = subprocess.run([sys.executable, "-c", lesson], cwd=REPO, env=users_env(), stdout=subprocess.PIPE,
                          timeout=120, preexec_fn=lambda: os.close(2))
    assert (done.returncode, done.stdout) == (0, b"the lesson 3\n")


@pytest.mark.parametrize("bug, last_line", [("RuntimeError('a bug')", "RuntimeError: a bug"),
                                           ("FileNotFoundError('x.png')", "FileNotFoundError: x.png")])
def test_a_bug_in_a_script_keeps_its_traceback(bug, last_line):
    """one_line_errors shortens only what it knows: a MinillmError (the user's input) to one line, a reader
    gone to a quiet 141. Any other exception, an OSError included, is a bug to report, and its traceback is
    what the report needs: shortened or swallowed, a learner would have nothing to go on."""
    script = f"from minillm.errors import one_line_errors; one_line_errors(); raise {bug}"
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and done.stderr.startswith("Traceback (most recent call last):"), done.stderr
    assert done.stderr.splitlines()[-1] == last_line


@pytest.mark.skipif(not HAS_SIGNAL_MASKS, reason="no signal masks (Windows): a Ctrl-C is answered at once")
def test_a_ctrl_c_held_is_answered_where_the_outermost_hold_ends():
    """`ctrl_c_held` blocks SIGINT and then puts back the mask it found, rather than unblocking SIGINT: held
    inside a block that already holds it (torch imported by a caller that holds Ctrl-C itself), a Ctrl-C
    still waits for the outer block's end. Read from the kernel's mask, not from the function's own state."""
    def mask() -> set:
        return signal.pthread_sigmask(signal.SIG_BLOCK, set())

    before, reached = mask(), []
    with pytest.raises(KeyboardInterrupt):
        with ctrl_c_held():
            with ctrl_c_held():
                signal.raise_signal(signal.SIGINT)
                reached.append("inner")
            assert signal.SIGINT in mask()  # still held here
            reached.append("outer")
        reached.append("after")  # not reached: the Ctrl-C is answered as the outer block ends
    assert reached == ["inner", "outer"] and mask() == before
