"""One writer per run folder: the lock a command holds on its --out while it writes there, and the
checks made before a folder is taken.

Two runs writing into one folder would overwrite each other's checkpoints and metrics, and both
would say they succeeded. So a command that writes a run folder holds `run_folder_lock` on it (the
command line, lessons.py): a file `.minillm.lock` holding its process id, made with O_EXCL, which
the file system grants to one process only. It refuses a folder that is a file, or that holds
someone else's files (check_not_foreign), and, once locked, one inside or around a folder another
run holds (check_no_run_around). A lock left by a process that is gone (kill -9, a crash) is taken
over (remove_stale_lock). `file_lock` is the same lock on one file that a session keeps appending to.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from minillm.errors import DataError, RunLockedError
from minillm.utils import remove_interrupted_writes, writing

LOCK_NAME = ".minillm.lock"
RUN_MARK_NAME = ".minillm-run"  # an empty file left in every folder a run writes into: "this folder is a run's"
# A lock file still unsigned (no process id in it), or a takeover guard still there, this long after it was
# made was left by a run that stopped: no run takes as long to sign its lock or to take one over.
STALE_AFTER_SECONDS = 2.0


@contextmanager
def run_folder_lock(folder: str | os.PathLike, inputs: tuple[str, ...] = ()) -> Iterator[Path]:
    """Hold `folder/.minillm.lock` (`hold_lock`) while a command writes into `folder`.

    In order: a folder that is a file, or that holds files no minillm run wrote, is refused before
    anything is written (`take_folder`, which lets the files named in `inputs` through); the lock is
    taken; the folder is marked as a run's (RUN_MARK_NAME), so that later runs may go on in it; a
    folder inside or around one that another process holds is refused
    (check_no_run_around); what a killed run's unfinished writes left is deleted. The lock is removed
    when the block ends, however it ends, and the folder too if this call created it and nothing was
    written into it.
    """
    folder = Path(folder)
    created = take_folder(folder, inputs)
    mark = folder / RUN_MARK_NAME
    try:
        with hold_lock(folder / LOCK_NAME, folder) as lock:
            mark.touch()
            check_no_run_around(folder, lock)
            remove_interrupted_writes(folder)
            yield lock
    finally:  # (a folder deleted while the run wrote into it is gone: no error of ours may hide the run's)
        if created and folder.is_dir() and [path.name for path in folder.iterdir()] == [RUN_MARK_NAME]:
            mark.unlink()  # a run that failed at once leaves no empty folder behind
            folder.rmdir()


def take_folder(folder: Path, inputs: tuple[str, ...] = ()) -> bool:
    """Take `folder` for a run's outputs, before anything is written there: a file, or a folder that holds
    files no minillm run wrote, is refused (check_is_folder; check_not_foreign, which lets the files named in
    `inputs` through); it is made if missing. Returns whether this call made it. `run_folder_lock` takes its
    folder so, and lesson 9, which writes a journey without the command line."""
    check_is_folder(folder)
    check_not_foreign(folder, inputs)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    return created


def file_lock(path: str | os.PathLike) -> AbstractContextManager[Path]:
    """`hold_lock` on one file that a session keeps appending to: `minillm annotate`'s rankings.

    The lock lies beside the file, `.minillm.lock-NAME`: its name starts with LOCK_NAME, so a run
    folder that holds the file (`reward` reads its prefs.jsonl) does not count the lock as a stranger's.
    """
    path = Path(path)
    return hold_lock(path.with_name(f"{LOCK_NAME}-{path.name}"), path)


@contextmanager
def hold_lock(lock: Path, guarded: Path) -> Iterator[Path]:
    """Hold the file `lock` (it holds our process id) while this process writes `guarded`, a run
    folder (`run_folder_lock`) or one file (`file_lock`).

    The lock file is created with O_EXCL, which the file system grants to one process only. A
    second process finds it and stops with RunLockedError naming the holder; a lock left behind by
    a process that is gone (killed with -9, a crashed machine) is taken over with a notice. The lock
    is removed when the block ends, however it ends.
    """
    while True:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            break
        except FileExistsError:
            holder = _lock_holder(lock)
            if holder is None and _age_s(lock) < STALE_AFTER_SECONDS:
                time.sleep(0.1)  # just created by another run that has not written its PID yet
                continue
            if _held_by_another(holder):
                raise RunLockedError(f"{guarded} is in use by another minillm process (PID {holder}); "
                                     f"{_ways_on(holder, lock)}") from None
            remove_stale_lock(lock, holder, guarded)  # then O_EXCL again: if another run got there first, it wins
    try:
        with writing(lock), os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(f"{os.getpid()}\n")
    except OSError:  # (a full disk) the lock is ours but unsigned: left, the next run would wait, then take it over
        lock.unlink(missing_ok=True)
        raise
    try:
        yield lock
    finally:
        if _lock_holder(lock) == os.getpid():
            lock.unlink(missing_ok=True)


def remove_stale_lock(lock: Path, holder: int | None, guarded: Path) -> None:
    """Remove `lock` on `guarded`, left by process `holder`, which is gone.

    Two runs may find the same stale lock at once. Had each simply deleted it, the slower one could
    delete the lock the faster one had just made, and both would run. So a run deletes it only while
    it holds `lock.takeover` (created with O_EXCL: one run at a time), and only if it still names the
    same dead process: a lock the other run has taken meanwhile is left alone.
    """
    guard = lock.with_name(lock.name + ".takeover")
    try:
        os.close(os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    except FileExistsError:
        if _age_s(guard) > STALE_AFTER_SECONDS:  # left by a run killed in the middle of a takeover
            guard.unlink(missing_ok=True)
        time.sleep(0.1)
        return
    try:
        still_stale = _lock_holder(lock) == holder and (holder is not None or _age_s(lock) >= STALE_AFTER_SECONDS)
        if still_stale:
            whose = (f"its process (PID {holder}) is gone" if holder is not None
                     else "a run stopped as it began left it unsigned")
            print(f"minillm: note: taking over the lock of {guarded}: {whose}", file=sys.stderr)
            lock.unlink(missing_ok=True)
    finally:
        guard.unlink(missing_ok=True)


def check_is_folder(path: Path, flag: str = "--out") -> None:
    """An output folder that is an existing *file*, or would lie under one, is a mistake worth its own
    sentence (not mkdir's traceback); `flag` is the option that named it, for the message."""
    existing = next(folder for folder in (path, *path.parents) if folder.exists())
    if not existing.is_dir():
        under = "" if existing == path else f" lies under {existing}, which"
        raise DataError(f"{flag} {path}{under} is a file, not a folder; give a folder for the run's outputs")


def check_not_foreign(folder: Path, inputs: tuple[str, ...] = (), flag: str = "--out") -> None:
    """Refuse a folder that already holds files no minillm run wrote (`--out .` in a project, say);
    `flag` is the option that named it, for the message.

    A run writes config.json, metrics.jsonl, checkpoints and plots into its folder, over any file of
    the same name: someone else's config.json would be lost. So a run goes only into a new folder, an
    empty one, or one a run has written before (it holds RUN_MARK_NAME). `inputs` names the files a
    command reads from its folder and never overwrites (`reward` uses the prefs.jsonl it finds there).
    """
    if not folder.is_dir() or (folder / RUN_MARK_NAME).exists() or made_by_earlier_minillm(folder):
        return
    theirs = sorted(path.name for path in folder.iterdir()
                    if not path.name.startswith(LOCK_NAME) and path.name not in inputs)
    if theirs:
        shown = ", ".join(theirs[:3]) + (", ..." if len(theirs) > 3 else "")
        raise DataError(
            f"{flag} {folder} already holds files no minillm run wrote ({shown}); a run writes its config.json, "
            "metrics and checkpoints there and would overwrite files of those names: give a new or empty folder "
            f"(if it is a run of an earlier minillm, create an empty {RUN_MARK_NAME} file in it)"
        )


def made_by_earlier_minillm(folder: Path) -> bool:
    """A run folder from before RUN_MARK_NAME existed: a training run's config.json beside its
    metrics.jsonl, or a pipeline run's config.json beside its first step's folder."""
    return (folder / "config.json").is_file() and ((folder / "metrics.jsonl").is_file() or holds_pipeline_steps(folder))


def holds_pipeline_steps(folder: Path) -> bool:
    """True when `folder` is a pipeline run's: it holds the folder of the first step, 01_tokenizer."""
    return (folder / "01_tokenizer").is_dir()


def check_no_run_around(folder: Path, lock: Path) -> None:
    """Refuse `folder` (whose `lock` this process now holds) when another live minillm process holds a
    folder above it or below it: `minillm sft --out runs/p/04_sft` while `minillm pipeline --out runs/p`
    runs, or the other way round. Each lock guards only its own folder, yet the pipeline writes into its
    steps' folders, and taking a folder deletes the unfinished writes below it (remove_interrupted_writes):
    the other run's checkpoint, as it is being written."""
    around = (*(above / LOCK_NAME for above in folder.resolve().parents), *folder.rglob(LOCK_NAME))
    for other in around:
        holder = _lock_holder(other)
        if other != lock and _held_by_another(holder):
            where = "lies in" if other.parent in folder.resolve().parents else "holds"
            raise RunLockedError(f"{folder} {where} {other.parent}, which another minillm process (PID {holder}) "
                                 f"is writing; {_ways_on(holder, other)}")


def _ways_on(holder: int, lock: Path) -> str:
    """The end of the error for a folder that process `holder` holds with `lock`: the ways on."""
    return f"wait for it to finish, stop it, or choose another --out (if no process {holder} runs, delete {lock})"


def process_alive(pid: int) -> bool:
    """True when a process with this id exists (signal 0 only asks; it delivers nothing)."""
    if os.name == "nt":  # there os.kill(pid, 0) would end the process: assume it runs (the error names the lock)
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, but belongs to another user
        return True
    return True


def _held_by_another(holder: int | None) -> bool:
    """True when `holder`, the process id a lock names, is another process that is still running."""
    return holder is not None and holder != os.getpid() and process_alive(holder)


def _lock_holder(lock: Path) -> int | None:
    """The process id written in a lock file (None if it is gone, empty or unreadable)."""
    try:
        return int(lock.read_text(encoding="ascii").strip())
    except (OSError, ValueError):
        return None


def _age_s(path: Path) -> float:
    """Seconds since `path` was last written (infinite if it is gone)."""
    try:
        return time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return float("inf")
