"""The lock on a run folder, and on the rankings file `annotate` appends to: one writer at a time, a
dead writer's lock taken over, nothing left behind."""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from minillm import run_lock
from minillm.cli import main
from minillm.errors import DataError, RunLockedError
from minillm.run_lock import LOCK_NAME, run_folder_lock
from minillm.stage3_rlhf.annotate import annotate_loop

ROOT = Path(__file__).resolve().parents[1]  # the subprocesses import this minillm, from whatever folder pytest runs in


def dead_pid() -> int:
    """The id of a process that has finished (and been reaped): nobody holds it now."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_the_lock_holds_our_pid_and_is_gone_afterwards_even_after_an_error(tmp_path):
    with run_folder_lock(tmp_path / "run") as lock:
        assert lock.read_text(encoding="utf-8").strip() == str(os.getpid())
    assert not lock.exists() and not (tmp_path / "run").exists()  # it made the folder, nothing was written
    with pytest.raises(ZeroDivisionError), run_folder_lock(tmp_path / "run2") as lock:
        (tmp_path / "run2" / "ckpt.pt").write_bytes(b"x")
        raise ZeroDivisionError
    assert not lock.exists() and (tmp_path / "run2" / "ckpt.pt").is_file()


def test_a_folder_deleted_while_the_run_writes_lets_the_runs_own_error_through(tmp_path):
    """`rm -rf` of a run's new folder while it ran: the run failed at a file it could no longer write
    (or read), and the lock's clean-up, listing the folder to remove it if empty, replaced that error
    with its own "No such file or directory: runs/x", which named no file the run used; a run that
    finished ended with it too."""
    folder = tmp_path / "run"
    with pytest.raises(DataError, match="^the run's own error$"), run_folder_lock(folder):
        shutil.rmtree(folder)
        raise DataError("the run's own error")
    with run_folder_lock(folder):
        shutil.rmtree(folder)


def test_a_lock_the_disk_refuses_is_named(tmp_path, file_size_limit):
    """On a full disk the lock's process id could not be written: "[Errno 28] No space left on device",
    as the command's whole error, named no file."""
    with file_size_limit(0), pytest.raises(OSError) as info, run_folder_lock(tmp_path / "run"):
        pass
    assert info.value.filename == str(tmp_path / "run" / LOCK_NAME)


def test_a_lock_the_disk_refuses_is_not_left_behind(tmp_path, file_size_limit, capsys):
    """The lock was made, empty, before its process id was refused: it stayed, and the run after the
    space was freed took it over with a note about a run that "left it unsigned"."""
    with file_size_limit(0), pytest.raises(OSError), run_folder_lock(tmp_path / "run"):
        pass
    assert not (tmp_path / "run" / LOCK_NAME).exists()
    with run_folder_lock(tmp_path / "run"):
        pass
    assert capsys.readouterr().err == ""


def test_a_second_process_is_refused_naming_the_first(tmp_path, capsys):
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from minillm.run_lock import run_folder_lock
        with run_folder_lock({str(tmp_path / "run")!r}):
            print("locked", flush=True)
            sys.stdin.readline()
        """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunLockedError, match=f"in use by another minillm process \\(PID {holder.pid}\\)"), \
                run_folder_lock(tmp_path / "run"):
            pass
        code = main(["pretrain", "clm", "--preset", "micro", "--out", str(tmp_path / "run")])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and f"PID {holder.pid}" in err and "another --out" in err
    finally:
        holder.communicate("\n", timeout=60)
    assert not (tmp_path / "run" / LOCK_NAME).exists()  # the first one let go when it finished


def give_up_waiting_after(monkeypatch, seconds: float) -> None:
    """Make a lock that is waited for in vain fail the test after `seconds` of waiting, not hang it."""
    waited, sleep = [0.0], time.sleep

    def counted_sleep(s: float) -> None:
        waited[0] += s
        assert waited[0] <= seconds, f"still waiting for the lock after {seconds} s"
        sleep(s)

    monkeypatch.setattr(time, "sleep", counted_sleep)


def signed_once_waited_for(monkeypatch, lock: Path, pid: int) -> None:
    """The run that made the empty `lock` writes its PID into it while this run first waits (sleeps) for it.
    (A timer 0.3 s on raced the 2 s after which an empty lock counts as left by a killed run: a pause of the
    machine longer than the difference, and this run took the lock before the timer signed it.)"""
    sleep = time.sleep

    def sign_then_sleep(s: float) -> None:
        if not lock.read_text(encoding="utf-8"):
            lock.write_text(f"{pid}\n", encoding="utf-8")
        sleep(s)

    monkeypatch.setattr(time, "sleep", sign_then_sleep)


def make_old(path) -> None:
    """Date `path` a minute back: written long ago, by a run that is gone."""
    old = time.time() - 60
    os.utime(path, (old, old))


def test_a_lock_whose_process_is_gone_is_taken_over_with_a_notice(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / LOCK_NAME).write_text(f"{dead_pid()}\n", encoding="utf-8")
    with run_folder_lock(tmp_path / "run") as lock:
        assert lock.read_text(encoding="utf-8").strip() == str(os.getpid())
    assert "taking over the lock" in capsys.readouterr().err
    assert not lock.exists()


def test_an_out_path_that_is_a_file_is_named_as_such(tmp_path):
    """The message names the file that is in the way: the --out itself, or the folder above it that
    is a file (a learner who typed `--out notes.txt/run` must look at notes.txt, not at run)."""
    (tmp_path / "file").write_text("not a folder", encoding="utf-8")
    with pytest.raises(DataError, match=r"file is a file, not a folder"), run_folder_lock(tmp_path / "file"):
        pass
    with pytest.raises(DataError, match=r"file/run/x lies under \S*file, which is a file"), \
            run_folder_lock(tmp_path / "file" / "run" / "x"):
        pass


def test_a_folder_holding_someone_elses_files_is_refused_before_anything_is_written(tmp_path, capsys):
    project = tmp_path / "project"
    project.mkdir()
    (project / "config.json").write_text('{"mine": true}', encoding="utf-8")
    code = main(["pretrain", "clm", "--preset", "micro", "--out", str(project)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "no minillm run wrote (config.json)" in err
    assert sorted(path.name for path in project.iterdir()) == ["config.json"]
    assert (project / "config.json").read_text(encoding="utf-8") == '{"mine": true}'


def test_a_run_marks_its_folder_and_may_go_on_in_it(tmp_path):
    with run_folder_lock(tmp_path / "run"):
        (tmp_path / "run" / "config.json").write_text("{}", encoding="utf-8")
    assert (tmp_path / "run" / run_lock.RUN_MARK_NAME).is_file()
    with run_folder_lock(tmp_path / "run"):  # the second run in it (a --resume, a rerun) is let in
        pass
    (tmp_path / "empty").mkdir()
    with run_folder_lock(tmp_path / "empty"):  # an empty folder the user made is fine, and is kept
        pass
    assert [path.name for path in (tmp_path / "empty").iterdir()] == [run_lock.RUN_MARK_NAME]


def test_a_write_cut_by_kill_9_leaves_no_temporary_file_once_the_folder_is_taken_again(tmp_path):
    """A process killed between writing a checkpoint's temporary file and renaming it (here at the
    fsync) keeps the old checkpoint but leaves `.ckpt.pt.XXXXXXXX.tmp`, as large as a checkpoint:
    the next run in the folder (the rerun) removes it, and in the folders below (a pipeline's steps)."""
    run = tmp_path / "run"
    (run / "04_sft").mkdir(parents=True)
    (run / run_lock.RUN_MARK_NAME).touch()
    (run / "04_sft" / "ckpt.pt").write_bytes(b"old")
    killed = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        import os, signal
        from minillm import utils
        os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)
        utils.atomic_write_bytes({str(run / "04_sft" / "ckpt.pt")!r}, b"new")
        """)], env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    assert killed.returncode == -signal.SIGKILL
    assert [p.name for p in (run / "04_sft").glob(".ckpt.pt.*.tmp")]  # what the kill left
    (run / "notes.tmp").write_text("a file of ours, not a cut write", encoding="utf-8")
    with run_folder_lock(run):
        pass
    assert sorted(p.name for p in (run / "04_sft").iterdir()) == ["ckpt.pt"]
    assert (run / "04_sft" / "ckpt.pt").read_bytes() == b"old" and (run / "notes.tmp").is_file()


def test_runs_of_a_minillm_from_before_the_mark_are_recognised(tmp_path):
    training, pipeline = tmp_path / "training", tmp_path / "pipeline"
    for folder in (training, pipeline):
        folder.mkdir()
        (folder / "config.json").write_text("{}", encoding="utf-8")
    (training / "metrics.jsonl").write_text("", encoding="utf-8")
    (pipeline / "01_tokenizer").mkdir()
    for folder in (training, pipeline):
        with run_folder_lock(folder):
            pass
        assert (folder / run_lock.RUN_MARK_NAME).is_file()


def test_a_lock_just_made_and_not_yet_signed_is_waited_for_not_taken(tmp_path, monkeypatch):
    (tmp_path / "run").mkdir()
    lock = tmp_path / "run" / LOCK_NAME
    lock.write_text("", encoding="utf-8")  # another run's O_EXCL has succeeded; its PID follows in a moment
    signed_once_waited_for(monkeypatch, lock, os.getppid())
    with pytest.raises(RunLockedError, match=f"PID {os.getppid()}"), run_folder_lock(tmp_path / "run"):
        pass


def test_a_lock_left_empty_by_a_run_killed_before_it_signed_is_taken_over(tmp_path, monkeypatch, capsys):
    (tmp_path / "run").mkdir()
    lock = tmp_path / "run" / LOCK_NAME
    lock.write_text("", encoding="utf-8")  # O_EXCL succeeded, then kill -9 before the PID was written
    make_old(lock)
    give_up_waiting_after(monkeypatch, 5)
    with run_folder_lock(tmp_path / "run") as held:
        assert held.read_text(encoding="utf-8").strip() == str(os.getpid())
    err = capsys.readouterr().err  # an empty lock names no process: no "PID None"
    assert "taking over the lock" in err and "left it unsigned" in err and "PID None" not in err
    assert not lock.exists()


def test_a_takeover_left_half_done_by_a_killed_run_does_not_block_the_folder(tmp_path, monkeypatch, capsys):
    (tmp_path / "run").mkdir()
    lock = tmp_path / "run" / LOCK_NAME
    lock.write_text(f"{dead_pid()}\n", encoding="utf-8")
    guard = lock.with_name(LOCK_NAME + ".takeover")  # the run that was taking it over was killed too
    guard.touch()
    make_old(guard)
    give_up_waiting_after(monkeypatch, 5)
    with run_folder_lock(tmp_path / "run") as held:
        assert held.read_text(encoding="utf-8").strip() == str(os.getpid())
    assert "taking over the lock" in capsys.readouterr().err and not guard.exists() and not lock.exists()


def test_a_lock_held_by_another_users_process_is_not_taken_over(tmp_path, monkeypatch):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / LOCK_NAME).write_text("4242\n", encoding="utf-8")

    def kill(pid: int, signal: int) -> None:  # what os.kill(pid, 0) does for a process of another user
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "kill", kill)
    with pytest.raises(RunLockedError, match=r"\(PID 4242\)"), run_folder_lock(tmp_path / "run"):
        pass
    assert (tmp_path / "run" / LOCK_NAME).read_text(encoding="utf-8") == "4242\n"


def test_an_unsigned_lock_made_anew_during_a_takeover_is_left_to_its_run(tmp_path, monkeypatch):
    """An empty, old lock is stale; but if, while this run decides so, another run takes it over and
    has not yet signed its new (empty, fresh) lock, that lock is the other run's to keep."""
    (tmp_path / "run").mkdir()
    lock = tmp_path / "run" / LOCK_NAME
    lock.write_text("", encoding="utf-8")
    make_old(lock)
    age_s, made_anew = run_lock._age_s, []

    def other_run_takes_it_over_first(path):
        age = age_s(path)
        if path == lock and age >= 2 and not made_anew:  # this run has just judged the old lock stale
            lock.unlink()
            lock.write_text("", encoding="utf-8")  # the other run's O_EXCL; its PID follows in a moment
            made_anew.append(True)
        return age

    monkeypatch.setattr(run_lock, "_age_s", other_run_takes_it_over_first)
    signed_once_waited_for(monkeypatch, lock, os.getppid())
    give_up_waiting_after(monkeypatch, 5)
    with pytest.raises(RunLockedError, match=f"PID {os.getppid()}"), run_folder_lock(tmp_path / "run"):
        pass
    assert made_anew and lock.read_text(encoding="utf-8").strip() == str(os.getppid())


def test_a_folder_inside_or_around_one_another_run_holds_is_refused_and_its_writes_kept(tmp_path):
    """`minillm pipeline --out p` writes into its steps' folders (p/04_sft) without a lock of their own.
    A stage command taking p/04_sft meanwhile (or a pipeline taking p while a stage command runs in
    p/04_sft) would write beside the other run, and delete the checkpoint it is writing as a "leftover"
    temporary file. Both directions are refused; the other run's file is untouched."""
    step = tmp_path / "p" / "04_sft"
    step.mkdir(parents=True)
    for folder in (tmp_path / "p", step):
        (folder / run_lock.RUN_MARK_NAME).touch()  # both runs' folders, written before
    in_flight = step / ".ckpt.pt.abcd1234.tmp"  # the other run's checkpoint, being written
    in_flight.write_bytes(b"half")
    (tmp_path / "p" / LOCK_NAME).write_text(f"{os.getppid()}\n", encoding="utf-8")  # a live process holds p
    with pytest.raises(RunLockedError, match=rf"04_sft lies in \S*p, which another minillm process \(PID "
                                             rf"{os.getppid()}\)"), run_folder_lock(step):
        pass
    (tmp_path / "p" / LOCK_NAME).rename(step / LOCK_NAME)  # now a run in p/04_sft, and p asked for
    with pytest.raises(RunLockedError, match=r"p holds \S*04_sft, which another"), run_folder_lock(tmp_path / "p"):
        pass
    assert in_flight.read_bytes() == b"half" and not (tmp_path / "p" / LOCK_NAME).exists()


def test_a_takeover_under_way_in_another_run_is_left_to_finish(tmp_path):
    """A fresh `.takeover` guard means another run is removing the stale lock right now: this run
    leaves the guard and the lock alone (and tries again later). Deleting a guard that young would let
    both runs remove the lock, and then both could take the folder."""
    lock = tmp_path / LOCK_NAME
    lock.write_text(f"{dead_pid()}\n", encoding="utf-8")
    guard = lock.with_name(LOCK_NAME + ".takeover")
    guard.touch()  # the other run's, made just now
    run_lock.remove_stale_lock(lock, int(lock.read_text(encoding="ascii")), tmp_path)
    assert guard.exists() and lock.exists()


def test_of_two_runs_taking_over_one_stale_lock_the_slower_leaves_the_faster_ones_lock(tmp_path, monkeypatch):
    (tmp_path / "run").mkdir()
    lock = tmp_path / "run" / LOCK_NAME
    lock.write_text(f"{dead_pid()}\n", encoding="utf-8")
    faster = os.getppid()  # a live process standing in for the other run
    really_alive = run_lock.process_alive

    def other_run_takes_it_over_first(pid: int) -> bool:  # while this run is checking the dead PID
        if pid != faster:
            lock.unlink()
            lock.write_text(f"{faster}\n", encoding="utf-8")
        return really_alive(pid)

    monkeypatch.setattr(run_lock, "process_alive", other_run_takes_it_over_first)
    with pytest.raises(RunLockedError, match=f"PID {faster}"), run_folder_lock(tmp_path / "run"):
        pass
    assert lock.read_text(encoding="utf-8").strip() == str(faster)  # the faster run's lock is still there


def test_a_lock_left_with_our_own_pid_is_taken_over(tmp_path, capsys):
    """A run killed with -9 whose PID the next run happens to get (containers restart at the same PIDs)."""
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / LOCK_NAME).write_text(f"{os.getpid()}\n", encoding="utf-8")
    with run_folder_lock(tmp_path / "run") as lock:
        assert lock.read_text(encoding="utf-8").strip() == str(os.getpid())
    assert "taking over the lock" in capsys.readouterr().err and not lock.exists()


def test_a_lock_taken_by_another_run_meanwhile_is_left_to_it(tmp_path):
    """The lock is removed at the end only while it still holds our PID: one deleted by hand (the error
    message says to, when its process seems gone) and taken since by another run is that run's."""
    with run_folder_lock(tmp_path / "run") as lock:
        lock.write_text(f"{os.getppid()}\n", encoding="utf-8")  # a live process stands in for the other run
    assert lock.read_text(encoding="utf-8").strip() == str(os.getppid())


def test_a_rankings_file_whose_annotate_session_died_is_taken_over(tmp_path, capsys):
    out = tmp_path / "prefs.jsonl"
    lock = tmp_path / f"{LOCK_NAME}-prefs.jsonl"
    lock.write_text(f"{dead_pid()}\n", encoding="utf-8")  # that session was killed with -9
    summary = annotate_loop([{"prompt": "p"}], lambda r: ["a", "b"], out, io.StringIO("2 1\n"), io.StringIO())
    assert summary["ranked"] == 1 and f"taking over the lock of {out}" in capsys.readouterr().err
    assert not lock.exists()
