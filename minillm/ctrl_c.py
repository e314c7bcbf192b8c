"""Holding a Ctrl-C back for a moment, where a KeyboardInterrupt would leave something half done.

Python answers Ctrl-C (SIGINT) with a KeyboardInterrupt wherever the program is, and in two places
that is wrong: in the middle of `import torch` (the seconds a command starts with, and a worker
process too), a half-imported torch would print a page of traceback, or crash the interpreter as it
exits; and a worker of `utils.worker_pool` is not ready for one before its setup has run.
There the signal is blocked: the kernel keeps it pending, and delivers it the moment it is
unblocked, where a KeyboardInterrupt is expected. A blocked signal is not an ignored one: a
command started with SIGINT ignored (`minillm pipeline &` in a script) keeps ignoring it.
Windows has no signal masks: there a Ctrl-C is answered at once, as without this module.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager

HAS_SIGNAL_MASKS = hasattr(signal, "pthread_sigmask")  # POSIX (Linux, macOS); not Windows


@contextmanager
def ctrl_c_held() -> Iterator[None]:
    """Inside the block a Ctrl-C waits; it is answered (a KeyboardInterrupt) as the block ends.

    The mask is this thread's, and the kernel gives the signal to a thread that does not block it,
    if there is one (Python then answers it in the main thread at once): it is held only while the
    thread that holds it is the only one that could take it, as when a command starts. A thread
    or process started inside the block starts with SIGINT blocked too, and keeps it blocked after
    the block: harmless for a thread (Python answers signals in the main thread), but a process must
    unblock it itself, as `utils._start_worker` does, or no Ctrl-C would ever reach it."""
    if not HAS_SIGNAL_MASKS:
        yield
        return
    before = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)
