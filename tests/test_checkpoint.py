"""Checkpoints: atomic, safe to load, explicit about mismatches, and an exact resume after kill -9."""

from __future__ import annotations

import errno
import json
import os
import pathlib
import random

import numpy as np
import pytest
import torch
from _train_worker import counting_batch, next_token_loss, tiny_gpt
from crash_resume import assert_exact_resume

from minillm.config import ModelConfig, TrainConfig
from minillm.datasets.jsonl import write_jsonl
from minillm.errors import CheckpointError, DataError
from minillm.model.gpt import GPT
from minillm.stage3_rlhf.preferences import append_preference
from minillm.train import load_checkpoint, load_model, save_checkpoint, train
from minillm.train.checkpoint import CKPT_NAME, FORMAT_VERSION, model_config_dict
from minillm.train.loop import append_metrics, write_metrics
from minillm.train.plots import plot_metrics
from minillm.train.resume import check_run_folder
from minillm.train.rng import capture_rng_state, restore_rng_state
from minillm.utils import INTERRUPTED_WRITE, atomic_write_bytes, read_json, write_json

WORKER = pathlib.Path(__file__).with_name("_train_worker.py")


def test_save_then_load_gives_the_same_tensors_and_the_version(tmp_path):
    payload = {"model": {"w": torch.randn(3, 4)}, "step": 7, "note": ["a", 1, None]}
    save_checkpoint(tmp_path / "ckpt.pt", payload)
    loaded = load_checkpoint(tmp_path / "ckpt.pt")
    assert loaded["format_version"] == FORMAT_VERSION and loaded["step"] == 7 and loaded["note"] == ["a", 1, None]
    assert torch.equal(loaded["model"]["w"], payload["model"]["w"])


class FillsUp:
    """A file on a disk that fills up: the first `room` bytes are written, then OSError(ENOSPC)."""

    def __init__(self, f, room: int) -> None:
        self.f, self.room = f, room

    def write(self, data: bytes) -> int:
        self.f.write(data[:self.room])
        self.f.flush()
        if len(data) > self.room:
            raise OSError(28, "No space left on device")
        return len(data)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.f.close()

    def __getattr__(self, name):
        return getattr(self.f, name)


@pytest.mark.parametrize("had_one", [True, False])


def test_a_write_that_fails_half_way_leaves_the_old_checkpoint_intact(tmp_path, monkeypatch, had_one):
    path = tmp_path / "ckpt.pt"
    if had_one:
        save_checkpoint(path, {"step": 1, "w": torch.arange(5.0)})
    written = []
    real_fdopen = os.fdopen

    def fdopen(fd, mode):
        written.append(FillsUp(real_fdopen(fd, mode), room=4096))
        return written[-1]

    monkeypatch.setattr(os, "fdopen", fdopen)
    with pytest.raises(CheckpointError) as info:
        save_checkpoint(path, {"step": 2, "big": torch.zeros(10_000)})
    monkeypatch.undo()
    assert written, "the write was not intercepted"
    assert isinstance(info.value.__cause__, OSError) and "No space left on device" in str(info.value)
    assert ("previous checkpoint there is intact" if had_one else "no earlier checkpoint") in str(info.value)
    assert "a stage command goes on with --resume, the pipeline by itself" in str(info.value)  # it has no --resume
    if had_one:
        loaded = load_checkpoint(path)
        assert loaded["step"] == 1 and torch.equal(loaded["w"], torch.arange(5.0))
    assert sorted(p.name for p in tmp_path.iterdir()) == (["ckpt.pt"] if had_one else [])  # no temporary file


def _write_a_plot(path: pathlib.Path, steps: int) -> None:
    plot_metrics([{"step": s, "loss": 1.0 / s} for s in range(1, steps + 1)], path, ["loss"], title="loss")


@pytest.mark.parametrize(("name", "write", "kept_whole"), [
    ("config.json", lambda path, big: write_json(path, {"note": "x" * big}), True),
    ("loss.png", lambda path, big: _write_a_plot(path, steps=big // 100), True),  # (written whole, or not at all)
    ("metrics.jsonl", lambda path, big: append_metrics(path, {"step": 2, "note": "x" * big}), False),
    ("prefs.jsonl", lambda path, big: append_preference(path, {"prompt": "x" * big}), False),
])


def test_a_write_the_disk_refuses_names_its_file_and_keeps_the_old_one(tmp_path, file_size_limit, name, write,
                                                                       kept_whole):
    """A full disk or a file-size limit stopped `pretrain clm` with "minillm: error: [Errno 27] File too
    large": no file named, nor what to do; and a plot being redrawn was left cut off half way."""
    path = tmp_path / name
    write(path, 10)
    before = path.read_bytes()
    with file_size_limit(len(before) + 100), pytest.raises(OSError) as info:
        write(path, 20_000)
    assert info.value.filename == str(path) and info.value.errno == errno.EFBIG
    if kept_whole:
        assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temporary file left beside it


NOT_FINITE = {"loss": float("nan"), "grad_norm": float("inf"), "gains": {"1": [float("-inf"), 0.5]},
              "band": (np.float64("nan"), 0.25), "n": 3}  # a tuple (a list in JSON) and a numpy float


def strict_json(text: str) -> object:
    """`text` read as a strict parser reads JSON (JavaScript's JSON.parse, jq): NaN and Infinity are no JSON."""
    return json.loads(text, parse_constant=lambda word: pytest.fail(f"{word} is not JSON"))


@pytest.mark.parametrize(("name", "write"), [
    ("reward_metrics.json", lambda path: write_json(path, NOT_FINITE)),
    ("metrics.jsonl", lambda path: append_metrics(path, NOT_FINITE)),
    ("metrics.jsonl", lambda path: write_metrics(path, [NOT_FINITE])),
    ("answers.jsonl", lambda path: write_jsonl(path, [NOT_FINITE])),
    ("prefs.jsonl", lambda path: append_preference(path, NOT_FINITE)),
])
def test_every_json_file_is_strict_json_with_null_for_a_figure_that_is_no_number(tmp_path, name, write):
    """Python's json writes NaN and Infinity, which Python reads back and no strict parser does: the
    reward_metrics.json of rankings of your own, and a float16 run's metrics.jsonl, could not be read
    outside Python. Each writer now writes null there (utils.json_text)."""
    write(tmp_path / name)
    text = (tmp_path / name).read_text(encoding="utf-8")
    read = [strict_json(text)] if name.endswith(".json") else [strict_json(line) for line in text.splitlines()]
    assert read == [{"loss": None, "grad_norm": None, "gains": {"1": [None, 0.5]}, "band": [None, 0.25], "n": 3}]


class Payload:
    """What an attacker would put in a checkpoint: unpickling it calls Path.touch(marker)."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def test_a_checkpoint_carrying_a_pickled_object_is_refused_before_it_runs(tmp_path):
    marker = tmp_path / "payload_ran"
    evil = tmp_path / "evil.pt"
    torch.save({"format_version": FORMAT_VERSION, "model": {}, "extra": Payload(marker)}, evil)
    with pytest.raises(CheckpointError, match="refused: it carries a pickled Python object"):
        load_checkpoint(evil)
    assert not marker.exists()
    # The control: an unsafe load really would have run it.
    torch.load(evil, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("damage, message", [
    (lambda data: data[: len(data) // 2], "corrupt or truncated"),
    (lambda data: b"", "corrupt or truncated"),
    (lambda data: b"this is not a checkpoint at all", "corrupt or truncated"),
    # another file of a run folder, passed by mistake, is named for what it is
    (lambda data: b' {"step": 3}', "is a JSON file, not a checkpoint"),
    (lambda data: b"[1, 2]\n", "is a JSON file, not a checkpoint"),
    (lambda data: b"\x89PNG\r\n\x1a\n" + data, "is a PNG image file, not a checkpoint"),
])


def test_a_damaged_file_is_a_clear_error(tmp_path, damage, message):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, {"model": {"w": torch.randn(64, 64)}})
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)


def test_missing_foreign_and_future_files_are_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "nope.pt")
    torch.save({"state_dict": {}}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a minillm checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    for version in (FORMAT_VERSION + 1, FORMAT_VERSION - 1):  # a newer minillm's, or an older one's
        torch.save({"format_version": version}, tmp_path / "other.pt")
        with pytest.raises(CheckpointError, match=f"format version {version}"):
            load_checkpoint(tmp_path / "other.pt")


def test_an_atomic_write_reaches_the_disk_before_it_takes_the_name(tmp_path, monkeypatch):
    """fsync, then rename: after a crash the name holds the old file or the whole new one, never a part.
    The temporary file lies beside the target: a rename is atomic only within one file system (from
    /tmp it may fail, or copy), and a kill leaves it where the next run's lock cleans it up."""
    events, renamed = [], []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda src, dst: (events.append("replace"), renamed.append(src),
                                                         real_replace(src, dst))[2])
    atomic_write_bytes(tmp_path / "out.bin", b"abc")
    assert events == ["fsync", "replace"] and (tmp_path / "out.bin").read_bytes() == b"abc"
    assert pathlib.Path(renamed[0]).parent == tmp_path and INTERRUPTED_WRITE.fullmatch(pathlib.Path(renamed[0]).name)


def test_rng_states_survive_a_weights_only_round_trip(tmp_path):
    """Each generator continues after a restore with the very numbers it would have drawn next,
    including the half-used pairs: Python's `random.gauss` and NumPy's `normal` each draw two
    Gaussians at once and keep the second for the next call."""
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    random.gauss(0, 1), np.random.normal()  # each caches the second Gaussian of its pair: part of the state
    save_checkpoint(tmp_path / "rng.pt", {"rng": capture_rng_state()})
    expected = (random.gauss(0, 1), random.random(), np.random.normal(), np.random.rand(), torch.rand(3))
    restore_rng_state(load_checkpoint(tmp_path / "rng.pt")["rng"])
    again = (random.gauss(0, 1), random.random(), np.random.normal(), np.random.rand(), torch.rand(3))
    assert expected[:4] == again[:4] and torch.equal(expected[4], again[4])


# --------------------------------------------------------------------------------------------------
# Resuming: the right model only, never overwriting silently, exactly where it stopped.


def short_run(out_dir, model, max_steps=3, resume=False, model_kind="gpt", optimizer="adamw") -> dict:
    cfg = TrainConfig(max_steps=max_steps, batch_size=4, eval_every=100, eval_batches=1, save_every=100,
                      optimizer=optimizer)
    return train(model, cfg, out_dir, get_batch=counting_batch(4), loss_fn=next_token_loss, resume=resume,
                 model_kind=model_kind)


def test_resuming_with_another_model_config_names_the_fields_that_differ(tmp_path):
    short_run(tmp_path, tiny_gpt())
    other = GPT(ModelConfig(vocab_size=16, block_size=12, n_layer=2, n_head=2, n_embd=32, bias=False))
    with pytest.raises(CheckpointError, match=r"n_embd: 16 -> 32; n_layer: 1 -> 2"):
        short_run(tmp_path, other, resume=True)
    with pytest.raises(CheckpointError, match=r"holds a 'gpt' model, not a 'reward' one"):
        short_run(tmp_path, tiny_gpt(), resume=True, model_kind="reward")


def test_a_checkpoint_from_before_a_setting_existed_resumes_at_its_default(tmp_path, capsys):
    """An older minillm's checkpoint lacks the model fields (arch, norm_type, ...) and the optimizer
    added since: the model it held is today's at their defaults, as load_model reads it, so training
    it longer goes on, with no setting said to have changed but the one that did."""
    short_run(tmp_path, tiny_gpt())
    ckpt = load_checkpoint(tmp_path / "ckpt.pt")
    for field in ("arch", "mlp", "mlp_hidden", "n_kv_head", "norm_type", "rope_base", "tie_embeddings"):
        del ckpt["model_config"][field]
    del ckpt["train_config"]["optimizer"]
    save_checkpoint(tmp_path / "ckpt.pt", {key: value for key, value in ckpt.items() if key != "format_version"})
    assert short_run(tmp_path, tiny_gpt(), max_steps=5, resume=True)["history"]
    assert "changed training settings: max_steps: 3 -> 5. " in capsys.readouterr().out


def test_resuming_with_another_optimizer_names_the_one_the_run_was_trained_with(tmp_path):
    short_run(tmp_path / "adamw", tiny_gpt())
    with pytest.raises(CheckpointError, match=r"trained with optimizer=adamw.*resume it with optimizer=adamw"):
        short_run(tmp_path / "adamw", tiny_gpt(), max_steps=5, resume=True, optimizer="muon")
    short_run(tmp_path / "muon", tiny_gpt(), optimizer="muon")
    with pytest.raises(CheckpointError, match=r"trained with optimizer=muon"):
        short_run(tmp_path / "muon", tiny_gpt(), max_steps=5, resume=True)
    assert short_run(tmp_path / "muon", tiny_gpt(), max_steps=5, resume=True, optimizer="muon")["history"]


def test_a_new_run_refuses_to_overwrite_a_finished_one(tmp_path):
    short_run(tmp_path, tiny_gpt())
    before = (tmp_path / "ckpt.pt").read_bytes()
    with pytest.raises(CheckpointError, match="already holds a training run.*resume"):
        short_run(tmp_path, tiny_gpt())
    assert (tmp_path / "ckpt.pt").read_bytes() == before


def test_resuming_a_finished_run_returns_its_results_and_extending_it_continues(tmp_path):
    first = short_run(tmp_path, tiny_gpt(), max_steps=3)
    again = short_run(tmp_path, tiny_gpt(seed=99), max_steps=3, resume=True)
    assert again["final"] == first["final"]
    longer = short_run(tmp_path, tiny_gpt(seed=99), max_steps=5, resume=True)
    assert [row["step"] for row in longer["history"] if row["split"] == "train"] == [1, 3, 5]


def test_a_fresh_start_says_nothing_about_resuming_and_a_resume_names_its_step(tmp_path, capsys):
    short_run(tmp_path, tiny_gpt(), max_steps=3, resume=True)  # resume asked, nothing to resume: a plain start
    assert "resum" not in capsys.readouterr().out
    short_run(tmp_path, tiny_gpt(), max_steps=4, resume=True)
    assert f"train: resuming from step 3 ({tmp_path / 'ckpt.pt'})" in capsys.readouterr().out


def test_load_model_names_a_config_it_cannot_rebuild(tmp_path):
    save_checkpoint(tmp_path / "ckpt.pt", {"model": {}, "model_config": None})
    with pytest.raises(CheckpointError, match="holds no model config"):
        load_model(tmp_path, GPT)
    save_checkpoint(tmp_path / "ckpt.pt", {"model": {}, "model_config": {"n_embd": 16, "wings": 2}})
    with pytest.raises(CheckpointError, match="invalid model config.*wings"):
        load_model(tmp_path, GPT)
    save_checkpoint(tmp_path / "ckpt.pt", {"model": {"nope": torch.zeros(1)}, "model_config": {},
                                         "model_kind": "gpt"})
    with pytest.raises(CheckpointError, match=r"weights do not fit this model \(Missing key\(s\) .*tok_emb"):
        load_model(tmp_path / "ckpt.pt", GPT)  # the message names the keys, not only torch's header line
    for weights in ({}, {"model": [1, 2]}):  # checkpoints made by hand: no weights, or not a dict of tensors
        save_checkpoint(tmp_path / "ckpt.pt", {**weights, "model_config": {}, "model_kind": "gpt"})
        with pytest.raises(CheckpointError, match='holds no model weights \\(no "model" entry'):
            load_model(tmp_path, GPT)


def test_resuming_from_a_checkpoint_the_loop_did_not_write_names_what_it_lacks(tmp_path):
    model = tiny_gpt()  # as PPO and GRPO save their runs: the model, no optimizer or RNG state
    save_checkpoint(tmp_path / "ckpt.pt", {"model_kind": "gpt", "model_config": model_config_dict(model),
                                         "model": model.state_dict()})
    with pytest.raises(CheckpointError, match=r"not written by the training loop \(it has no step, train_config"):
        short_run(tmp_path, tiny_gpt(), resume=True)


def test_resuming_with_other_parameters_trained_says_so(tmp_path):
    short_run(tmp_path, tiny_gpt(), max_steps=2)
    frozen = tiny_gpt()
    frozen.tok_emb.requires_grad_(False)  # e.g. a LoRA run resumed with other layers trained
    with pytest.raises(CheckpointError, match=r"another set of trained parameters"):
        short_run(tmp_path, frozen, max_steps=4, resume=True)


def worker_command(out_dir: pathlib.Path, resume: bool) -> list[str]:
    return [str(WORKER), "--out", str(out_dir), "--steps", "12", "--save-every", "4", "--grad-accum", "2",
            *(["--resume"] if resume else [])]


@pytest.mark.parametrize(("kill_after", "dtype"), [(7, "float32"), (11, "float16")])


def test_a_killed_run_resumes_bit_for_bit(tmp_path, kill_after, dtype):
    """SIGKILL after update 7 or 11 (checkpoints at 4 and 8), then resume.

    The worker uses dropout (torch's RNG), a data generator and accumulation, so a missing piece of
    state (RNG, generator, optimizer moments, step) shows up as a difference; so do the metrics rows
    logged after the checkpoint, which the resume must drop. float16 adds the loss scaler's state.
    """
    def command(out_dir: pathlib.Path, resume: bool) -> list[str]:
        return [*worker_command(out_dir, resume), "--dtype", dtype]

    assert_exact_resume(command, tmp_path, kill_after_updates=kill_after)


def test_the_step_a_ctrl_c_keeps_is_the_newest_readable_checkpoints(tmp_path):
    """After Ctrl-C the command names the step it keeps: that of the checkpoint written last, in the
    run folder or a pipeline step's folder below it, passing over one that no longer reads. Told the
    oldest instead (or a step folder's overlooked), a learner would resume expecting the wrong step."""
    from minillm.train.checkpoint import last_saved_step

    for folder, step, written_at in (("02_mlm", 40, 1_000), ("03_clm", 7, 2_000), ("04_sft", 99, 3_000)):
        save_checkpoint(tmp_path / folder / "ckpt.pt", {"step": step})
        os.utime(tmp_path / folder / "ckpt.pt", (written_at, written_at))  # when each was written, set by hand
    (tmp_path / "04_sft" / "ckpt.pt").write_bytes(b"cut short")  # the newest, damaged: not what is kept
    os.utime(tmp_path / "04_sft" / "ckpt.pt", (3_000, 3_000))
    assert last_saved_step(tmp_path) == (tmp_path / "03_clm" / "ckpt.pt", 7)
    assert last_saved_step(tmp_path / "02_mlm") == (tmp_path / "02_mlm" / "ckpt.pt", 40)
    assert last_saved_step(tmp_path / "05_rm") is None


def test_a_resume_gives_each_rank_its_own_dropout_stream(tmp_path):
    """Saved by 1 process at step 3, resumed by 2: no rank has a saved stream, so each is seeded anew.
    Seeded as a fresh run's rank is (seed + rank), dropout would repeat the masks of steps 1, 2, ... all
    over again; the same seed on both ranks would drop the same units on each. Both must differ. Saved
    by 2 and resumed by 2, each rank goes on with its own saved stream."""
    from minillm.train.distributed import DistContext
    from minillm.train.optim import make_optimizer
    from minillm.train.resume import restore_training_state, save_training_state
    from minillm.utils import seed_everything

    cfg, model = TrainConfig(), tiny_gpt()
    no_scaler = torch.amp.GradScaler("cpu", enabled=False)
    save_training_state(tmp_path / "ckpt.pt", model, make_optimizer(model, cfg), no_scaler, torch.Generator(), cfg,
                        DistContext(), step=3, model_kind="gpt", elapsed_s=0.0, stage="train")
    draws = {}
    for rank in (0, 1):
        restore_training_state(tmp_path / "ckpt.pt", model, make_optimizer(model, cfg), no_scaler, torch.Generator(),
                               cfg, DistContext(rank, world_size=2), "gpt", "train")
        draws[rank] = torch.rand(8)
        seed_everything(cfg.seed + rank)  # how a fresh run seeds this rank
        assert not torch.equal(draws[rank], torch.rand(8))
    assert not torch.equal(draws[0], draws[1])
    # saved by 2 processes, resumed by 2: rank 1 goes on with its own stream, not rank 0's
    ckpt = load_checkpoint(tmp_path / "ckpt.pt")
    ckpt["rng"] = []
    for seed in (10, 11):  # each rank's generators when it saved
        seed_everything(seed)
        ckpt["rng"].append(capture_rng_state())
    save_checkpoint(tmp_path / "ckpt.pt", ckpt)
    restore_training_state(tmp_path / "ckpt.pt", model, make_optimizer(model, cfg), no_scaler, torch.Generator(),
                           cfg, DistContext(1, world_size=2), "gpt", "train")
    resumed = torch.rand(8)
    torch.manual_seed(11)
    assert torch.equal(resumed, torch.rand(8))


def test_a_resume_by_the_same_code_records_where_it_trains_now(tmp_path):
    """Begun on one device and resumed by the same code on another: config.json's record names the
    device of the steps from here on, and keeps what the earlier record knew that this one does not
    (the code of a run it was itself resumed from)."""
    from minillm.provenance import MADE_BY, code_record, run_record

    earlier = {**code_record(), "device": "cuda:0 (a GPU)", "resumed_from": None}
    write_json(tmp_path / "config.json", {MADE_BY: earlier})
    assert run_record(tmp_path / "config.json", "cpu", resumed=True) == {**code_record(), "device": "cpu",
                                                                          "resumed_from": None}


def test_the_code_of_a_pipelines_steps_is_one_phrase_only_when_it_is_one_code():
    """A pipeline run whose steps were made by different code (an upgrade half way) says which made
    which: a learner comparing its figures must not read them as one code's."""
    from minillm.provenance import code_summary

    new = {"minillm": "0.2.0", "commit": "ca60458abcdef", "dirty": True, "torch": "2.6.0", "python": "3.12.3"}
    assert code_summary({"01_tokenizer": new, "02_mlm": new}) == (
        "minillm 0.2.0 (commit ca60458abc with uncommitted changes), torch 2.6.0, Python 3.12.3")
    assert code_summary({"01_tokenizer": new, "02_mlm": new, "03_clm": None}) == (
        "minillm 0.2.0 (commit ca60458abc with uncommitted changes), torch 2.6.0, Python 3.12.3 for "
        "01_tokenizer, 02_mlm; unknown code (made before minillm recorded it) for 03_clm")


def test_a_long_reason_is_cut_between_words():
    from minillm.train.checkpoint import _shorten

    reason = "PytorchStreamReader failed reading zip archive: failed finding central directory " * 3
    short = _shorten(reason.strip())
    assert len(short) <= 124 and short.endswith(" ...")
    assert reason.startswith(short[:-4]) and reason[len(short) - 4] == " "  # the cut falls on a space
    assert _shorten("short and whole") == "short and whole"


def test_load_model_gives_a_model_in_eval_mode(tmp_path):
    short_run(tmp_path, tiny_gpt(dropout=0.5))
    model, _ = load_model(tmp_path, GPT)
    assert not model.training and not any(m.training for m in model.modules())


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])


def test_load_model_refuses_weights_that_are_not_finite(tmp_path, bad):
    """One weight NaN or infinite, as in a run that diverged: every answer would be sampled from NaN
    probabilities (an inf weight makes them NaN as surely as a NaN does), so loading says so in one line."""
    short_run(tmp_path, tiny_gpt())
    ckpt = load_checkpoint(tmp_path / "ckpt.pt")
    ckpt["model"]["blocks.0.mlp.fc.weight"][0, 0] = bad
    save_checkpoint(tmp_path / "ckpt.pt", ckpt)
    with pytest.raises(CheckpointError, match="NaN or infinite weights"):
        load_model(tmp_path, GPT)


@pytest.mark.parametrize("model_ids", [200, 262, 300])


def test_load_model_refuses_a_tokenizer_with_another_number_of_ids(tmp_path, model_ids):
    """A tokenizer.json copied from another run: id 7 would mean another piece than in training, so
    the text in and out would be garbage. Too few ids is as wrong as too many; the same number loads."""
    from minillm.tokenizer import train_tokenizer

    tokenizer = train_tokenizer(["abc abd"], vocab_size=262, progress=False)  # 256 bytes + 6 special tokens
    tokenizer.save(tmp_path / "tokenizer.json")
    model = GPT(ModelConfig(vocab_size=model_ids, block_size=4, n_layer=1, n_head=1, n_embd=8))
    save_checkpoint(tmp_path / "ckpt.pt", {"model_kind": "gpt", "model_config": model_config_dict(model),
                                           "model": model.state_dict()})
    if model_ids == tokenizer.vocab_size:
        assert load_model(tmp_path, GPT)[1].vocab_size == 262
    else:
        with pytest.raises(CheckpointError, match=f"has 262 ids but the model beside it {model_ids}"):
            load_model(tmp_path, GPT)


def test_an_atomic_write_gives_the_file_the_usual_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "out.bin", b"abc")
    finally:
        os.umask(umask)
    assert (tmp_path / "out.bin").stat().st_mode & 0o777 == 0o644  # not mkstemp's owner-only 0o600


def test_a_result_json_that_is_not_utf8_is_named_not_a_traceback(tmp_path):
    (tmp_path / "result.json").write_bytes(b'{"loss": "caf\xe9"}')  # edited in a Latin-1 editor, say
    with pytest.raises(DataError, match=r"result.json is not valid JSON .*restore it"):
        read_json(tmp_path / "result.json")


def test_asking_for_cuda_where_there_is_none_is_a_config_error(monkeypatch):
    from minillm.errors import ConfigError
    from minillm.utils import resolve_device
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for name in ("cuda", "cuda:0"):
        with pytest.raises(ConfigError, match="CUDA is not available here"):
            resolve_device(name)


@pytest.mark.parametrize("initialized", [True, False])


def test_cuda_rng_states_are_saved_and_restored_once_cuda_is_in_use(monkeypatch, initialized):
    """torch.cuda faked, so that a CPU-only machine sees what a GPU run saves: every device's generator
    state once CUDA has started (and nothing before, so that saving never starts CUDA), given back
    to torch.cuda on restore."""
    device_states = [torch.tensor([1, 2, 3], dtype=torch.uint8), torch.tensor([4, 5], dtype=torch.uint8)]
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: initialized)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: len(device_states))
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: device_states)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", restored.append)
    state = capture_rng_state()
    assert ("cuda" in state) == initialized
    restore_rng_state(state)
    assert restored == ([device_states] if initialized else [])


def test_a_resume_that_sees_fewer_gpus_restores_the_generators_of_those_there(monkeypatch):
    """A checkpoint of a process that saw 2 GPUs, resumed where 1 is visible (CUDA_VISIBLE_DEVICES,
    another machine). torch's own set_rng_state_all runs, down to its list of per-GPU generators
    (faked: one), where a state for the missing GPU raised IndexError."""

    class Generator:  # stands in for torch.cuda.default_generators[i]
        def set_state(self, new_state: torch.Tensor) -> None:
            self.state = new_state

    there = Generator()
    state = {**capture_rng_state(), "cuda": [torch.tensor([1, 2], dtype=torch.uint8),
                                             torch.tensor([3, 4], dtype=torch.uint8)]}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)  # torch sets a state at once, not lazily
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "default_generators", (there,))
    restore_rng_state(state)
    assert torch.equal(there.state, state["cuda"][0])


def test_the_mps_rng_state_is_saved_and_restored_where_mps_exists(monkeypatch):
    """torch.mps faked, as torch.cuda is above: on an Apple GPU dropout draws from the MPS generator."""
    mps_state, restored = torch.tensor([7, 8, 9], dtype=torch.uint8), []
    monkeypatch.setattr("minillm.train.rng.mps_available", lambda: True)
    monkeypatch.setattr(torch.mps, "get_rng_state", lambda: mps_state)
    monkeypatch.setattr(torch.mps, "set_rng_state", restored.append)
    state = capture_rng_state()
    assert torch.equal(state["mps"], mps_state)
    restore_rng_state(state)
    assert restored == [mps_state]


@pytest.mark.parametrize("resume", [True, False])
def test_a_folder_where_the_checkpoint_goes_is_refused_before_anything_is_written(tmp_path, resume):
    """ckpt.pt a folder: --resume found "nothing to resume", started a new run over the old run's
    metrics.jsonl and config.json, and failed at its first save advising to free disk space."""
    (tmp_path / CKPT_NAME).mkdir()
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n', encoding="utf-8")
    with pytest.raises(CheckpointError, match=r"ckpt\.pt is not a file \(a folder\?\).*move it away"):
        check_run_folder(tmp_path, resume, "clm", None, None)
    assert (tmp_path / "metrics.jsonl").read_text(encoding="utf-8") == '{"step": 1, "loss": 2.0}\n'
