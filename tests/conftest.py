"""Shared test setup: what every test gets without asking, and the fixtures a test asks for by name.

Every test, without asking (autouse): one thread (`one_thread`, `one_thread_again`), Python's garbage
collector kept off the imported modules (`imports_left_out_of_collections`), and a check that no
thread or process it started outlives it (`nothing_a_test_starts_outlives_it`).

By name: `device` (the --device option: `pytest --device cuda tests/test_device.py`),
`file_size_limit` (writes that fail half way, as on a full disk), `drawn_figures` (the matplotlib
figures a test saved), `untrained_runs` and `stage3_runs` (run folders made once per session, for the
tests that only read them).

Shared helpers that are not fixtures sit beside this file, imported by name: crash_resume.py (kill a
training command, resume it, compare bit for bit), _kill_after_updates.py (the kill, after a chosen
optimizer update), _train_worker.py (a tiny training run to kill or to run under torchrun),
pretend_gpu.py (CUDA's device checks on a CPU-only torch), _plots.py (what a plot test reads off a
drawn figure) and _tokenizer_files.py (damaged tokenizer files).
"""

import gc
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest
import torch


def pytest_configure(config):
    """The tests that send Ctrl-C (SIGINT) to this process, to a worker or to a `minillm` they start must
    see Python answer it, however pytest was started. A shell without job control (a script, a CI
    runner) starts a background job, `pytest ... &`, with SIGINT *ignored*, and so does every program
    started from it: Python then sets no KeyboardInterrupt handler. The signal did nothing, a test
    expecting a KeyboardInterrupt failed ("DID NOT RAISE"), and one accepting a run that finished passed
    without checking anything. Python's own handler is set back here; the commands the tests start then
    begin with the default too, since exec resets a handled signal (an ignored one stays ignored)."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """The tests use tiny tensors: one thread is fastest, and on a busy 2-core machine several
    threads would wait on each other (gradcheck took 30 s with 2 threads, 0.5 s with 1).
    One thread for the whole session, the fixtures that train a module's shared runs included: a model
    trained with 2 threads differs in its last bits from one trained with 1, so a shared run would
    otherwise differ with whichever test ran before it, or with the machine when a file runs alone."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True, scope="session")
def imports_left_out_of_collections():
    """Python's full collections leave alone what the session has imported (gc.freeze): the pipeline
    collects after every step, and Python itself now and then, and each full collection walked the
    objects of torch, matplotlib and every module the tests import, 0.1 s and more a time, most of
    the seconds of the tests whose steps train nothing. What a test makes is collected as before.
    torch imports its compiler (torch._dynamo, and sympy with it: 100,000 objects more) at the first
    optimizer step: imported here, it is left out too. (A suite that a test runs inside this one, with
    pytester, finds the imports frozen already.)"""
    if not gc.get_freeze_count():
        import torch._dynamo  # noqa: F401  (what the first training step would import)

        gc.collect()  # (what is garbage already goes first: frozen, it would stay for the session)
        gc.freeze()


@pytest.fixture(autouse=True)
def one_thread_again(one_thread):
    """A test that changes the thread count (a lesson sets 2) leaves one thread to what comes next."""
    yield
    torch.set_num_threads(1)


ENDING_S = 5  # how long a thread or a process a test started may take to end after the test


@pytest.fixture(autouse=True)
def nothing_a_test_starts_outlives_it():
    """A thread or a process a test started must have ended with the test (a few seconds are given to one
    that is ending). One left running acts during a later test: a thread that sends this process a Ctrl-C
    once a pool shuts down, a timer that writes a file, a training run competing for the 2 cores, and that
    later test fails, alone of the suite, with nothing in it to say why. Costs a few ms a test (/proc read
    twice; under 1% of the suite). Left alone: tqdm's monitor thread and multiprocessing's helper processes,
    which stay by design."""
    threads, children = set(threading.enumerate()), running_children()
    yield
    deadline = time.monotonic() + ENDING_S
    while True:
        threads_left = [thread.name for thread in set(threading.enumerate()) - threads if not is_tqdms(thread)]
        children_left = {pid for pid in running_children() - children if not kept_by_multiprocessing(pid)}
        if not (threads_left or children_left) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not threads_left, f"threads the test started still run: {threads_left}"
    assert not children_left, f"processes the test started still run: {[cmdline(pid) for pid in children_left]}"


def is_tqdms(thread: threading.Thread) -> bool:
    """tqdm's monitor thread, which stays by design: named "tqdm_monitor" by tqdm 4.66 on, "Thread-N" before."""
    return thread.name == "tqdm_monitor" or type(thread).__module__ == "tqdm._monitor"


def running_children() -> set[int]:
    """The process ids of this process's children that run (not those ended and waiting to be reaped);
    an empty set where there is no /proc to read them from (macOS, Windows)."""
    if not os.path.isdir("/proc"):
        return set()
    found = set()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as stat:
                state, parent = stat.read().rsplit(b")", 1)[1].split()[:2]  # the fields after "(its name)"
        except OSError:  # a process that ended while we read
            continue
        if int(parent) == os.getpid() and state != b"Z":
            found.add(int(name))
    return found


def kept_by_multiprocessing(pid: int) -> bool:
    """Whether `pid` is a helper process multiprocessing starts once and keeps for the session."""
    return any(helper in cmdline(pid) for helper in ("multiprocessing.resource_tracker", "multiprocessing.forkserver"))


def cmdline(pid: int) -> str:
    """The command line of process `pid`, for the message (what it is, if it has ended meanwhile)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return f"process {pid}, ended since"


@pytest.fixture
def file_size_limit() -> Callable[[int], AbstractContextManager[None]]:
    """`with file_size_limit(n):` no file may grow past n bytes (as `ulimit -f`): a write past it fails
    half way with EFBIG, as one on a full disk fails with ENOSPC (Python ignores the SIGXFSZ signal
    that would end the process). Skipped where there are no such limits (Windows)."""
    resource = pytest.importorskip("resource")

    @contextmanager
    def limit(n_bytes: int) -> Iterator[None]:
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (n_bytes, hard))
        try:
            yield
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))

    return limit


def pytest_addoption(parser):
    parser.addoption("--device", default="cpu", help="the device for tests that take one (tests/test_device.py): "
                     "cpu, cuda, mps; bench/gpu_check.sh runs them with --device cuda")


@pytest.fixture
def device(request) -> torch.device:
    """The device named by --device; the test is skipped where it is not present."""
    name = request.config.getoption("--device")
    if name.startswith("cuda") and not torch.cuda.is_available():
        pytest.skip("--device cuda, but CUDA is not available")
    if name == "mps" and not torch.backends.mps.is_available():
        pytest.skip("--device mps, but MPS is not available")
    return torch.device(name)


@pytest.fixture
def drawn_figures(monkeypatch) -> list:
    """Every matplotlib Figure saved during the test, in order: to look at a plot's axes and title."""
    from matplotlib.figure import Figure

    figures = []
    real_savefig = Figure.savefig

    def savefig(fig, *args, **kwargs):
        figures.append(fig)
        return real_savefig(fig, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)
    return figures


@pytest.fixture(scope="session")
def untrained_runs(tmp_path_factory) -> Path:
    """Run folders `gpt/` and `bert/` as training writes them (ckpt.pt and tokenizer.json), with
    random weights: for the commands that load a trained model, the plumbing, not the quality."""
    from minillm.config import ModelConfig, to_dict
    from minillm.model import GPT, Bert
    from minillm.tokenizer import train_tokenizer
    from minillm.train import save_checkpoint

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("untrained_runs")
    text = ("The river rises at night. A flash flood watch will be in effect all night.\n\n"
            "The town of Vell sits on the river. Rain is expected all weekend in Vell.\n\n") * 20
    tok = train_tokenizer([text], 300, progress=False)
    for kind, cls, extra in (("gpt", GPT, {}), ("bert", Bert, {"norm": "post", "activation": "gelu"})):
        config = ModelConfig(vocab_size=tok.vocab_size, n_layer=1, n_head=2, n_embd=16, block_size=32, **extra)
        save_checkpoint(root / kind / "ckpt.pt", {"model_kind": kind, "model_config": to_dict(config),
                                                  "model": cls(config).state_dict()})
        tok.save(root / kind / "tokenizer.json")
    return root


@pytest.fixture(scope="session")
def stage3_runs(tmp_path_factory) -> dict[str, Path]:
    """test_ppo.py's micro SFT run, rankings of its answers and a reward model trained on them (build_runs),
    made once for test_ppo.py and test_grpo.py: their tests only read these and train into folders of their own."""
    from test_ppo import build_runs

    return build_runs(tmp_path_factory.mktemp("stage3"))
