"""Supervised fine-tuning (SFT): teach a pretrained GPT to answer, one demonstration at a time.

Nothing about the optimisation is new: it is the same loop as pretraining (`minillm.train.train`),
with the same optimizer, schedule, clipping and checkpoints. Only two things change:

1. **The data**: each row of a batch is one conversation in the chat template
   (`template.encode_example`), not a window cut from a long text. Rows have different lengths, so
   a batch is right-padded to its longest row and carries an attention mask (True = real token).
   Right padding keeps every real token at the same positions as when it is alone: pads sit after
   the `<eos>`, where causal attention never lets a real token see them. So the loss gives the
   model no attention mask at all: causality alone hides every pad, and attention runs the
   cheaper kernel that knows only the causal rule (which saves about a tenth of an SFT step's time).
2. **The loss**: cross-entropy on the response tokens only (and on every token of the replayed
   pretraining windows, `replay_examples`). The logits at position t predict token t+1, so we
   shift as in pretraining, then average the per-token losses over the positions whose *target* is
   in the loss mask (response tokens and `<eos>`). The LM head runs only at those positions
   (`logits_at`): prompt and pad positions add no loss term, so the model is never taught to write
   the prompt.

`train_sft` starts from a stage-1 run folder (`init_dir`: the CLM checkpoint and its tokenizer) or,
for the baseline that shows what pretraining contributed, from random weights of the same shape.

With `sft.lora.rank` > 0 the pretrained weights stay frozen and only low-rank adapters train
(model/lora.py); the from-scratch baseline, having no pretrained weights to keep, trains them all.
The run folder then holds the adapters alone (`adapters.pt`, loadable onto the base with
`load_adapted`) and, in ckpt.pt, the model with the adapters merged in, so that every later stage
loads a plain GPT.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from minillm.config import LoRAConfig, ModelConfig, SFTConfig, check_section, from_dict, to_dict
from minillm.datasets.corpus import CORPUS
from minillm.datasets.instructions import INSTRUCTIONS, check_instruction_record
from minillm.datasets.jsonl import check_records, record_split
from minillm.datasets.run_data import check_same_data, data_record, known_records
from minillm.errors import CheckpointError, ConfigError, DataError
from minillm.model import GPT
from minillm.model.lora import add_lora, count_parameters, load_lora_state_dict, lora_state_dict, merged_state_dict
from minillm.stage1_pretrain.data import pack_documents
from minillm.stage2_sft.template import ChatExample, TemplateStats, check_room_for_prompt, encode_records
from minillm.tokenizer import Tokenizer
from minillm.train import load_model, load_model_and_tokenizer, train
from minillm.train.checkpoint import CKPT_NAME, CONFIG_NAME, load_checkpoint, save_checkpoint
from minillm.train.distributed import is_main_process, rank_zero_first
from minillm.train.loop import GetBatch
from minillm.train.optim import make_optimizer
from minillm.utils import seed_everything, to_device

TRAIN_SPLIT = "train"
VAL_SPLIT = "test_seen"  # teacher-forced validation loss: unseen examples of seen tasks
ADAPTERS_NAME = "adapters.pt"  # a LoRA run's adapters alone


def collate(examples: Sequence[ChatExample], pad_id: int) -> dict[str, Tensor]:
    """Right-pad conversations to one (B, T) batch: ids, attention_mask and loss_mask."""
    T = max(len(ex.ids) for ex in examples)
    ids = torch.full((len(examples), T), pad_id, dtype=torch.long)  # (B, T)
    attention_mask = torch.zeros((len(examples), T), dtype=torch.bool)  # (B, T) True = real token
    loss_mask = torch.zeros((len(examples), T), dtype=torch.bool)  # (B, T) True = target counts
    for row, ex in enumerate(examples):
        n = len(ex.ids)
        ids[row, :n] = torch.tensor(ex.ids)
        attention_mask[row, :n] = True
        loss_mask[row, :n] = torch.tensor(ex.loss_mask)
    return {"ids": ids, "attention_mask": attention_mask, "loss_mask": loss_mask}


def target_positions(batch: dict[str, Tensor]) -> Tensor:
    """(B, T-1) True where position t predicts a token that counts (loss_mask True at t + 1): a
    response token or its `<eos>`, or any token after the first of a replayed window."""
    return batch["loss_mask"][:, 1:]


def count_targets(batch: dict[str, Tensor]) -> int:
    """How many tokens `sft_loss` averages over: the loop weights micro-batches by it."""
    return int(target_positions(batch).sum())


def sft_loss(model: nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
    """Mean cross-entropy over the tokens the loss mask marks: response tokens (and `<eos>`), and every
    token after the first of a replayed pretraining window (`replay_examples`); prompt and pads cost nothing."""
    ids = batch["ids"]  # (B, T)
    counts = target_positions(batch)  # (B, T-1)
    # Logits only where they are needed: at the positions that predict a target token. No attention
    # mask: the batch is right-padded, so the causal rule already hides each pad from every real token.
    # logits_at takes a (B, T) mask: the last position predicts nothing, so a False column is appended.
    logits = model(ids, logits_at=F.pad(counts, (0, 1)))  # (M, V), M = counts.sum()
    targets = ids[:, 1:][counts]  # (M,) the same positions' next tokens, in the same order
    n_targets = max(targets.numel(), 1)
    loss = F.cross_entropy(logits, targets, reduction="sum") / n_targets
    return loss, {}  # no metric beside the loss to log


def length_buckets(examples: list[ChatExample], bucket_size: int) -> list[list[ChatExample]]:
    """Examples sorted by length and cut into buckets of `bucket_size` similar lengths.

    A batch drawn from one bucket is padded only to the longest of similar rows: conversations are
    ~34 tokens on average but up to ~100 (the tiny preset's tokenizer), so random batches would spend
    most of their compute on pads.
    """
    ordered = sorted(examples, key=lambda ex: len(ex.ids))
    return [ordered[i:i + bucket_size] for i in range(0, len(ordered), bucket_size)]


class ReplayWindows(Sequence[ChatExample]):
    """Windows of the packed corpus as SFT examples, each made when a batch asks for it.

    One (N, L) tensor holds every window, 8 bytes a token. N ready-made examples would hold each
    token as a Python int and a True in two lists, ~40 bytes a token: a gigabyte for a 50 MB corpus.
    """

    def __init__(self, windows: Tensor) -> None:
        self.windows = windows  # (N, L)

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int) -> ChatExample:
        ids = self.windows[i].tolist()  # (L,)
        return ChatExample(ids=ids, loss_mask=[True] * len(ids), prompt_tokens_dropped=0)


def replay_examples(tokenizer: Tokenizer, docs: Sequence[str], length: int) -> ReplayWindows:
    """Pretraining text as SFT examples whose every token after the first is a target (the first has
    nothing before it to be predicted from): windows of the packed corpus.

    Mixed into SFT batches ("replay", `SFTConfig.pretrain_mix`), they keep the next-token loss of
    stage 1 alive while the model learns to answer, so fine-tuning does not overwrite the facts that
    pretraining stored (without them, a tiny model forgets the facts it was never asked about).
    """
    stream = pack_documents(tokenizer, docs)  # (S,) the whole corpus, S tokens, as one id stream
    return ReplayWindows(stream[: len(stream) // length * length].view(-1, length))  # (S // length, length)


def make_get_batch(
    splits: dict[str, list[ChatExample]], batch_size: int, pad_id: int, device: torch.device | str,
    replay: Sequence[ChatExample] = (), n_replay: int = 0,
) -> GetBatch:
    """get_batch(split, generator) for the training loop: rows drawn with the loop's generator only.

    Each batch picks a length bucket (of 4 batches' worth of examples) at random, then its rows at
    random within the bucket: every example is still drawn equally often, with far less padding.
    Training batches swap `n_replay` of their rows for random windows of pretraining text.
    """
    buckets = {split: length_buckets(examples, 4 * batch_size) for split, examples in splits.items()}

    def get_batch(split: str, generator: torch.Generator) -> dict[str, Tensor]:
        weights = torch.tensor([len(b) for b in buckets[split]], dtype=torch.float)  # (n_buckets,)
        bucket = buckets[split][int(torch.multinomial(weights, 1, generator=generator))]
        n_windows = n_replay if split == "train" else 0  # validation measures the answers alone
        rows = torch.randint(len(bucket), (batch_size - n_windows,), generator=generator).tolist()
        windows = torch.randint(len(replay), (n_windows,), generator=generator).tolist() if n_windows else []
        examples = [bucket[r] for r in rows] + [replay[w] for w in windows]
        return to_device(collate(examples, pad_id), device)

    return get_batch


def _split_records(records: list[dict]) -> dict[str, list[dict]]:
    """Training and validation records; a record without a "split" field counts as training data.
    Without test_seen records, the validation loss is measured on the training records.

    Each record is checked as `read_jsonl` checks a file's lines: a list built in Python has not
    been, and a record without a "response" would otherwise stop the template with a bare KeyError.
    """
    check_records(records, check_instruction_record, "SFT")
    train_recs = training_records(records)
    val_recs = [r for r in records if r.get("split") == VAL_SPLIT]
    return {"train": train_recs, "val": val_recs or train_recs}


def training_records(records: Sequence[dict]) -> list[dict]:
    """The records SFT trains on (a record without a "split" field counts as one), or DataError when none is."""
    train_recs = [r for r in records if record_split(r) == TRAIN_SPLIT]
    if not train_recs:
        raise DataError("SFT: no training records (split == 'train'); check the JSONL's split field")
    return train_recs


def _initial_model(
    init_dir: str | Path | None, scratch_model_config: ModelConfig | None, tokenizer: Tokenizer | None
) -> tuple[GPT, Tokenizer]:
    """The pretrained GPT of a stage-1 run, or a randomly initialised one (the from-scratch baseline)."""
    if (init_dir is None) == (scratch_model_config is None):
        raise ConfigError("train_sft: give exactly one of init_dir (a CLM run folder) or "
                          "scratch_model_config (random init)")
    if init_dir is not None:
        if tokenizer is not None:  # the caller's (the pipeline's): the run's own is not needed
            return load_model(init_dir, GPT)[0], tokenizer
        return load_model_and_tokenizer(init_dir, GPT)
    if tokenizer is None:
        raise ConfigError("train_sft from scratch needs a tokenizer=; pass the CLM run's tokenizer")
    return GPT(scratch_model_config), tokenizer


def replay_rows(cfg: SFTConfig, tokenizer: Tokenizer, pretrain_docs: Sequence[str],
                block: int) -> tuple[Sequence[ChatExample], int]:
    """The replayed windows of `pretrain_docs` and how many rows of each batch they fill: none
    when `cfg.pretrain_mix` is 0, else round(pretrain_mix * batch_size) (config.py checks it)."""
    n_replay = round(cfg.pretrain_mix * cfg.train.batch_size)
    if not n_replay:
        return [], 0
    if not pretrain_docs:
        raise ConfigError(f"sft.pretrain_mix={cfg.pretrain_mix} mixes pretraining text into SFT, but no corpus was "
                          "given: pass the stage 1 documents (pretrain_docs=), or set sft.pretrain_mix=0")
    replay_length = min(cfg.replay_length, block)
    replay = replay_examples(tokenizer, pretrain_docs, replay_length)
    if not replay:
        raise DataError(f"sft.pretrain_mix: the pretraining text holds fewer than {replay_length} "
                        "tokens, not one window to replay; pass the stage 1 corpus")
    return replay, n_replay


def data_read(cfg: SFTConfig, records: Sequence[dict], pretrain_docs: Sequence[str], instructions: dict | None,
              corpus: dict | None) -> dict[str, dict]:
    """The records of the data an SFT run reads (datasets/run_data.py), for its config.json and its resume: of
    its instruction `records`, and of the corpus of the windows it replays (`pretrain_docs`) only where it
    replays some (`cfg.pretrain_mix` > 0): a run that replays none read no corpus, and its config.json says
    nothing of one. `instructions` and `corpus` are the caller's records of them, None for data given in Python
    (`data_record`: recorded as such)."""
    replayed = data_record(CORPUS, corpus, (pretrain_docs,)) if cfg.pretrain_mix > 0 else None
    return known_records({INSTRUCTIONS: data_record(INSTRUCTIONS, instructions, records), CORPUS: replayed})


def train_sft(
    cfg: SFTConfig,
    records: list[dict],
    out_dir: str | Path,
    *,
    init_dir: str | Path | None = None,
    scratch_model_config: ModelConfig | None = None,
    tokenizer: Tokenizer | None = None,
    resume: bool = False,
    pretrain_docs: Sequence[str] = (),
    name: str = "sft",
    instructions: dict | None = None,
    corpus: dict | None = None,
    lr_setting: str = "",
) -> dict:
    """Fine-tune a GPT on the chat-templated `records` and write the run folder `out_dir`.

    `name` labels its progress bar, printed lines and loss plot (a baseline says which one it is).
    `lr_setting` is where cfg.train.lr was set, as --set takes it, when not at sft.train.lr (the from-scratch
    baseline's own rate: sft.scratch_lr): a NaN's message names it.
    `instructions` says where `records` came from (datasets' `instructions_record`): config.json keeps it
    for the stages after SFT (learnt.py), and a resume on other instructions is refused. None records them as
    given in Python (run_data's `data_record`), and so does a `corpus` of None the replayed documents.

    With `cfg.pretrain_mix` > 0, that share of every training batch is windows of `pretrain_docs`
    (the stage 1 corpus), trained with the plain next-token loss (see `replay_examples`); `corpus` says
    which corpus they are (datasets' `corpus_record`), kept and checked on a resume as `instructions` is.

    Returns the loop's {"history", "final"} plus "seconds", "first_loss", "final_loss", the template's
    counts of truncated and skipped examples, and "trainable_params" of the model's "params" (printed as
    training starts: with LoRA, its adapters and the modules of `also_train`). The fine-tuned model is in
    out_dir/ckpt.pt (+ tokenizer.json): `minillm.train.load_model(out_dir, GPT)` brings it back.
    """
    check_section(cfg, SFTConfig, "train_sft")
    out_dir = Path(out_dir)
    read = data_read(cfg, records, pretrain_docs, instructions, corpus)
    if resume and (out_dir / CKPT_NAME).is_file():  # refused now, before the model loads and the records are
        check_same_data(out_dir / CONFIG_NAME, read)  # encoded; the loop checks it again as it starts
    seed_everything(cfg.train.seed)
    model, tokenizer = _initial_model(init_dir, scratch_model_config, tokenizer)
    # the evaluation after training answers with this length: refuse it now, not after the training
    check_room_for_prompt(model.config.block_size, cfg.max_new_tokens, "SFTConfig.max_new_tokens")
    lora = cfg.lora.rank > 0 and init_dir is not None  # adapters adapt a pretrained model, not random weights
    if lora:
        if resume and (out_dir / ADAPTERS_NAME).is_file():
            raise CheckpointError(f"{out_dir} holds a finished LoRA run (its {CKPT_NAME} has the adapters merged "
                                  "in); nothing to resume. Train into another folder")
        add_adapters(model, cfg.lora)
    by_split = _split_records(records)
    block = model.config.block_size
    encoded: dict[str, list[ChatExample]] = {}
    stats: dict[str, TemplateStats] = {}
    for split, recs in by_split.items():
        encoded[split], stats[split] = encode_records(tokenizer, recs, block, cfg.train_on_prompt)
        if not encoded[split]:
            raise DataError(f"SFT: every {split} example is longer than the context ({block} tokens); "
                            f"{stats[split].summary()}. Use shorter examples or a larger block_size")
    print(f"{name}, template (train): {stats['train'].summary()}")
    trainable, params = count_parameters(model, trainable_only=True), count_parameters(model)
    print(f"{name}: {trainable:,} of the model's {params:,} parameters train ({trainable / params:.0%})"
          + (f": LoRA rank {cfg.lora.rank} on {cfg.lora.targets}" if lora else ""))
    device = next(model.parameters()).device
    replay, n_replay = replay_rows(cfg, tokenizer, pretrain_docs, block)
    get_batch = make_get_batch(encoded, cfg.train.batch_size, tokenizer.pad_id, device, replay, n_replay)
    # what the plotted losses count: validation batches replay no text, so val_loss is the answers' alone
    targets = "prompt and answer tokens" if cfg.train_on_prompt else "answer tokens"
    run = name.replace("sft", "SFT", 1)  # "SFT", or a baseline's "SFT from scratch", "SFT on count only"
    title = f"{run}: loss on {targets}" + (" (train batches: + replayed text)" if n_replay else "")
    start = time.perf_counter()
    result = train(
        model, cfg.train, out_dir, get_batch=get_batch, loss_fn=sft_loss, count_terms=count_targets,
        run_config={"sft": to_dict(cfg), "init_dir": str(init_dir) if init_dir else None,
                    "model": to_dict(model.config)},
        tokenizer=tokenizer, resume=resume, desc=name, title=title, settings="sft.train", lr_setting=lr_setting,
        read=read,
    )
    if lora:
        if is_main_process():  # (rank 0's checkpoint)
            save_lora_run(model, cfg.lora, out_dir)
        rank_zero_first(device)  # under torchrun the next stage reads the merged checkpoint on every rank
    losses = [h["loss"] for h in result["history"] if "loss" in h]
    return {
        **result,
        "seconds": time.perf_counter() - start,
        "trainable_params": trainable,
        "params": params,
        "first_loss": losses[0] if losses else None,
        "final_loss": losses[-1] if losses else None,
        "template": {"encoded": stats["train"].encoded, "truncated": stats["train"].truncated,
                     "prompt_tokens_dropped": stats["train"].prompt_tokens_dropped,
                     "skipped": stats["train"].skipped},
    }


def add_adapters(model: GPT, lora: LoRAConfig) -> None:
    """Freeze `model` and put the adapters that `lora` describes on it (model/lora.py's add_lora; its
    messages name the settings as --set takes them)."""
    add_lora(model, lora.rank, lora.alpha, lora.dropout, lora.targets, lora.also_train, named="--set sft.lora.")


def check_adapters(cfg: SFTConfig, base: ModelConfig) -> None:
    """Refuse now what train_sft would refuse only once it starts: LoRA targets or also_train that name no
    layer of a GPT shaped `base`, or an optimizer left with no weight to update (muon with adapters on the
    LM head only). It adapts a throw-away GPT of that shape, as train_sft adapts the pretrained one."""
    if cfg.lora.rank == 0:
        return
    with torch.random.fork_rng(devices=[]):  # its random weights leave every later draw as it was
        model = GPT(base)
        add_adapters(model, cfg.lora)
    make_optimizer(model, cfg.train)


def save_lora_run(model: nn.Module, lora: LoRAConfig, out_dir: Path) -> None:
    """Write the adapters alone (adapters.pt) and replace ckpt.pt's weights with the merged model's.

    The training loop saved the adapted model (base + adapters, resumable); later stages expect a
    plain GPT, so its weights become W + scale * B A, with no adapter keys.
    """
    save_checkpoint(out_dir / ADAPTERS_NAME, {"lora": to_dict(lora), "model_config": to_dict(model.config),
                                              "adapters": lora_state_dict(model)})
    save_checkpoint(out_dir / CKPT_NAME, {**load_checkpoint(out_dir / CKPT_NAME), "model": merged_state_dict(model)})


def load_adapted(base_dir: str | Path, adapters_path: str | Path) -> GPT:
    """The base GPT of `base_dir` (a CLM run folder) with the adapters of a LoRA SFT run put on it."""
    saved = load_checkpoint(adapters_path)
    model, _ = load_model(base_dir, GPT)
    if saved["model_config"] != to_dict(model.config):
        raise CheckpointError(f"{adapters_path} was trained on another base model than {base_dir}; "
                              "pass the CLM run folder its SFT started from")
    add_adapters(model, from_dict(LoRAConfig, saved["lora"]))
    load_lora_state_dict(model, saved["adapters"])
    return model.eval()
