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

from torch.optim.optimizer import register_optimizer_step_post_hook

UPDATES_LINE = "optimizer updates: "


def kill_after(updates: int) -> None:
    count = 0

    def hook(optimizer, args, kwargs) -> None:
        nonlocal count
        count += 1
        if count == updates:
            os.kill(os.getpid(), signal.SIGKILL)

    register_optimizer_step_post_hook(hook)
    if updates == 0:
        atexit.register(lambda: print(f"{UPDATES_LINE}{count}", file=sys.stderr))


def main() -> None:
    kill_after(int(sys.argv[1]))
    target = sys.argv[2:]
    if target[0] == "-m":
        sys.argv = [target[1], *target[2:]]
        runpy.run_module(target[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = target
        sys.path.insert(0, os.path.dirname(os.path.abspath(target[0])))
        runpy.run_path(target[0], run_name="__main__")


if __name__ == "__main__":
    main()
