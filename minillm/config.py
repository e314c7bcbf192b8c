"""Every knob of minillm, as validated dataclasses, and the presets that set them.

A config is checked the moment it is built (`__post_init__`), so a wrong value fails early with a
message that names the field, its value and what is allowed, instead of deep inside torch.

The stages each have a config that holds a `ModelConfig` (the network's shape) and a `TrainConfig`
(the optimisation loop), plus the knobs of that stage. `PipelineConfig` gathers them all;
`preset(name)` gives the tiny (CPU, minutes), small (one GPU) and micro (tests, seconds) settings,
and `apply_overrides(cfg, ["sft.train.max_steps=50"])` changes any value by its dotted path.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
import typing
from dataclasses import dataclass, field
from typing import Any, TypeVar

from minillm.errors import ConfigError

# --------------------------------------------------------------------------------------------------
# Validation helpers: one line per rule in each config, one clear message per broken rule.


def _require(ok: bool, cls: str, name: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{cls}.{name}={value!r} is invalid: {allowed}")


def _positive_int(cls: str, name: str, value: Any) -> None:
    ok = isinstance(value, int) and not isinstance(value, bool) and value > 0
    _require(ok, cls, name, value, "expected an integer >= 1")


def _non_negative_int(cls: str, name: str, value: Any) -> None:
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
    _require(ok, cls, name, value, "expected an integer >= 0")


MAX_SEED = 2**63 - 1  # torch's generators take a seed that fits in 64 bits


def _seed(cls: str, name: str, value: Any) -> None:
    ok = isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_SEED
    _require(ok, cls, name, value, "expected an integer in [0, 2**63 - 1]")


# The smallest temperature above 0 that sampling takes: a logit divided by less can overflow float32
# (3.4e38) to inf, and softmax then gives NaN. Temperature 0 is greedy decoding.
MIN_TEMPERATURE = 1e-30


def _in_range(cls: str, name: str, value: Any, lo: float, hi: float, *, lo_open: bool = False,
              hi_open: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok:
        ok = (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi)
    left, right = "(" if lo_open else "[", ")" if hi_open else "]"
    _require(ok, cls, name, value, f"expected a number in {left}{lo}, {hi}{right}")


def _one_of(cls: str, name: str, value: Any, choices: tuple[str, ...]) -> None:
    shown = ", ".join(choice or '""' for choice in choices)  # the empty choice ("" for none) as it is typed
    _require(value in choices, cls, name, value, f"expected one of {shown}")


def _boolean(cls: str, name: str, value: Any) -> None:
    _require(isinstance(value, bool), cls, name, value, "expected true or false")


# The devices TrainConfig.device and --device name: each gets its branch in utils.resolve_device, which
# refuses a name it has no branch for. "cuda" is taken as "cuda:N" too, the GPU numbered N.
DEVICES = ("auto", "cpu", "cuda", "mps")


def is_device_name(value: Any) -> bool:
    """Whether `value` names a device of DEVICES, or a numbered GPU as torch writes it ("cuda:0", "cuda:12";
    not "cuda:00" nor other digits than 0-9, which torch refuses)."""
    return isinstance(value, str) and (value in DEVICES or re.fullmatch(r"cuda:(0|[1-9][0-9]*)", value) is not None)


def device_names(sep: str = ", ") -> str:
    """DEVICES with cuda's numbered form, as --help and the errors list them: "auto, cpu, cuda, cuda:N, mps"."""
    return sep.join(form for name in DEVICES for form in ((name, "cuda:N") if name == "cuda" else (name,)))


def expected_devices() -> str:
    """What a device name must be, as its refusals say it (here and in utils.resolve_device)."""
    return f"expected {device_names()} (N = a GPU number, e.g. cuda:0)"


def _device(cls: str, name: str, value: Any) -> None:
    _require(is_device_name(value), cls, name, value, expected_devices())


# --------------------------------------------------------------------------------------------------
# The network and the optimisation loop: shared by every stage.

# The names each of ModelConfig's switches takes. A new one goes in its list here and gets its branch in
# the function named beside it, which refuses a name it has no branch for (rather than build another).
NORMS = ("pre", "post")  # ModelConfig.norm: blocks.is_pre_norm
ACTIVATIONS = ("gelu_tanh", "gelu")  # ModelConfig.activation: blocks.make_activation
ATTENTIONS = ("manual", "sdpa")  # ModelConfig.attention: attention.uses_sdpa
POSITIONS = ("learned", "rope")  # ModelConfig.position: blocks.position_table and add_positions
NORM_TYPES = ("layernorm", "rmsnorm")  # ModelConfig.norm_type: blocks.make_norm
MLPS = ("gelu", "swiglu")  # ModelConfig.mlp: blocks.is_gated


@dataclass
class ModelConfig:
    """The shape of a transformer. GPT-2 and BERT are two settings of the same fields."""

    vocab_size: int = 4096
    block_size: int = 128  # the context: the longest sequence the position table holds
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    mlp_ratio: int = 4  # MLP hidden width = mlp_ratio * n_embd (4 in GPT-2 and BERT)
    dropout: float = 0.0
    bias: bool = True  # whether the Linear layers and norms have an additive bias (Llama has none)
    norm: str = "pre"  # "pre": LayerNorm before each sub-layer (GPT-2); "post": after the residual (BERT)
    # the plain MLP's activation (blocks.make_activation): GPT-2's tanh GELU "gelu_tanh", or BERT's exact erf "gelu"
    activation: str = "gelu_tanh"
    layer_norm_eps: float = 1e-5  # GPT-2: 1e-5, BERT: 1e-12
    attention: str = "manual"  # "manual": every step written out; "sdpa": torch's fused kernel
    # "learned": a table of one vector per position, added to the token's (GPT-2, BERT);
    # "rope": rotary embeddings, which turn queries and keys by an angle that grows with the position,
    # so attention scores depend on how far apart two tokens are (LLaMA; see attention.rotary_angles)
    position: str = "learned"
    type_vocab_size: int = 2  # BERT's segment embeddings (sentence A / B); unused by GPT
    # The switches from GPT-2 towards Llama (model/blocks.py and attention.py); the defaults are GPT-2's.
    norm_type: str = "layernorm"  # "rmsnorm": scale by the root mean square only (no centring, no bias)
    # "gelu": the plain MLP, up -> GELU (`activation`) -> down; "swiglu": SiLU(gate) * up, a gated MLP
    # of 2/3 the width (blocks.mlp_width), whose SiLU leaves `activation` unused
    mlp: str = "gelu"
    mlp_hidden: int = 0  # the MLP's hidden width; 0 = from mlp_ratio (and, for swiglu, Llama's 2/3 rule)
    n_kv_head: int = 0  # key/value heads shared by groups of query heads; 0 = n_head, 1 = multi-query
    tie_embeddings: bool = True  # False: the LM head has its own (V, C) table instead of the token table's
    rope_base: float = 10000.0  # RoPE's slowest pair turns rope_base^(-(D-2)/D) radians a position (Llama 3: 500000)
    arch: str = ""  # a named architecture that sets the switches above at once: "" (none) or "llama"

    def __post_init__(self) -> None:
        c = "ModelConfig"
        _one_of(c, "arch", self.arch, ("", *ARCHITECTURES))
        self._apply_arch()
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd", "mlp_ratio"):
            _positive_int(c, name, getattr(self, name))
        _non_negative_int(c, "type_vocab_size", self.type_vocab_size)
        _require(
            self.n_embd % self.n_head == 0, c, "n_head", self.n_head,
            f"n_embd ({self.n_embd}) must be divisible by n_head; try n_head in "
            f"{[h for h in range(1, min(self.n_embd, 64) + 1) if self.n_embd % h == 0][-6:]}",
        )
        _in_range(c, "dropout", self.dropout, 0.0, 1.0, hi_open=True)
        _in_range(c, "layer_norm_eps", self.layer_norm_eps, 0.0, 1.0, lo_open=True)
        _one_of(c, "norm", self.norm, NORMS)
        _one_of(c, "activation", self.activation, ACTIVATIONS)
        _one_of(c, "attention", self.attention, ATTENTIONS)
        _one_of(c, "position", self.position, POSITIONS)
        _require(self.position != "rope" or self.head_dim % 2 == 0, c, "position", self.position,
                 f"rope turns pairs of channels, so head_dim (n_embd / n_head = {self.head_dim}) must be even")
        _boolean(c, "bias", self.bias)
        _one_of(c, "norm_type", self.norm_type, NORM_TYPES)
        _one_of(c, "mlp", self.mlp, MLPS)
        _non_negative_int(c, "mlp_hidden", self.mlp_hidden)
        _non_negative_int(c, "n_kv_head", self.n_kv_head)
        divisors = [h for h in range(1, self.n_head + 1) if self.n_head % h == 0]
        _require(self.n_head % max(self.n_kv_head, 1) == 0, c, "n_kv_head", self.n_kv_head,
                 f"n_head ({self.n_head}) must be divisible by it, so that every key/value head serves "
                 f"the same number of query heads; try one of {divisors}")
        _boolean(c, "tie_embeddings", self.tie_embeddings)
        _in_range(c, "rope_base", self.rope_base, 1.0, 1e9, lo_open=True)

    def _apply_arch(self) -> None:
        """Set the switches that `arch` names (ARCHITECTURES), whatever they were given as."""
        for name, value in ARCHITECTURES.get(self.arch, {}).items():
            setattr(self, name, value)

    @property
    def head_dim(self) -> int:
        """The channels of one attention head: n_embd is split evenly between the n_head heads."""
        return self.n_embd // self.n_head

    @property
    def kv_heads(self) -> int:
        """How many key/value heads attention keeps (and the KV cache stores)."""
        return self.n_kv_head or self.n_head


# What `ModelConfig.arch` sets. Llama (Touvron et al., 2023) and its heirs (Mistral, Qwen) are GPT-2
# with these changes: RMSNorm, a SwiGLU MLP, RoPE, no biases and an untied LM head. How many
# key/value heads (n_kv_head) is a size, like n_head, and differs between them, so it is not here.
# arch wins over the switches it sets (--set of one of them to another value is refused): to turn
# one of Llama's back, leave arch empty and set the switches one by one (as lesson 11 does).
ARCHITECTURES: dict[str, dict[str, Any]] = {
    "llama": {"norm_type": "rmsnorm", "mlp": "swiglu", "position": "rope", "bias": False,
              "tie_embeddings": False},
}


# The optimizers a TrainConfig may name (and SFT's scratch_optimizer); a new one also needs its
# branch in train/optim.py's make_optimizer.
OPTIMIZERS = ("adamw", "muon")
DTYPES = ("float32", "bfloat16", "float16")  # TrainConfig.dtype: what autocast computes in (float32: no autocast)


@dataclass
class TrainConfig:
    """The explicit training loop: batch -> forward -> loss -> backward -> clip -> step -> schedule."""

    max_steps: int = 300
    batch_size: int = 32  # sequences per optimizer step, summed over accumulation and processes
    grad_accum_steps: int = 1  # the batch is split into this many micro-batches
    lr: float = 1e-3
    min_lr_ratio: float = 0.1  # cosine decay ends at lr * min_lr_ratio
    warmup_steps: int = 20
    weight_decay: float = 0.1  # applied to matrices (embeddings included), never to biases or norm gains
    optimizer: str = "adamw"  # adamw | muon (Muon for the blocks' matrices, AdamW for the rest)
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0  # clip the global gradient norm to this (0 = off)
    eval_every: int = 100  # steps between validation checks (and after the last step)
    eval_batches: int = 8  # validation batches averaged per check (the same ones every time)
    log_every: int = 10  # steps between the training rows of metrics.jsonl (and the first and last step)
    save_every: int = 100  # steps between checkpoints (and after the last step)
    seed: int = 1337
    device: str = "cpu"  # auto | cpu | cuda | cuda:N | mps
    dtype: str = "float32"  # float32 | bfloat16 | float16 (autocast; float16 adds a grad scaler)
    compile: bool = False  # torch.compile the model: slower to start, faster steps on a GPU
    detect_anomaly: bool = False  # autograd anomaly mode: names the op whose backward made a NaN (slow)

    def __post_init__(self) -> None:
        c = "TrainConfig"
        for name in ("max_steps", "batch_size", "grad_accum_steps", "eval_every", "eval_batches",
                     "log_every", "save_every"):
            _positive_int(c, name, getattr(self, name))
        _non_negative_int(c, "warmup_steps", self.warmup_steps)
        _seed(c, "seed", self.seed)
        _require(
            self.batch_size % self.grad_accum_steps == 0, c, "grad_accum_steps", self.grad_accum_steps,
            f"batch_size ({self.batch_size}) must be divisible by grad_accum_steps",
        )
        _in_range(c, "lr", self.lr, 0.0, 10.0, lo_open=True)
        _in_range(c, "min_lr_ratio", self.min_lr_ratio, 0.0, 1.0)
        _in_range(c, "weight_decay", self.weight_decay, 0.0, 10.0)
        _in_range(c, "beta1", self.beta1, 0.0, 1.0, hi_open=True)
        _in_range(c, "beta2", self.beta2, 0.0, 1.0, hi_open=True)
        _in_range(c, "grad_clip", self.grad_clip, 0.0, 1e6)
        _one_of(c, "dtype", self.dtype, DTYPES)
        _one_of(c, "optimizer", self.optimizer, OPTIMIZERS)
        _device(c, "device", self.device)
        _boolean(c, "compile", self.compile)
        _boolean(c, "detect_anomaly", self.detect_anomaly)


TOKENIZER_KINDS = ("bpe", "sentencepiece")  # TokenizerConfig.kind
# TokenizerConfig.spm_model_type: the sentencepiece models it may train, as report.md names them
SPM_MODEL_TYPES = {"bpe": "SentencePiece's BPE", "unigram": "SentencePiece's unigram model"}


@dataclass
class TokenizerConfig:
    """How text becomes ids: which tokenizer is trained, and how many ids it has."""

    kind: str = "bpe"  # "bpe": ours (minillm/tokenizer/bpe.py); "sentencepiece": the industrial reference
    vocab_size: int = 2048
    spm_model_type: str = "bpe"  # sentencepiece only: "bpe" or "unigram"

    def __post_init__(self) -> None:
        c = "TokenizerConfig"
        _one_of(c, "kind", self.kind, TOKENIZER_KINDS)
        _one_of(c, "spm_model_type", self.spm_model_type, tuple(SPM_MODEL_TYPES))
        _positive_int(c, "vocab_size", self.vocab_size)


# --------------------------------------------------------------------------------------------------
# Stage 1: self-supervised pretraining.


@dataclass
class MLMConfig:
    """BERT-style masked language modelling (stage 1, encoder)."""

    # BERT's own settings: LayerNorm after each residual sum, the exact erf GELU, eps 1e-12
    model: ModelConfig = field(default_factory=lambda: ModelConfig(norm="post", activation="gelu",
                                                                   layer_norm_eps=1e-12))
    train: TrainConfig = field(default_factory=TrainConfig)
    mask_prob: float = 0.15  # share of (non-special) positions chosen for prediction
    mask_token_prob: float = 0.8  # of those: replaced by <mask> ...
    random_token_prob: float = 0.1  # ... by a random token; the rest (10%) are kept unchanged

    def __post_init__(self) -> None:
        c = "MLMConfig"
        _in_range(c, "mask_prob", self.mask_prob, 0.0, 1.0, lo_open=True)
        _in_range(c, "mask_token_prob", self.mask_token_prob, 0.0, 1.0)
        _in_range(c, "random_token_prob", self.random_token_prob, 0.0, 1.0)
        _require(self.mask_token_prob + self.random_token_prob <= 1.0, c, "random_token_prob",
                 self.random_token_prob, "mask_token_prob + random_token_prob must be <= 1")


@dataclass
class CLMConfig:
    """GPT-style next-token prediction (stage 1, decoder)."""

    # RoPE rather than GPT-2's learned positions: stages 2 and 3 ask the model to copy (a town from a
    # bulletin into its headline, the words of a sentence into Kelish), and a head that finds "the
    # token after the one I just saw" by distance learns that once, not once per position.
    model: ModelConfig = field(default_factory=lambda: ModelConfig(position="rope"))
    train: TrainConfig = field(default_factory=TrainConfig)


# --------------------------------------------------------------------------------------------------
# Stage 2: supervised instruction tuning.


@dataclass
class LoRAConfig:
    """Low-rank adapters (model/lora.py): train rank * (in + out) numbers per chosen Linear, not in * out."""

    rank: int = 0  # 0 = off: every weight trains (full fine-tuning)
    alpha: float = 16.0  # the update is scaled by alpha / rank
    dropout: float = 0.0  # dropout on the adapters' input
    targets: str = "qkv,proj"  # comma-separated ends of Linear names: qkv, proj, fc, attn.proj, mlp.proj, head
    also_train: str = ""  # modules trained in full beside the adapters, e.g. tok_emb (new chat tokens' vectors)

    def __post_init__(self) -> None:
        c = "LoRAConfig"
        _non_negative_int(c, "rank", self.rank)
        _in_range(c, "alpha", self.alpha, 0.0, 1e6, lo_open=True)
        _in_range(c, "dropout", self.dropout, 0.0, 1.0, hi_open=True)
        _require(isinstance(self.targets, str) and any(t.strip() for t in self.targets.split(",")), c, "targets",
                 self.targets, "expected comma-separated layer names, e.g. qkv,proj")
        _require(isinstance(self.also_train, str), c, "also_train", self.also_train,
                 "expected comma-separated module names, e.g. tok_emb, or \"\" for none")


@dataclass
class SFTConfig:
    """Supervised instruction tuning (stage 2): the loop's settings and how answers are evaluated."""

    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        max_steps=300, batch_size=32, lr=3e-3, warmup_steps=10, eval_every=100, eval_batches=4))
    # answer length limit when evaluating (the longest reference, in the tiny preset's BPE: 21 tokens and <eos>)
    max_new_tokens: int = 32
    eval_batch_size: int = 64  # prompts generated together (left-padded) when evaluating
    eval_per_family: int = 30  # test examples scored per family in each split (0 = all of them)
    single_family: str = ""  # the family of the single-family baseline ("" = the largest one)
    single_family_baseline: bool = True  # also train SFT on that one family (does task diversity help?)
    train_on_prompt: bool = False  # experiment: also train on predicting the prompt tokens
    # Share of each training batch's rows that are windows of pretraining text, every token a target
    # ("replay"): it keeps SFT from overwriting what stage 1 stored. Needs the pretraining corpus.
    pretrain_mix: float = 0.0
    replay_length: int = 32  # tokens per replayed window (about as long as a chat example)
    lora: LoRAConfig = field(default_factory=LoRAConfig)  # rank > 0: train low-rank adapters only
    # The from-scratch baseline has no pretrained knowledge to keep, so SFT's gentle lr need not bind
    # it: it may train on its own steps, lr and optimizer (0 / 0.0 / "" = the same as SFT's).
    scratch_max_steps: int = 0
    scratch_lr: float = 0.0
    scratch_optimizer: str = ""

    def __post_init__(self) -> None:
        _require(isinstance(self.single_family, str), "SFTConfig", "single_family", self.single_family,
                 "expected a family's name, e.g. translate, or \"\" for the largest")
        _boolean("SFTConfig", "single_family_baseline", self.single_family_baseline)
        _boolean("SFTConfig", "train_on_prompt", self.train_on_prompt)
        _non_negative_int("SFTConfig", "scratch_max_steps", self.scratch_max_steps)
        _in_range("SFTConfig", "scratch_lr", self.scratch_lr, 0.0, 10.0)
        _one_of("SFTConfig", "scratch_optimizer", self.scratch_optimizer, ("", *OPTIMIZERS))
        _positive_int("SFTConfig", "max_new_tokens", self.max_new_tokens)
        _positive_int("SFTConfig", "eval_batch_size", self.eval_batch_size)
        _non_negative_int("SFTConfig", "eval_per_family", self.eval_per_family)
        _in_range("SFTConfig", "pretrain_mix", self.pretrain_mix, 0.0, 1.0, hi_open=True)
        self._check_replay_rows()
        _positive_int("SFTConfig", "replay_length", self.replay_length)

    def _check_replay_rows(self) -> None:
        """A batch holds round(pretrain_mix * batch_size) replayed rows: a share that rounds to none
        would turn replay off unnoticed, and one that rounds to all would leave no instructions."""
        rows = self.train.batch_size
        n_replay = round(self.pretrain_mix * rows)
        _require(self.pretrain_mix == 0 or 1 <= n_replay < rows, "SFTConfig", "pretrain_mix", self.pretrain_mix,
                 f"it gives {n_replay} of a batch's {rows} rows to replay; use 0 (no replay) or a share from "
                 f"{1 / rows:.3g} to {(rows - 1) / rows:.3g}, which leaves a row to each")

    def scratch_train(self) -> TrainConfig:
        """The training settings of the from-scratch baseline: SFT's, with the scratch_* ones that are set."""
        return dataclasses.replace(self.train, max_steps=self.scratch_max_steps or self.train.max_steps,
                                   lr=self.scratch_lr or self.train.lr,
                                   optimizer=self.scratch_optimizer or self.train.optimizer)


# --------------------------------------------------------------------------------------------------
# Stage 3: RLHF.


@dataclass
class RewardConfig:
    """The reward model (stage 3): answers sampled from the SFT model, ranked by a simulated annotator,
    and a model trained to score the better one higher."""

    train: TrainConfig = field(default_factory=lambda: TrainConfig(lr=1e-4, warmup_steps=10))
    answers_per_prompt: int = 4  # K: answers sampled per prompt and ranked (InstructGPT used 4 to 9)
    n_prompts: int = 400  # prompts whose K answers get ranked
    sample_temperature: float = 1.0
    annotator_noise: float = 0.1  # how much the simulated annotator disagrees with itself
    annotator_tie_margin: float = 0.3  # answers whose noisy scores are this close are ranked as a tie
    max_new_tokens: int = 32  # answer length limit when sampling the answers to rank
    # Add the answer's mean log-probability (times a learnt weight) to the head's score. False: the
    # head alone, which learns style but hardly correctness, and which PPO learns to exploit.
    likelihood_term: bool = True

    def __post_init__(self) -> None:
        c = "RewardConfig"
        _boolean(c, "likelihood_term", self.likelihood_term)
        _positive_int(c, "max_new_tokens", self.max_new_tokens)
        _require(isinstance(self.answers_per_prompt, int) and self.answers_per_prompt >= 2, c,
                 "answers_per_prompt", self.answers_per_prompt, "expected an integer >= 2")
        _positive_int(c, "n_prompts", self.n_prompts)
        _in_range(c, "sample_temperature", self.sample_temperature, MIN_TEMPERATURE, 10.0)
        _in_range(c, "annotator_noise", self.annotator_noise, 0.0, 10.0)
        _in_range(c, "annotator_tie_margin", self.annotator_tie_margin, 0.0, 10.0)


def _online_rl_train(cls: str, train: TrainConfig) -> None:
    """PPO and GRPO write their own loop (rollout, then updates), whose batches are answers:
    refuse the accumulation that loop would silently leave out."""
    _require(train.grad_accum_steps == 1, cls, "train.grad_accum_steps", train.grad_accum_steps,
             "each update's batch is minibatch_size answers; use 1 and set minibatch_size")


# What an online-RL run may be rewarded by (PPOConfig.reward takes those in PPO_REWARDS, GRPOConfig.reward
# any), as report.md says it. A new reward for GRPO: add it here and its function in
# stage3_rlhf/grpo.py's make_reward_fn.
RL_REWARDS = {"model": "the reward model", "verifiable": "a program that checks the answer (RL with verifiable "
              "rewards)", "gold": "the gold judge itself (an oracle no real run has)"}
# PPOConfig.reward: each one of RL_REWARDS (PPOConfig refuses one that is not), with its branch in ppo.py's uses_gold
PPO_REWARDS = ("model", "gold")


@dataclass
class PPOConfig:
    """PPO (stage 3): the SFT model samples answers, the reward model scores them, and the policy is
    pushed towards the better ones, a clipped step at a time, on a KL leash to the SFT model."""

    # constant lr (min_lr_ratio 1) unless told; rollout_batch_size and minibatch_size replace batch_size
    train: TrainConfig = field(default_factory=lambda: TrainConfig(lr=1e-5, warmup_steps=0, min_lr_ratio=1.0,
                                                                   max_steps=60))
    rollout_batch_size: int = 32  # prompts per rollout (one PPO "step")
    minibatch_size: int = 8
    ppo_epochs: int = 4
    temperature: float = 1.0  # used both to sample and to score the answers in the update
    max_new_tokens: int = 32
    kl_coef: float = 0.05  # beta in -beta * (log pi - log pi_ref)
    adaptive_kl: bool = False
    target_kl: float = 6.0  # adaptive beta steers the mean KL per response towards this
    clip_range: float = 0.2  # the policy's probability ratio is clipped to [1 - clip_range, 1 + clip_range]
    clip_range_value: float = 0.2  # the critic's new value may move this far from its rollout value, no further
    # The value loss's weight in the summed loss. The critic shares no weight with the policy, and AdamW
    # undoes a gradient's scale, so it barely matters here: critic_lr sets how fast the critic learns.
    vf_coef: float = 0.1
    gamma: float = 1.0  # discount of later rewards (1: none; an answer is short)
    lam: float = 0.95  # GAE's lambda: 0 trusts the critic's next value, 1 the rewards actually received
    no_eos_penalty: float = -1.0  # reward for responses that never produce <eos>
    critic_lr: float = 1e-5
    eval_prompts: int = 200  # held-out prompts on which the win rate against the SFT model is measured
    # "model": the reward model scores the answers (RLHF). "gold": the simulated annotator's own
    # noiseless judge does, an oracle no real RLHF has: what PPO reaches with a perfect reward model.
    reward: str = "model"

    def __post_init__(self) -> None:
        c = "PPOConfig"
        _one_of(c, "reward", self.reward, PPO_REWARDS)
        _require(self.reward in RL_REWARDS, c, "reward", self.reward,  # (report.md's KeyError, at the journey's end)
                 "config.PPO_REWARDS names it and config.RL_REWARDS does not; add it there too, with the words "
                 "report.md says of it")
        _boolean(c, "adaptive_kl", self.adaptive_kl)
        _require(self.train.optimizer == "adamw", c, "train.optimizer", self.train.optimizer,
                 "PPO trains its policy and critic with one AdamW (each with its own lr); use adamw")
        _online_rl_train(c, self.train)
        for name in ("rollout_batch_size", "minibatch_size", "ppo_epochs", "max_new_tokens", "eval_prompts"):
            _positive_int(c, name, getattr(self, name))
        _require(self.rollout_batch_size % self.minibatch_size == 0, c, "minibatch_size",
                 self.minibatch_size, f"rollout_batch_size ({self.rollout_batch_size}) must be divisible by it")
        _in_range(c, "temperature", self.temperature, MIN_TEMPERATURE, 10.0)
        _in_range(c, "kl_coef", self.kl_coef, 0.0, 100.0)
        _in_range(c, "target_kl", self.target_kl, 0.0, 1000.0, lo_open=True)
        _in_range(c, "clip_range", self.clip_range, 0.0, 1.0, lo_open=True)
        _in_range(c, "clip_range_value", self.clip_range_value, 0.0, 100.0, lo_open=True)
        _in_range(c, "vf_coef", self.vf_coef, 0.0, 100.0)
        _in_range(c, "gamma", self.gamma, 0.0, 1.0)
        _in_range(c, "lam", self.lam, 0.0, 1.0)
        _in_range(c, "no_eos_penalty", self.no_eos_penalty, -100.0, 100.0)
        _in_range(c, "critic_lr", self.critic_lr, 0.0, 10.0, lo_open=True)


GRPO_BASELINES = ("mean", "leave_one_out")  # GRPOConfig.baseline: its branch in grpo.py's group_advantages


@dataclass
class GRPOConfig:
    """GRPO (stage 3): several answers per prompt, each one's reward measured against the others' in its
    group (the baseline), so that no critic is needed."""

    # constant lr (min_lr_ratio 1) unless told; prompts_per_step and minibatch_size replace batch_size
    train: TrainConfig = field(default_factory=lambda: TrainConfig(lr=5e-5, warmup_steps=0, min_lr_ratio=1.0,
                                                                   max_steps=30))
    group_size: int = 8  # G: answers sampled per prompt; the group is its own baseline
    prompts_per_step: int = 16  # prompts per rollout: group_size * prompts_per_step answers per step
    minibatch_size: int = 32  # answers per gradient step, whole groups only: a multiple of group_size
    epochs: int = 1  # passes over each rollout
    temperature: float = 1.0  # used both to sample and to score the answers in the update
    max_new_tokens: int = 32
    clip_range: float = 0.2
    # weight of the k3 estimate of KL(pi || pi_SFT) in the loss (grpo.k3_kl: per token, never negative);
    # 0: no leash, and the SFT model then reads only one minibatch of answers per step, for the logged KL
    kl_coef: float = 0.0
    scale_by_std: bool = True  # divide by the group's std (GRPO); false: Dr. GRPO
    baseline: str = "mean"  # "mean": the group's mean reward (GRPO); "leave_one_out": the others' mean (RLOO)
    # "model": our reward model (RLHF); "verifiable": a program checks the answer against the
    # reference (RLVR, verifier.py); "gold": the annotator's noiseless judge, an oracle
    reward: str = "model"
    exact_bonus: float = 0.2  # verifiable reward: added to 1 when the answer is exactly the reference
    no_eos_penalty: float = -1.0  # the reward model's score of an answer that never produced <eos>
    eval_prompts: int = 200  # held-out prompts on which the win rate against the SFT model is measured
    passk_samples: int = 64  # n answers per prompt for the unbiased pass@k estimate (k <= n)
    passk_prompts: int = 200  # held-out prompts for pass@k (the first ones of the eval prompts)

    def __post_init__(self) -> None:
        c = "GRPOConfig"
        _online_rl_train(c, self.train)
        _one_of(c, "reward", self.reward, tuple(RL_REWARDS))
        _one_of(c, "baseline", self.baseline, GRPO_BASELINES)
        _boolean(c, "scale_by_std", self.scale_by_std)
        for name in ("prompts_per_step", "minibatch_size", "epochs", "max_new_tokens", "eval_prompts",
                     "passk_samples", "passk_prompts"):
            _positive_int(c, name, getattr(self, name))
        _require(isinstance(self.group_size, int) and self.group_size >= 2, c, "group_size", self.group_size,
                 "an integer >= 2: a group of one answer has nothing to be compared with")
        _require((self.group_size * self.prompts_per_step) % self.minibatch_size == 0, c, "minibatch_size",
                 self.minibatch_size, f"group_size * prompts_per_step ({self.group_size * self.prompts_per_step}) "
                 "must be divisible by it")
        _require(self.minibatch_size % self.group_size == 0, c, "minibatch_size", self.minibatch_size,
                 f"a multiple of group_size ({self.group_size}) is needed: a minibatch holds whole groups, whose "
                 "advantages average to zero and whose answers share one prompt")
        _in_range(c, "temperature", self.temperature, MIN_TEMPERATURE, 10.0)
        _in_range(c, "clip_range", self.clip_range, 0.0, 1.0, lo_open=True)
        _in_range(c, "kl_coef", self.kl_coef, 0.0, 100.0)
        _in_range(c, "exact_bonus", self.exact_bonus, 0.0, 10.0)
        _in_range(c, "no_eos_penalty", self.no_eos_penalty, -100.0, 100.0)


DPO_PAIRS = ("all", "best_and_worst")  # DPOConfig.pairs: which pairs of a ranking DPO trains on


@dataclass
class DPOConfig:
    """DPO (stage 3): the rankings train the policy directly, with no reward model and no sampling."""

    train: TrainConfig = field(default_factory=lambda: TrainConfig(lr=5e-5, warmup_steps=5, max_steps=100))
    beta: float = 0.1  # how far from the reference the implicit reward lets the policy move
    nll_coef: float = 0.0  # weight of the chosen answers' own NLL per token (RPO; Llama 3 used 0.2)
    pairs: str = "all"  # from each ranking: "all" its (better, worse) pairs, or only "best_and_worst"
    eval_prompts: int = 200  # held-out prompts on which the win rate against the SFT model is measured
    temperature: float = 1.0  # sampling temperature of the answers compared with the SFT model's
    max_new_tokens: int = 32

    def __post_init__(self) -> None:
        _in_range("DPOConfig", "beta", self.beta, 0.0, 100.0, lo_open=True)
        _in_range("DPOConfig", "nll_coef", self.nll_coef, 0.0, 100.0)
        _one_of("DPOConfig", "pairs", self.pairs, DPO_PAIRS)
        _positive_int("DPOConfig", "eval_prompts", self.eval_prompts)
        _positive_int("DPOConfig", "max_new_tokens", self.max_new_tokens)
        _in_range("DPOConfig", "temperature", self.temperature, MIN_TEMPERATURE, 10.0)


# --------------------------------------------------------------------------------------------------
# The whole journey.


PRESETS = ("micro", "tiny", "small")  # a new preset: its name here, its overrides in preset()


@dataclass
class PipelineConfig:
    """The whole journey: the data every stage shares, and one section per stage."""

    preset: str = "tiny"  # the preset these settings started from (choose it with --preset)
    device: str = "cpu"  # every stage's train.device: `--device X` and `--set device=X` set them all
    data_seed: int = 0  # draws the corpus, the instruction suite and their splits (the world is always build_world(0))
    corpus_mb: float = 2.0  # size of the generated pretraining corpus
    val_fraction: float = 0.05  # share of corpus documents held out for validation
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    mlm: MLMConfig = field(default_factory=MLMConfig)
    clm: CLMConfig = field(default_factory=CLMConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    dpo: DPOConfig = field(default_factory=DPOConfig)
    grpo: GRPOConfig = field(default_factory=GRPOConfig)  # against the reward model
    grpo_verifiable: GRPOConfig = field(default_factory=lambda: GRPOConfig(reward="verifiable"))

    def __post_init__(self) -> None:
        _in_range("PipelineConfig", "corpus_mb", self.corpus_mb, 0.0, 1000.0, lo_open=True)
        _seed("PipelineConfig", "data_seed", self.data_seed)
        _in_range("PipelineConfig", "val_fraction", self.val_fraction, 0.0, 0.5, lo_open=True)
        _device("PipelineConfig", "device", self.device)
        _one_of("PipelineConfig", "preset", self.preset, PRESETS)


def preset(name: str) -> PipelineConfig:
    """The named preset: 'micro' (tests, seconds), 'tiny' (CPU, minutes), 'small' (one GPU, < 1 hour)."""
    if name not in PRESETS:
        raise ConfigError(f"preset={name!r} is unknown: expected one of {', '.join(PRESETS)}")
    cfg = PipelineConfig(preset=name)
    if name == "micro":
        return apply_overrides(cfg, [
            "corpus_mb=0.2", "tokenizer.vocab_size=512",
            "mlm.model.n_layer=1", "mlm.model.n_embd=32", "mlm.model.n_head=2", "mlm.model.block_size=32",
            "clm.model.n_layer=1", "clm.model.n_embd=32", "clm.model.n_head=2", "clm.model.block_size=64",
            "mlm.train.max_steps=10", "clm.train.max_steps=10", "sft.train.max_steps=10",
            "reward.train.max_steps=5", "reward.n_prompts=16", "ppo.train.max_steps=2",
            # a micro model's answers are all equally bad: without a tie margin noise still ranks them
            "reward.annotator_tie_margin=0",
            "ppo.rollout_batch_size=8", "ppo.minibatch_size=4", "ppo.max_new_tokens=8",
            "dpo.train.max_steps=5", "sft.max_new_tokens=8", "sft.eval_per_family=4",
            "reward.max_new_tokens=8", "ppo.eval_prompts=16", "dpo.eval_prompts=16", "dpo.max_new_tokens=8",
            "mlm.train.eval_batches=2", "clm.train.eval_batches=2", "sft.train.eval_batches=2",
            *[f"{g}.{k}" for g in ("grpo", "grpo_verifiable") for k in (
                "train.max_steps=2", "group_size=4", "prompts_per_step=2", "minibatch_size=4", "max_new_tokens=8",
                "eval_prompts=16", "passk_samples=4", "passk_prompts=8")],
        ])
    if name == "small":  # device=auto for the pipeline and every stage: the GPU when there is one
        return replace_train_configs(apply_overrides(cfg, [
            # 2908 ids make every word of the generated corpus one token (2646 merges): the most it supports
            "device=auto", "corpus_mb=20", "tokenizer.vocab_size=2908",
            "mlm.model.n_layer=6", "mlm.model.n_embd=384", "mlm.model.n_head=6", "mlm.model.block_size=256",
            "clm.model.n_layer=6", "clm.model.n_embd=384", "clm.model.n_head=6", "clm.model.block_size=256",
            "mlm.train.max_steps=5000", "clm.train.max_steps=5000", "sft.train.max_steps=2000",
            "mlm.train.batch_size=64", "clm.train.batch_size=64",
            # MLM: the tiny preset's recipe. With BERT's (post-LN, learned positions, warmup 20, lr 1e-3) a
            # 6 x 384 encoder still guessed the unigram after 300 steps; with this one, 0.73 masked accuracy
            "mlm.model.norm=pre", "mlm.model.position=rope", "mlm.train.warmup_steps=100", "mlm.train.lr=2e-3",
        ]), device="auto")
    if name == "tiny":  # each stage 10 s to 2 minutes on a 2-core CPU; docs/findings.md has what was tried
        return apply_overrides(cfg, [
            # The generated corpus has ~1,100 distinct words and ~700 numbers: 1536 ids make most names one token.
            "tokenizer.vocab_size=1536",
            # MLM: a small pre-LN encoder with RoPE on short windows, many cheap steps. The long warmup
            # is what lets it leave the unigram plateau (a masked position must first learn to look
            # at its neighbours). 500 steps of 32 windows: masked accuracy ~0.50 in ~20 s.
            "mlm.model.attention=sdpa", "mlm.model.norm=pre", "mlm.model.n_layer=2", "mlm.model.block_size=32",
            "mlm.model.position=rope",
            "mlm.train.batch_size=32", "mlm.train.max_steps=500", "mlm.train.lr=2e-3", "mlm.train.warmup_steps=100",
            # 10 validation points per curve, so that a learner can read it (each check is 8 batches)
            "mlm.train.eval_every=50", "mlm.train.eval_batches=8", "mlm.train.save_every=250",
            # CLM: the model stages 2 and 3 start from; 128 tokens hold a whole chat example. Its steps
            # are the best-spent seconds of the journey (facts stick only after ~4000 windows); small
            # batches learn as much per window this early, for less time. 3 layers, not 4: every later
            # stage is a quarter faster, for little loss. The exact erf GELU, not GPT-2's tanh form: on a
            # CPU torch's tanh form is 3-4x slower forward (1.6x with its backward), for the same learning.
            "clm.model.n_layer=3", "clm.model.attention=sdpa", "clm.model.activation=gelu",
            "clm.train.batch_size=16", "clm.train.max_steps=800", "clm.train.lr=3e-3",
            "clm.train.eval_every=80", "clm.train.eval_batches=8", "clm.train.save_every=400",
            # SFT: ~3 epochs (~390 steps each); exact match keeps climbing with steps. lr 1e-3 keeps more
            # of what pretraining stored. A tenth of each batch is replayed pretraining text, without
            # which SFT overwrites the facts it never asks about. The single-family baseline is left to
            # lesson 05, to keep the pipeline's time down.
            "sft.train.max_steps=1200", "sft.train.lr=1e-3", "sft.train.eval_every=400",
            "sft.train.save_every=400", "sft.single_family_baseline=false", "sft.pretrain_mix=0.1",
            # The from-scratch baseline has nothing pretrained to keep: Muon at 5x SFT's lr learns more
            # from random weights in 500 steps than SFT's own settings do in 1200 (docs/findings.md).
            "sft.scratch_max_steps=500", "sft.scratch_lr=5e-3", "sft.scratch_optimizer=muon",
            # Reward model: it starts from the SFT model's own likelihood of each answer, so it needs few
            # steps; batches of 32 rankings rank more steadily than 16. 500 rankings (~100 held out).
            "reward.n_prompts=500", "reward.train.max_steps=40", "reward.train.batch_size=32",
            "reward.train.lr=3e-4", "reward.train.eval_every=20", "reward.train.eval_batches=2",
            "reward.train.save_every=40",
            # PPO: a strong KL leash (0.2; looser ones drift to answers the reward model over-rates) and
            # rollouts of 64 answers, whose advantages are whitened over more answers: less noisy steps.
            "ppo.train.max_steps=20", "ppo.train.lr=1e-4", "ppo.critic_lr=1e-4", "ppo.kl_coef=0.2",
            "ppo.rollout_batch_size=64", "ppo.minibatch_size=16", "ppo.ppo_epochs=2", "ppo.train.save_every=10",
            # DPO: beta 0.3 won most often of 0.03-1; the chosen answers' own NLL (RPO, as in Llama 3)
            # keeps the good answers likely while the DPO loss opens the gap between the two.
            "dpo.train.max_steps=60", "dpo.train.batch_size=16", "dpo.train.lr=1e-4", "dpo.beta=0.3",
            "dpo.nll_coef=1.0",
            "dpo.train.eval_every=60", "dpo.train.eval_batches=2", "dpo.train.save_every=60",
            # GRPO: 30 steps of 32 prompts x 8 answers, lr 1e-4, no KL term; more prompts per step won
            # more often than a higher lr (docs/findings.md). pass@k on the first 100 held-out prompts.
            *[f"{g}.{k}" for g in ("grpo", "grpo_verifiable") for k in (
                "train.lr=1e-4", "prompts_per_step=32", "minibatch_size=64", "train.save_every=10",
                "passk_prompts=100")],
        ])
    raise ConfigError(f"preset={name}: preset (minillm/config.py) has no settings for it; add its branch there, "
                      "beside tiny's")


# --------------------------------------------------------------------------------------------------
# Overrides ("--set a.b.c=value") and (de)serialisation.

ConfigT = TypeVar("ConfigT")  # a config dataclass: apply_overrides gives back a copy of the same class


def check_section(value: Any, kind: type, where: str) -> None:
    """A ConfigError at the entry of `where` (a model class, a stage's train function) when it was given
    a config of another kind than `kind`: `train_clm(cfg.mlm, ...)` would train a GPT with the MLM's
    settings without a word, and `GPT(cfg.clm)` failed deep inside on a missing attribute. The fix it
    names is the whole config where `kind` is PipelineConfig (`corpus_splits` reads its data_seed and
    corpus_mb), else the section that `kind` names."""
    if isinstance(value, kind):
        return
    fix = ("pass the whole pipeline config, e.g. preset('tiny')" if kind is PipelineConfig else
           "pass the section of the pipeline's config that it names, e.g. cfg = preset('tiny'): "
           "train_clm(cfg.clm, ...), GPT(cfg.clm.model), train(model, cfg.clm.train, ...)")
    raise ConfigError(f"{where}: expected a {kind.__name__}, got {type(value).__name__}; {fix}")


def _parse_value(text: str, current: Any, path: str) -> Any:
    """Parse `text` as the type of the field's current value (a str field takes the text as it is)."""
    expected = {bool: "true or false", int: "an integer", float: "a number"}.get(type(current))
    try:
        if isinstance(current, bool):
            if text.lower() in ("true", "1", "yes", "on"):
                return True
            if text.lower() in ("false", "0", "no", "off"):
                return False
            raise ValueError
        if isinstance(current, int):
            return int(text)
        if isinstance(current, float):
            return float(text)
    except ValueError:
        raise ConfigError(f"--set {path}={text!r}: expected {expected}, e.g. {path}={current!r}") from None
    return text


def apply_overrides(cfg: ConfigT, overrides: list[str]) -> ConfigT:
    """Return a copy of `cfg` with each "dotted.path=value" applied.

    The values are set in a plain dict first and the config is rebuilt (and so validated) once at
    the end: the order of the overrides does not matter, and two fields that must agree (e.g.
    batch_size and grad_accum_steps) can be changed together.
    """
    if isinstance(overrides, str):  # (a str would be read one character at a time)
        raise ConfigError(f"apply_overrides takes a list of \"path=value\" strings, got one str: [{overrides!r}]")
    data, paths = to_dict(cfg), []
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected the form path=value, e.g. clm.model.n_layer=6")
        path, text = (part.strip() for part in item.split("=", 1))
        if path.endswith("model.vocab_size"):
            raise ConfigError(f"--set {path}: a model has one row per id of its tokenizer, so its vocab_size is "
                              "the tokenizer's; use --set tokenizer.vocab_size=N")
        _set_path(data, type(cfg), path.split("."), text, path)
        paths.append(path)
    for path in paths:  # once every value is set: an arch given after its switch counts too
        _check_not_overridden_by_arch(data, path)
        _check_read(data, path)
    return from_dict(type(cfg), data)


# Settings read only while a switch beside them (in the same section) is on: "group.name" -> (the
# switch, whether its value reads the setting, the value that does, as a refusal says it).
READ_ONLY_WHEN: dict[str, tuple[str, typing.Callable[[Any], bool], str]] = {
    "tokenizer.spm_model_type": ("kind", lambda v: v == "sentencepiece", "sentencepiece"),
    "model.rope_base": ("position", lambda v: v == "rope", "rope"),
    "model.mlp_ratio": ("mlp_hidden", lambda v: v == 0, "0"),
    **{f"lora.{name}": ("rank", lambda v: v > 0, "8 (or another rank >= 1)")
       for name in ("alpha", "dropout", "targets", "also_train")},
    "sft.replay_length": ("pretrain_mix", lambda v: v > 0, "0.1 (or another share above 0)"),
    "sft.single_family": ("single_family_baseline", lambda v: v, "true"),
    "ppo.target_kl": ("adaptive_kl", lambda v: v, "true"),
    **{f"{grpo}.exact_bonus": ("reward", lambda v: v == "verifiable", "verifiable")
       for grpo in ("grpo", "grpo_verifiable")},
    # (a program's reward scores an unfinished answer itself: no_eos_penalty stands in for the model's score only)
    **{f"{grpo}.no_eos_penalty": ("reward", lambda v: v == "model", "model")
       for grpo in ("grpo", "grpo_verifiable")},
}


def _unread_by_online_rl(rl: str, samples: str) -> dict[str, str]:
    """The TrainConfig settings of section `rl` that PPO's and GRPO's own loop (a rollout, then updates)
    never reads, each with what does its work there; `samples`: the answers a step samples."""
    evaluates = f"it evaluates once, after its last step, on {rl}.eval_prompts held-out prompts"
    return {f"{rl}.train.batch_size": f"a step samples {samples} and updates on {rl}.minibatch_size of them at a "
                                      "time: set those",
            f"{rl}.train.log_every": "it logs every step",
            f"{rl}.train.eval_every": evaluates, f"{rl}.train.eval_batches": evaluates}


NEVER_READ: dict[str, str] = {  # "path": why, for a --set of one of them
    **_unread_by_online_rl("ppo", "ppo.rollout_batch_size answers"),
    **_unread_by_online_rl("grpo", "grpo.prompts_per_step x grpo.group_size answers"),
    **_unread_by_online_rl("grpo_verifiable", "grpo_verifiable.prompts_per_step x grpo_verifiable.group_size answers"),
}


def _check_read(data: dict, path: str) -> None:
    """Refuse a `--set` of a setting (at `path`) that is never read (NEVER_READ) or that the switch beside
    it leaves unread (READ_ONLY_WHEN), e.g. sft.lora.targets while sft.lora.rank is 0 (LoRA off): it
    would be dropped without a word."""
    if path in NEVER_READ:
        raise ConfigError(f"--set {path}: {path.split('.')[0]}'s loop never reads it; {NEVER_READ[path]}")
    *keys, name = path.split(".")
    rule = READ_ONLY_WHEN.get(".".join([*keys[-1:], name]))
    if rule is None:
        return
    for key in keys:
        data = data[key]
    switch, reads, value = rule
    current = ARCHITECTURES.get(data.get("arch"), {}).get(switch, data[switch])  # arch wins (ModelConfig._apply_arch)
    if not reads(current):
        where = ".".join(keys)
        raise ConfigError(f"--set {path}: {where}.{switch}={json.dumps(current)} leaves {name} unread; set "
                          f"{where}.{switch}={value} too, or leave {name} out")


def _check_not_overridden_by_arch(data: dict, path: str) -> None:
    """Refuse a `--set` of a switch (at `path`) that its model's `arch` sets to another value: arch wins
    (ModelConfig._apply_arch), so the value asked for would be dropped without a word."""
    *keys, name = path.split(".")
    for key in keys:
        data = data[key]
    switches = ARCHITECTURES.get(data.get("arch"), {})
    if name in switches and data[name] != switches[name]:
        where = ".".join(keys)
        sets = ", ".join(f"{k}={json.dumps(v)}" for k, v in switches.items())
        raise ConfigError(f"--set {path}={json.dumps(data[name])}: {where}.arch={data['arch']} sets {sets}, and "
                          f"arch wins; to change one of them leave {where}.arch empty and set the switches one by one")


def _set_path(data: dict, cls: type, keys: list[str], text: str, full: str) -> None:
    """Set data[keys[0]][keys[1]]... (the dict of config `cls`) to `text` parsed as the old value's type."""
    key = keys[0]
    if key not in data:
        close = difflib.get_close_matches(key, list(data), n=1)
        guess = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(f"--set {full}: {cls.__name__} has no field {key!r}; {guess}"
                          f"its fields are {', '.join(data)}")
    nested = isinstance(data[key], dict)
    if len(keys) == 1:
        if nested:
            raise ConfigError(f"--set {full}: {key!r} is a group of settings; name one of its fields "
                              f"({', '.join(data[key])}), e.g. {full}.{next(iter(data[key]))}=...")
        data[key] = _parse_value(text, data[key], full)
    elif not nested:
        raise ConfigError(f"--set {full}: {key!r} is a single value, not a group; use --set "
                          f"{full.rsplit('.', len(keys) - 1)[0]}=VALUE")
    else:
        _set_path(data[key], typing.get_type_hints(cls)[key], keys[1:], text, full)


def replace_train_configs(cfg: Any, **changes: Any) -> Any:
    """A copy of `cfg` with `changes` (e.g. device="cuda") applied to every TrainConfig inside it.

    The runtime settings (device, dtype, compile, detect_anomaly) belong to each stage's loop; this
    sets them for all stages at once, so that no stage is forgotten.
    """
    if isinstance(cfg, TrainConfig):
        return dataclasses.replace(cfg, **changes)
    nested = {f.name: replace_train_configs(getattr(cfg, f.name), **changes)
              for f in dataclasses.fields(cfg) if dataclasses.is_dataclass(getattr(cfg, f.name))}
    return dataclasses.replace(cfg, **nested)


def train_configs(cfg: Any) -> list[TrainConfig]:
    """Every TrainConfig inside `cfg` (one per stage of a PipelineConfig)."""
    if isinstance(cfg, TrainConfig):
        return [cfg]
    return [train for f in dataclasses.fields(cfg) if dataclasses.is_dataclass(getattr(cfg, f.name))
            for train in train_configs(getattr(cfg, f.name))]


def to_dict(cfg: Any) -> dict:
    """A plain dict (JSON-ready) of a config dataclass, nested configs included."""
    return dataclasses.asdict(cfg)


def from_dict(cls: type, data: dict, path: str = "") -> Any:
    """Build config `cls` from a dict (e.g. read from config.json), refusing unknown keys by name.

    `path` is where this config sits in a bigger one ("sft.train"); a validation error names it, so
    "TrainConfig.lr=0.0 is invalid" says which stage's lr.
    """
    where = f"{path}: " if path else ""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}{cls.__name__}: expected a JSON object, got {type(data).__name__}")
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(f"{where}{cls.__name__}: unknown field(s) {unknown}; known fields are {sorted(names)}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        hint = hints[key]
        nested = f"{path}.{key}" if path else key
        kwargs[key] = from_dict(hint, value, nested) if dataclasses.is_dataclass(hint) else value
    try:
        return cls(**kwargs)
    except ConfigError as err:
        raise ConfigError(f"{where}{err}") from None


def diff_configs(saved: dict, current: dict, prefix: str = "") -> list[str]:
    """The fields that differ between two config dicts, as 'path: saved -> current' lines."""
    lines = []
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key, "<missing>"), current.get(key, "<missing>")
        if isinstance(a, dict) and isinstance(b, dict):
            lines += diff_configs(a, b, f"{prefix}{key}.")
        elif a != b:
            lines.append(f"{prefix}{key}: {json.dumps(a)} -> {json.dumps(b)}")
    return lines


def changed_settings(saved: dict, current: dict) -> list[str]:
    """The lines of diff_configs for the pipeline's settings `saved` (a config.json or inputs.json
    written earlier, perhaps by an older minillm) and `current` that are real changes.

    A field that `saved` lacks was added to the config since: it counts at its default, the value
    that keeps the behaviour from before it existed, so a preset or --set that moves it is a change.
    A field only `saved` has was taken out since; nothing sets it now, so it is not a change.
    """
    known = at_defaults(saved, to_dict(PipelineConfig()))
    return [line for line in diff_configs(known, current) if "<missing>" not in line]


def at_defaults(saved: dict, defaults: dict) -> dict:
    """`saved` with each field that it lacks and `defaults` has, at its default, at every depth."""
    filled = dict(saved)
    for key, default in defaults.items():
        if key not in filled:
            filled[key] = default
        elif isinstance(filled[key], dict) and isinstance(default, dict):
            filled[key] = at_defaults(filled[key], default)
    return filled


def first_changes(changed: list[str], shown: int = 3) -> str:
    """The first `shown` lines of a diff in one line: "a: 1 -> 2; b: true -> false; ..."."""
    return "; ".join(changed[:shown]) + ("; ..." if len(changed) > shown else "")
