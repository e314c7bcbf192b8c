"""Crash-and-resume harness, reusable by every stage's tests.

`assert_exact_resume` runs a training command three times, with one thread each:
1. straight through, into `tmp/straight`, in a subprocess;
2. at the same time (the two are independent, and a 2-core machine runs them in the time of one), into
   `tmp/crashed`, in a subprocess SIGKILLed right after its K-th optimizer update
   (tests/_kill_after_updates.py);
3. again into `tmp/crashed` with resume on, in this process: all it may go on from is what the killed
   process left on disk, and it is spared a second start of Python and torch (seconds, more than the
   run itself);
then checks that the resume went on from a checkpoint (it made fewer optimizer updates than the
straight run: a fresh start would end bit-identical too), that the two final checkpoints hold
bit-identical tensors (model, optimizer, RNG states) and that the metrics.jsonl curves agree row for
row. A stage test only says how to build its command:

    from crash_resume import assert_exact_resume

    def command(out_dir: Path, resume: bool) -> list[str]:   # the arguments after `python`
        return ["-m", "minillm", "pretrain", "clm", "--preset", "micro", "--out", str(out_dir),
                *(["--resume"] if resume else [])]

    def test_clm_resumes_exactly(tmp_path):
        assert_exact_resume(command, tmp_path, kill_after_updates=7)

(`-m minillm`, not `-m minillm.cli`: run in this process, where minillm.cli is imported already, runpy would
warn that it runs that module a second time.) Pick K after the first checkpoint (save_every) and before the
last step, so that the resume really continues from a saved state.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from _kill_after_updates import UPDATES_LINE, count_updates, run_program

from minillm.train.checkpoint import CKPT_NAME, load_checkpoint

KILLER = Path(__file__).with_name("_kill_after_updates.py")
TIMING_KEYS = {"elapsed_s", "samples_per_s"}  # wall-clock numbers differ between runs by nature


def start_python(args: list[str]) -> subprocess.Popen:
    """Start `python ARGS...` with one thread, from the repository root, its output captured."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=Path(__file__).parent.parent)


def finish(process: subprocess.Popen, timeout: float) -> subprocess.CompletedProcess:
    """Wait for a started process and return what it printed. Past `timeout` seconds it is killed with
    every process it started: torchrun's ranks, in a process group of their own, would otherwise live
    on holding its output open, and the test would hang on them instead of failing."""
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        for pid in [process.pid, *descendants(process.pid)]:  # found before the first kill orphans them
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        process.communicate()
        raise
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def descendants(pid: int) -> list[int]:
    """The processes started by `pid`, by their children, and so on (Linux: read from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):  # a process that ended while we read
            parent = int(stat.read_bytes().rsplit(b")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def run_python(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    """Run `python ARGS...` with one thread, from the repository root; fail the test with its stderr."""
    return finish(start_python(args), timeout)


def check_ok(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, f"exit {result.returncode}:\n{result.stderr[-3000:]}"


def assert_identical(a: Any, b: Any, where: str = "checkpoint") -> None:
    """Every tensor equal bit for bit, every other value equal, through nested dicts and lists."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), f"{where} differs"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{where}: keys differ"
        for key in a:
            assert_identical(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), f"{where}: lengths differ"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_identical(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def assert_same_checkpoint(a: Path, b: Path, where: str) -> None:
    """The checkpoint files `a` and `b` hold the same values, every tensor bit for bit (`assert_identical`);
    wall-clock time (elapsed_s) is the one thing allowed to differ."""
    first, second = load_checkpoint(a), load_checkpoint(b)
    first.pop("elapsed_s", None), second.pop("elapsed_s", None)
    assert_identical(first, second, where)


def read_curve(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    return [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in rows]


def updates_made(result: subprocess.CompletedProcess) -> int:
    """How many optimizer updates a program run under KILLER with K = 0 made (its report on stderr)."""
    reports = [line for line in result.stderr.splitlines() if line.startswith(UPDATES_LINE)]
    assert reports, f"no {UPDATES_LINE!r} line on stderr:\n{result.stderr[-2000:]}"
    return int(reports[-1].removeprefix(UPDATES_LINE))


def run_here(args: list[str]) -> int:
    """Run `python ARGS...` in this process, as a new process would run it (its sys.argv, as `__main__`);
    fail the test if it exits with an error; return how many optimizer updates it made."""
    argv, path = sys.argv, list(sys.path)
    updates, hook = count_updates()
    try:
        run_program(args)
    except SystemExit as exit_:  # a command's sys.exit(main()): 0 is a success
        assert exit_.code in (0, None), f"exit {exit_.code}"
    finally:
        hook.remove()
        sys.argv, sys.path[:] = argv, path
    return updates()


def assert_exact_resume(command: Callable[[Path, bool], list[str]], tmp_path: Path, kill_after_updates: int,
                        ckpt_name: str = CKPT_NAME, timeout: float = 120) -> None:
    """A run SIGKILLed after `kill_after_updates` updates and resumed ends bit-identical to a straight one."""
    straight, crashed = tmp_path / "straight", tmp_path / "crashed"
    straight_run = start_python([str(KILLER), "0", *command(straight, False)])  # killed never, updates counted
    try:
        killed = run_python([str(KILLER), str(kill_after_updates), *command(crashed, False)], timeout)
    finally:  # a failing test leaves no process behind
        straight_done = finish(straight_run, timeout)
    check_ok(straight_done)
    assert killed.returncode == -signal.SIGKILL, (
        f"the run was not killed after update {kill_after_updates} (exit {killed.returncode}): "
        f"does it take that many steps?\n{killed.stderr[-2000:]}")
    rest = run_here(command(crashed, True))
    # A fresh start would also end bit-identical: the resume must go on from a checkpoint saved before the
    # kill, so it makes fewer updates than the straight run, and at most kill_after_updates fewer.
    total = updates_made(straight_done)
    assert total - kill_after_updates <= rest < total, (
        f"the resume made {rest} of the straight run's {total} updates: it did not go on from a checkpoint "
        f"saved before update {kill_after_updates}")

    assert_same_checkpoint(straight / ckpt_name, crashed / ckpt_name,
                           f"final {ckpt_name} (killed after update {kill_after_updates})")
    assert read_curve(straight) == read_curve(crashed), "metrics.jsonl curves differ after the resume"
