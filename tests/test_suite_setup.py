"""The suite's own setup (tests/conftest.py): a test file run alone, a test chosen with -k, or the
whole suite in any order computes with the same settings."""

import ast
import gc
import os
import signal
import weakref
from pathlib import Path

pytest_plugins = ["pytester"]  # pytest's own plugin for running a small suite inside a test


def test_every_test_and_shared_fixture_has_one_thread_whatever_ran_before(pytester):
    """A module that sets 3 threads as it is imported, and a test that sets 3 and leaves them:
    the next module's shared fixture (as test_ppo.py's trained runs) and its test still get one."""
    pytester.makeconftest(Path(__file__).with_name("conftest.py").read_text(encoding="utf-8"))
    pytester.makepyfile(
        test_a="""
            import torch

            torch.set_num_threads(3)

            def test_that_sets_three_threads():
                torch.set_num_threads(3)
            """,
        test_b="""
            import pytest
            import torch

            @pytest.fixture(scope="module")
            def shared_run():
                return torch.get_num_threads()  # the threads a module's shared training run gets

            def test_one_thread(shared_run):
                assert (shared_run, torch.get_num_threads()) == (1, 1)
            """)
    pytester.runpytest_inprocess("-p", "no:cacheprovider").assert_outcomes(passed=2)


def test_the_sessions_imports_are_left_out_of_full_collections_and_a_tests_own_objects_are_not():
    """conftest.py freezes what the session imported (each full collection walked torch's objects, 0.1 s
    a time, after every pipeline step); a reference cycle that a test makes is still freed by one."""
    assert gc.get_freeze_count() > 0

    class Node:
        pass

    node = Node()
    node.itself = node  # a cycle: only a collection frees it
    freed = weakref.ref(node)
    del node
    gc.collect()
    assert freed() is None


def test_a_thread_or_a_process_a_test_leaves_running_fails_that_test(pytester, tmp_path):
    """One left running acts during a later test (a thread that sends a Ctrl-C once some pool shuts down),
    and that test fails alone of the suite: the test that started it fails instead. One that is ending
    passes, as do tqdm's monitor thread and multiprocessing's own helper process, which stay by design."""
    conftest = Path(__file__).with_name("conftest.py").read_text(encoding="utf-8")
    assert "\nENDING_S = 5 " in conftest
    pytester.makeconftest(conftest.replace("\nENDING_S = 5 ", "\nENDING_S = 0.5 "))  # (a quick test)
    pid_file = tmp_path / "pid"
    pytester.makepyfile(f"""
        import multiprocessing, subprocess, sys, threading, time
        from tqdm import tqdm

        def test_a_thread_left_running():
            threading.Thread(target=time.sleep, args=(1,), daemon=True).start()

        def test_a_process_left_running():
            child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
            open({str(pid_file)!r}, "w").write(str(child.pid))

        def test_a_thread_and_a_process_that_are_ending():
            threading.Timer(0.1, lambda: None).start()
            subprocess.Popen([sys.executable, "-c", "pass"])

        def test_what_stays_by_design():
            list(tqdm(range(2), mininterval=0))
            multiprocessing.get_context("spawn").Lock()  # (a named semaphore: the resource tracker starts)
        """)
    try:
        result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    finally:
        pid = int(pid_file.read_text(encoding="utf-8"))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    result.assert_outcomes(passed=4, errors=2)
    result.stdout.fnmatch_lines(["*threads the test started still run*",
                                 "*processes the test started still run*time.sleep(60)*"])


def test_no_property_test_has_a_time_limit():
    """Hypothesis fails an example that runs past its deadline (200 ms unless told), and calls the test flaky when
    the replay is quick: a pause of the process (a loaded CI machine, another process scheduled instead) within one
    example of test_config.py's range rules failed it. The tests here check results, not speed: every @given has
    @settings(deadline=None), which also lets input generation take 30 s, not 1 s, before a health check fails."""
    def called(decorator: ast.expr, name: str) -> bool:
        return isinstance(decorator, ast.Call) and getattr(decorator.func, "id", None) == name

    def no_deadline(decorators: list[ast.expr]) -> bool:
        return any(keyword.arg == "deadline" and isinstance(keyword.value, ast.Constant) and keyword.value.value is None
                   for decorator in decorators if called(decorator, "settings") for keyword in decorator.keywords)

    limited = [f"{path.name}::{node.name}" for path in sorted(Path(__file__).parent.glob("test_*.py"))
               for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
               if isinstance(node, ast.FunctionDef) and any(called(d, "given") for d in node.decorator_list)
               and not no_deadline(node.decorator_list)]
    assert not limited, f"give each @settings(deadline=None): {limited}"
