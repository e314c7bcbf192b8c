"""The suite's own setup (tests/conftest.py): a test file run alone, a test chosen with -k, or the
whole suite in any order computes with the same settings."""

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
