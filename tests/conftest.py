"""Shared test setup."""

import signal
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


@pytest.fixture(autouse=True)
def one_thread_again(one_thread):
    """A test that changes the thread count (a lesson sets 2) leaves one thread to what comes next."""
    yield
    torch.set_num_threads(1)


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
