"""Processes beside this one: the workers of `pipeline --jobs N`, and SFT's baselines trained beside SFT.

A plain `ProcessPoolExecutor` is right until the user presses Ctrl-C. A terminal sends it to every
process of the command, and each worker answers with a KeyboardInterrupt wherever it is: one
importing torch, waiting for a task or sending a result back prints a page of traceback above the
command's one line "minillm: interrupted; ... Continue with: ...", and leaves its pool broken. A
second Ctrl-C while the pool waits for its workers cuts the wait short: they are never told to stop,
and the command hangs as it exits, waiting for them. Stopping them outright instead leaves their
semaphores behind ("leaked semaphore objects", says the resource tracker). And `kill -9` of the
command would leave its workers training on, unseen.

So `worker_pool` makes a `WorkerPool`, whose workers take a Ctrl-C as a KeyboardInterrupt only inside
a task (the task stops, and its future holds the exception) and only note one anywhere else. The main
path comes first: the pool, how a task runs, how a worker starts, what the stages use (`in_one_thread`,
`beside`, `interrupts_children`). The rare cases come after: a worker whose parent died, a Ctrl-C
while a worker starts. (A second Ctrl-C, while the pool waits for its workers, is `WorkerPool.shutdown`'s.)
"""

from __future__ import annotations

import math
import multiprocessing
import multiprocessing.context
import multiprocessing.resource_tracker
import os
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from typing import Any, NoReturn

import torch
from tqdm import tqdm

from minillm.console import HAS_SIGNAL_MASKS, STOP_SIGNALS, ctrl_c_held, show_warning
from minillm.utils import show_unencodable_output


def worker_pool(workers: int) -> WorkerPool:
    """Processes for work beside this one: "spawn" starts fresh interpreters (nothing of this
    process's torch state is copied), each stopping when this process dies, printing as it does
    (its warnings one plain line each when this process's are), and stopped by Ctrl-C as it is (WorkerPool)."""
    return WorkerPool(max_workers=workers, mp_context=_SpawnHoldingCtrlC(), initializer=_start_worker,
                      initargs=(os.getpid(), warnings.showwarning is show_warning))


STOP_GRACE_SECONDS = 2.0  # how long a second Ctrl-C waits for a pool's workers to end before stopping them outright
CTRL_C_AGAIN_SECONDS = 1.0  # in a worker's task: a Ctrl-C this long after the one raised raises again (_on_ctrl_c)


class WorkerPool(ProcessPoolExecutor):
    """A process pool whose tasks a Ctrl-C stops as it stops the command, and whose workers it leaves
    quiet while they have no task.

    A terminal's Ctrl-C goes to every process of the command, and `interrupts_children` sends one more.
    Python's answer, a KeyboardInterrupt, is right inside a task: the task stops where it is, and the
    parent gets the exception from its future. Anywhere else in a worker (waiting for a task, reading
    one, sending a result back) nothing catches it, and each worker would print a page of traceback
    above the command's one line "minillm: interrupted; ... Continue with: ...". So a worker only notes a
    Ctrl-C that comes between tasks (`_on_ctrl_c`): the task it was about to start stops at once, and a
    worker with nothing to do ends when the pool shuts down, as it would have anyway.
    """

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        return super().submit(_run_task, fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """As ProcessPoolExecutor's, but a Ctrl-C must not cut short the wait for the workers to stop: that
        would leave them waiting for a task, and this process would hang as it exits, waiting for them. A
        pool made by a worker's task (SFT's baselines, `beside`) is waited for through a Ctrl-C, which its
        workers got too, and the task stops after. Elsewhere a Ctrl-C while it waits (a second one)
        gives them STOP_GRACE_SECONDS to end by themselves, as they do once their tasks have stopped, then stops
        them outright. The moment matters: a worker stopped outright never unlinks the semaphores it made (the
        queues of a pool its task made), and the resource tracker would warn of "leaked semaphore objects"
        below the command's last line.

        The moment lasts until each worker's exit code is known, not until a `join` of each returns: the pool's
        own thread joins them too, and of two threads reaping one process, the one that loses returns at once,
        before the other has recorded the exit code: the worker would seem never to have ended."""
        global _in_task, _ctrl_c_between_tasks
        in_task, _in_task = _in_task, False  # (in a worker's task a Ctrl-C is now only noted)
        workers = list((self._processes or {}).values())  # this pool's own, not other children of this process
        try:
            super().shutdown(wait, cancel_futures=cancel_futures)
        except KeyboardInterrupt:
            try:  # they got the Ctrl-C too: given a moment, most end by themselves, cleaning up as they do
                deadline = time.monotonic() + STOP_GRACE_SECONDS
                while any(worker.exitcode is None for worker in workers) and time.monotonic() < deadline:
                    time.sleep(0.01)
            finally:  # (a third Ctrl-C cuts the moment short, never this)
                for worker in workers:
                    worker.terminate()
            raise
        finally:
            _in_task = in_task
        if in_task and _ctrl_c_between_tasks:
            _ctrl_c_between_tasks = False
            _stop_task()


_in_task = False  # in a worker: whether it runs a task now (a Ctrl-C then raises KeyboardInterrupt)
_raised_at = -math.inf  # in a worker: when a Ctrl-C last raised KeyboardInterrupt in the task it runs (time.monotonic)
_ctrl_c_between_tasks = False  # in a worker: a Ctrl-C came while it ran none (its next task stops at once)


def _run_task(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """In a worker: run one task of `WorkerPool.submit`."""
    global _in_task, _raised_at, _ctrl_c_between_tasks
    _raised_at = -math.inf  # (none yet in this task: its first Ctrl-C raises)
    _in_task = True  # (a Ctrl-C from here on raises; one before it was noted, and is seen below)
    try:
        if _ctrl_c_between_tasks:  # it came while the task was awaited or read: stop before starting it
            _ctrl_c_between_tasks = False
            _stop_task()
        return fn(*args, **kwargs)
    finally:
        _in_task = False  # (a single store, with no call before it where a Ctrl-C could raise)


def _on_ctrl_c(signum: int, frame: object) -> None:
    """A worker's SIGINT handler: KeyboardInterrupt inside a task, not again for a moment; a note anywhere else.

    Not again for a moment: a terminal's Ctrl-C and the one `interrupts_children` passes on come a moment
    apart, and a user may press twice. A second KeyboardInterrupt would land in the first one's clean-up (a
    progress bar closing), cutting it short, or where Python can only print it ("Exception ignored in ...")
    above the command's one line. So a Ctrl-C within CTRL_C_AGAIN_SECONDS of the one raised is only noted.

    But after that moment it raises again. A signal's handler runs wherever the program is, and that may be
    inside a garbage collector's callback or an object's __del__, where Python prints an exception and drops
    it: the raised KeyboardInterrupt is then lost, and the task runs on. A Ctrl-C a moment later stops it, as
    it would a task whose clean-up hangs. (A pool of the task's own is waited for through any Ctrl-C:
    `WorkerPool.shutdown`.)"""
    global _ctrl_c_between_tasks
    if _in_task and time.monotonic() - _raised_at > CTRL_C_AGAIN_SECONDS:
        _stop_task()  # (it raises)
    _ctrl_c_between_tasks = True


def _stop_task() -> NoReturn:
    """In a worker's task: stop it as a Ctrl-C does, noting when (`_on_ctrl_c`)."""
    global _raised_at
    _raised_at = time.monotonic()
    raise KeyboardInterrupt


def _start_worker(parent: int, plain_warnings: bool) -> None:
    """What a worker of `worker_pool` does first: a fresh interpreter has none of its parent's setup."""
    stop_when_orphaned(parent)
    show_unencodable_output()
    if plain_warnings:  # as cli.main's (not under --debug): one line, not Python's file, line number and source line
        warnings.showwarning = show_warning
    # Its progress bars take a thread lock, not tqdm's default: that one holds a multiprocessing semaphore, made at
    # the first bar and unlinked as the process ends, which a worker stopped outright (a second Ctrl-C, `shutdown`)
    # would leave behind, and the resource tracker would warn of "leaked semaphore objects" below the command's
    # last line. A worker's bars are its own (no process shares them), so a thread lock serves.
    tqdm.set_lock(threading.RLock())
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:  # (a command started with it ignored keeps it so)
        signal.signal(signal.SIGINT, _on_ctrl_c)
    # A SIGTERM keeps its default here, ending the worker at once: it is how a pool stops a worker outright
    # (`terminate`, in `shutdown` and in a broken pool). The command answers its own as a Ctrl-C, and passes one on.
    if HAS_SIGNAL_MASKS:  # a Ctrl-C held since the start is noted now (_SpawnProcessHoldingCtrlC)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


def in_one_thread(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call `fn` with torch limited to one thread: for work run in a process beside others.

    Tiny models gain little from a second thread, while two processes that each spin up two threads
    on two cores wait on each other badly (a training step measured 10x slower).
    """
    torch.set_num_threads(1)
    return fn(*args, **kwargs)


@contextmanager
def beside(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Iterator[Future]:
    """Run `fn(*args, **kwargs)` in a second process (one thread) while the `with` block runs here.

    The block gets the Future; leaving the block waits for the second process.
    """
    with worker_pool(1) as side, interrupts_children():
        yield side.submit(in_one_thread, fn, *args, **kwargs)


@contextmanager
def interrupts_children() -> Iterator[None]:
    """On Ctrl-C here, pass it on to this process's children, as a terminal does for a whole job:
    each stops where it is (its last checkpoint kept) instead of running on unseen."""
    try:
        yield
    except KeyboardInterrupt:
        # (Used inside `with worker_pool(...)`, so this runs before the pool shuts down: its workers are alive, as
        # a Ctrl-C ends none, and its own thread, which reaps a worker once it has ended, is reaping none now.)
        for child in multiprocessing.active_children():
            os.kill(child.pid, signal.SIGINT)
        raise


def stop_when_orphaned(parent: int, poll_seconds: float = 0.5) -> None:
    """In a worker process: exit as soon as the process that started it, `parent`, dies.

    Ctrl-C reaches the workers (`interrupts_children`), but `kill -9` of the pipeline gives it no
    chance to stop them: they would train on unseen, writing into a run folder that a rerun of the
    same command may already be writing into. A watching thread sees the parent go (the worker is
    handed to another parent) and ends the worker; its files are written atomically, so none is cut.
    `parent` is given, not read here: the parent may already be gone when a worker starts.
    """

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_seconds)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="stop-when-orphaned").start()


class _SpawnProcessHoldingCtrlC(multiprocessing.context.SpawnProcess):
    """A "spawn" process that starts with SIGINT (and SIGTERM) blocked: one that comes is held, not lost, until
    `_start_worker` is ready for it. A fresh interpreter first spends seconds importing torch (to read
    `_start_worker` from this module), and a KeyboardInterrupt there would end it with a traceback.
    The child inherits the mask of the thread that starts it; the standard library starts its resource
    tracker the same way (bpo-33613). Windows has no signal masks: there it starts as a plain "spawn" process."""

    def start(self) -> None:
        if HAS_SIGNAL_MASKS:
            multiprocessing.resource_tracker.ensure_running()  # (starting it unblocks SIGINT and SIGTERM: done first)
        with ctrl_c_held():
            super().start()


class _SpawnHoldingCtrlC(multiprocessing.context.SpawnContext):
    """The "spawn" start method, its processes started by _SpawnProcessHoldingCtrlC."""

    Process = _SpawnProcessHoldingCtrlC
