"""Run a Python program and SIGKILL it right after its K-th optimizer update: a crash at a chosen step.

    python tests/_kill_after_updates.py K path/to/script.py ARGS...
    python tests/_kill_after_updates.py K -m package.module ARGS...

K = 0 kills nothing: the program runs to its end, and the last line on stderr says how many
updates it made ("optimizer updates: N"), so that a test can tell a resume from a fresh start.

A global optimizer hook (torch.optim.optimizer.register_optimizer_step_post_hook) counts the updates
of every optimizer in the process, so this works for any training loop without touching it. SIGKILL
cannot be caught: no cleanup code, no `finally`, exactly like a power cut or the OOM killer.
"""

from __future__ import annotations

import atexit
import os
import runpy
import signal
import sys
from collections.abc import Callable

from torch.optim.optimizer import register_optimizer_step_post_hook
from torch.utils.hooks import RemovableHandle

UPDATES_LINE = "optimizer updates: "


def count_updates(kill_after: int = 0) -> tuple[Callable[[], int], RemovableHandle]:
    """Count the optimizer updates this process makes from now on, and SIGKILL it right after update
    `kill_after` (0: never). Returns the count so far (a function) and the hook (`.remove()` stops it)."""
    count = 0

    def hook(optimizer, args, kwargs) -> None:
        nonlocal count
        count += 1
        if count == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)

    return (lambda: count), register_optimizer_step_post_hook(hook)


def run_program(target: list[str]) -> None:
    """Run `python TARGET...` in this process: a script and its arguments, or `-m package.module` and its."""
    if target[0] == "-m":
        sys.argv = [target[1], *target[2:]]
        runpy.run_module(target[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = target
        sys.path.insert(0, os.path.dirname(os.path.abspath(target[0])))  # as python puts the script's folder
        runpy.run_path(target[0], run_name="__main__")


def main() -> None:
    kill_after = int(sys.argv[1])
    updates, _ = count_updates(kill_after)
    if kill_after == 0:
        atexit.register(lambda: print(f"{UPDATES_LINE}{updates()}", file=sys.stderr))
    run_program(sys.argv[2:])


if __name__ == "__main__":
    main()
