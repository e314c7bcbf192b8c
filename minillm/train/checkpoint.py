"""Checkpoints that survive a crash and cannot smuggle code in.

Three dangers, three defences:

1. **A crash while writing.** Killing a process half way through `torch.save(obj, "ckpt.pt")`
   leaves half a file, and the previous good checkpoint is already gone. So we serialise to
   memory, write a temporary file in the same folder, flush it to disk (fsync) and rename it over
   the old one (`minillm.utils.atomic_write_bytes`). A rename is atomic: a reader, or a resume
   after `kill -9`, sees the old checkpoint or the new one, never a mix.
2. **A file that runs code.** `torch.save` uses Python's pickle, and unpickling can call any
   function the file names (`os.system`, ...). We load with `torch.load(weights_only=True)`, which
   only rebuilds tensors and plain containers (dict, list, int, str, ...) and refuses the rest
   before running it. That is also why everything we store is plain: RNG states become lists.
3. **The wrong model.** Loading weights into a model of another shape fails deep inside torch
   with a wall of key names. Each checkpoint carries a format version, the model config and the
   model kind, and `check_model_config` says in one line which config fields differ.
"""

from __future__ import annotations

import dataclasses
import io
import os
import pickle
import re
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from minillm.config import ModelConfig, at_defaults, diff_configs, from_dict, to_dict
from minillm.errors import CheckpointError, ConfigError
from minillm.tokenizer import TOKENIZER_NAME, Tokenizer, load_tokenizer
from minillm.utils import atomic_write_bytes, resolve_device

FORMAT_VERSION = 1  # bump when the payload's layout changes; loading refuses other versions
CKPT_NAME = "ckpt.pt"
CONFIG_NAME = "config.json"  # the run's settings, which the training loop writes beside its checkpoint
ModelT = TypeVar("ModelT", bound=nn.Module)  # load_model(run, GPT) gives back a GPT


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    """Write `payload` (tensors and plain values only) atomically, stamped with the format version."""
    buffer = io.BytesIO()
    torch.save({"format_version": FORMAT_VERSION, **payload}, buffer)
    try:
        atomic_write_bytes(path, buffer.getvalue())
    except OSError as err:  # e.g. the disk filled up half way: the temporary file is gone, the old one kept
        kept = "the previous checkpoint there is intact" if Path(path).is_file() else "no earlier checkpoint exists"
        raise CheckpointError(
            f"could not write the checkpoint {path} ({err.strerror or err}); {kept}. Free some disk space "
            "(or fix the folder's permissions) and run the command again: a stage command goes on with --resume, "
            "the pipeline by itself (it has no --resume)"
        ) from err


def saved_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """The checkpoint files in `run_dir` or one folder below it (a pipeline's steps), unread."""
    run_dir = Path(run_dir)
    return [p for p in (run_dir / CKPT_NAME, *run_dir.glob(f"*/{CKPT_NAME}")) if p.is_file()]


def last_saved_step(run_dir: str | os.PathLike) -> tuple[Path, int] | None:
    """(path, step) of the newest readable checkpoint of `saved_checkpoints(run_dir)`, None when there
    is none: what a Ctrl-C message tells the user they keep."""
    for path in sorted(saved_checkpoints(run_dir), key=lambda p: p.stat().st_mtime, reverse=True):
        try:
            return path, int(load_checkpoint(path).get("step", 0))
        except CheckpointError:
            continue
    return None


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint safely; every way it can be wrong is a CheckpointError saying which."""
    path = Path(path)
    if not path.is_file():
        runs = sorted(ckpt.parent.name for ckpt in path.parent.glob(f"*/{path.name}")) if path.parent.is_dir() else []
        inside = f"; {path.parent} holds runs in its folders {', '.join(runs)}: name one of them" if runs else ""
        raise CheckpointError(f"no checkpoint at {path}: check the path, or train a model there first{inside}")
    with path.open("rb") as f:
        head = f.read(8)
    other = "JSON" if head.lstrip()[:1] in (b"{", b"[") else "PNG image" if head.startswith(b"\x89PNG") else None
    if other:  # another file of a run folder (config.json, tokenizer.json, metrics.jsonl, loss.png)
        raise CheckpointError(f"{path} is a {other} file, not a checkpoint: pass the run folder, or the {CKPT_NAME} "
                              "in it")
    if isinstance(map_location, str):  # a device this machine lacks is named as such, not blamed on the file
        map_location = resolve_device(map_location)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        # torch refuses a pickled object by naming its GLOBAL; any other unpickling error means damage
        culprit = re.search(r"GLOBAL ([\w.]+)", str(err))
        if culprit is None:
            raise CheckpointError(f"{path} is corrupt or truncated (not a readable torch file); "
                                  "use an intact copy or train again") from None
        raise CheckpointError(
            f"{path} was refused: it carries a pickled Python object ({culprit.group(1)}) that could run "
            "code when loaded. minillm checkpoints hold only tensors and plain values; load only "
            "checkpoints written by minillm"
        ) from None
    except Exception as err:  # torch reports damaged files as RuntimeError, EOFError, KeyError, ...
        raise CheckpointError(
            f"{path} is corrupt or truncated ({short_reason(err)}); use an intact copy or train again"
        ) from None
    if not isinstance(payload, dict) or "format_version" not in payload:
        raise CheckpointError(f"{path} is not a minillm checkpoint (no format_version field)")
    if payload["format_version"] != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {payload['format_version']}, this minillm reads "
            f"version {FORMAT_VERSION}; use the minillm version that wrote it"
        )
    return payload


def short_reason(err: BaseException) -> str:
    """An error's first line, shortened (its type's name when it has no message): for one-line errors."""
    return _shorten(str(err).splitlines()[0]) if str(err) else type(err).__name__


def _shorten(text: str, limit: int = 120) -> str:
    """`text` cut at a word boundary to at most about `limit` characters, with "..." when cut."""
    if len(text) <= limit:
        return text
    return text[:limit].rsplit(" ", 1)[0].rstrip(",;:") + " ..."


def model_config_dict(model: nn.Module) -> dict | None:
    """The model's `config` dataclass as a dict (None for a model without one)."""
    config = getattr(model, "config", None)
    return to_dict(config) if dataclasses.is_dataclass(config) else None


def check_model_config(ckpt: dict[str, Any], model: nn.Module, model_kind: str, path: Path) -> None:
    """Refuse a checkpoint written for another kind or shape of model, naming what differs."""
    if ckpt.get("model_kind") != model_kind:
        raise CheckpointError(
            f"{path} holds a {ckpt.get('model_kind')!r} model, not a {model_kind!r} one; "
            "point to a checkpoint of the right stage"
        )
    saved, config = ckpt.get("model_config") or {}, getattr(model, "config", None)
    # A field added to the config since the checkpoint was written is taken at its default, as load_model
    # reads it: the default is the model the checkpoint had then.
    if dataclasses.is_dataclass(config):
        saved = at_defaults(saved, to_dict(type(config)()))
    differences = diff_configs(saved, model_config_dict(model) or {})
    if differences:
        raise CheckpointError(
            f"{path} was written for another model config; fields differ (checkpoint -> now): "
            + "; ".join(differences)
            + ". Use the same settings as the run that wrote it, or start a new run in another folder"
        )


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """`model.load_state_dict(state)`, with a short CheckpointError instead of torch's key listing."""
    try:
        model.load_state_dict(state)
    except RuntimeError as err:  # torch lists the keys and shapes after a header line: keep the list, shortened
        lines = str(err).splitlines()
        detail = _shorten(" ".join(line.strip() for line in lines[1:]) or lines[0])
        raise CheckpointError(f"{path}: the weights do not fit this model ({detail})") from None


def load_model(run_dir: str | os.PathLike, model_cls: type[ModelT],
               map_location: str | torch.device = "cpu") -> tuple[ModelT, Tokenizer | None]:
    """Rebuild a trained model (in eval mode) and its tokenizer from a run folder.

    `run_dir` is the folder a training run wrote (or its ckpt.pt directly); `model_cls` is built
    from the saved ModelConfig, e.g. `load_model("runs/clm", GPT)`. The tokenizer is None when the
    run saved none.
    """
    run_dir = Path(run_dir)
    ckpt_path = run_dir if run_dir.is_file() else run_dir / CKPT_NAME
    ckpt = load_checkpoint(ckpt_path, map_location)
    if ckpt.get("model_config") is None:
        raise CheckpointError(f"{ckpt_path} holds no model config, so the model cannot be rebuilt from it")
    try:
        config = from_dict(ModelConfig, ckpt["model_config"])
    except ConfigError as err:
        raise CheckpointError(f"{ckpt_path} holds an invalid model config: {err}") from None
    expected_kind = getattr(model_cls, "kind", None)  # e.g. GPT.kind == "gpt"
    if expected_kind is not None and ckpt.get("model_kind") is None:  # a LoRA run's adapters.pt, say
        raise CheckpointError(f"{ckpt_path} holds no model of any kind (its entries: {', '.join(sorted(ckpt))}); "
                              f"point to a training run's folder, or the {CKPT_NAME} in it")
    if expected_kind is not None and ckpt.get("model_kind") != expected_kind:
        raise CheckpointError(f"{ckpt_path} holds a {ckpt.get('model_kind')!r} model, not a {expected_kind!r} one; "
                              "point to the run folder of the right stage")
    if not isinstance(ckpt.get("model"), dict):
        raise CheckpointError(f"{ckpt_path} holds no model weights (no \"model\" entry of tensors), so there is "
                              "nothing to load; point to a checkpoint written by minillm's training")
    model = model_cls(config)
    load_weights(model, ckpt["model"], ckpt_path)
    broken = next((name for name, t in ckpt["model"].items() if t.is_floating_point() and not t.isfinite().all()), None)
    if broken is not None:  # every answer would be sampled from NaN probabilities (torch fails with an index error)
        raise CheckpointError(f"{ckpt_path} holds NaN or infinite weights ({broken}): the file was damaged, or saved "
                              "from a run that diverged; train the model again, or restore the run's ckpt.pt")
    tokenizer = None
    if (ckpt_path.parent / TOKENIZER_NAME).is_file():
        tokenizer = load_tokenizer(ckpt_path.parent / TOKENIZER_NAME)
        if tokenizer.vocab_size != config.vocab_size:  # another run's tokenizer: every id would mean another piece
            raise CheckpointError(f"{ckpt_path.parent / TOKENIZER_NAME} has {tokenizer.vocab_size} ids but the model "
                                  f"beside it {config.vocab_size}: it is not the tokenizer the model was trained "
                                  "with; put the run's own tokenizer.json back")
    return model.to(map_location).eval(), tokenizer


def load_model_and_tokenizer(run_dir: str | os.PathLike, model_cls: type[ModelT],
                             map_location: str | torch.device = "cpu") -> tuple[ModelT, Tokenizer]:
    """`load_model` for a run whose tokenizer is needed to read or write text: a run folder without its
    tokenizer.json is refused here, in one line, rather than at the first `tokenizer.encode` (on None)."""
    model, tokenizer = load_model(run_dir, model_cls, map_location)
    if tokenizer is None:
        folder = Path(run_dir).parent if Path(run_dir).is_file() else Path(run_dir)
        raise CheckpointError(f"{folder} has no {TOKENIZER_NAME} beside its {CKPT_NAME}: the model's ids cannot be "
                              "read as text without it; point at the folder of a training run (it holds both), "
                              f"put the run's own {TOKENIZER_NAME} back, or train the run again")
    return model, tokenizer
