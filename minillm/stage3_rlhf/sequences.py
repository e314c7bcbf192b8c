"""Prompt + answer sequences as tensors, and the log-probabilities a GPT gives their tokens.

Every part of stage 3 handles the same object: a prompt followed by an answer, many of them at
once, of different lengths. This module is the one place where they become tensors and where a
model's opinion of them is read:

- Batches are built by stage 2's helpers: prompts are padded on the LEFT before generation
  (`stage2_sft.evaluate.left_pad`), so every row's next token is written in the same column;
  whole conversations are padded on the right (`stage2_sft.sft.collate`).
- `last_real_index` finds each row's last real token from the mask alone. It never searches for
  `<eos>`: the pad id may equal the eos id, and an answer that filled the whole length has none.
- `gather_logprobs` reads log p(token_t | tokens_<t) off a model's logits: the quantity PPO and GRPO
  turn into ratios and KL penalties (`ppo.response_logits` gives them the logits of the answer's
  positions only). `answer_logprob` sums it over an answer: what DPO compares. `mean_entropy` is
  what PPO and GRPO log of the same logits.
- `per_answer` runs a model over (prompt, answer) pairs given as text, in the chat template, in
  batches: the reward model's scores, a policy's log-probs of answers another policy gave.
- `sample_responses` is the rollout's first half, shared by PPO and GRPO: a policy answers a batch
  of prompts (KV cache), and the answers come back as one prompt + response tensor with its masks,
  and with the log-probability the policy gave each token as it drew it (the rollout's "old"
  log-probs: no second pass over the answers is needed to know them). An answer length that would
  leave the prompts no room in the context is refused (`template.check_room_for_prompt`).

The padding never leaks into a result: masked positions are excluded by the caller's mask, and
real tokens never look at pads. Left pads need the model's attention mask for that; right pads
come after every real token, where causal attention never looks, so right-padded conversations
(`answer_logprob`) are run without one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from minillm.errors import DataError, ModelInputError
from minillm.model import GPT
from minillm.stage2_sft.evaluate import left_pad
from minillm.stage2_sft.sft import collate
from minillm.stage2_sft.template import check_room_for_prompt, decode_response, encode_example, encode_prompt
from minillm.tokenizer import Tokenizer
from minillm.utils import to_device


def last_real_index(attention_mask: Tensor) -> Tensor:
    """(B, T) bool -> (B,) the column of each row's last True, whatever padding surrounds it."""
    if not bool(attention_mask.any(dim=1).all()):
        raise ModelInputError("last_real_index: a row of the attention mask has no real token")
    T = attention_mask.shape[1]
    # The first True of the reversed row is the last True of the row.
    return T - 1 - attention_mask.flip(1).int().argmax(dim=1)  # (B,)


def scatter_to_mask(values: Tensor, mask: Tensor) -> Tensor:
    """(M,) values laid out at the M True places of `mask` (B, T), zeros elsewhere: (B, T).

    The result takes the values' dtype: under autocast a loss comes back in float32 even when the
    logits it was read from are bfloat16.
    """
    out = values.new_zeros(mask.shape)
    out[mask] = values
    return out


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of `x` over the positions where `mask` is True (all of them, or along `dim`)."""
    mask = mask.to(x.dtype)
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1.0)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1.0)


def gather_logprobs(logits: Tensor, targets: Tensor) -> Tensor:
    """log softmax(logits)[target] per position: (B, N, V), (B, N) -> (B, N), in float32.

    Under autocast the logits may be bfloat16, and torch's CPU autocast leaves log_softmax in the
    logits' dtype: log-probs between -4 and -8 would be rounded to steps of 1/32, and the reward
    model's mean of them taken in bfloat16 too. From the logits in float32 (as autocast's
    cross_entropy does) they are the logits' exact log-probs.
    """
    return torch.gather(F.log_softmax(logits.float(), dim=-1), 2, targets.unsqueeze(-1)).squeeze(-1)


@torch.no_grad()
def mean_entropy(logits: Tensor, mask: Tensor) -> float:
    """The policy's entropy per answer token, averaged over the True places of `mask`: (B, N, V), (B, N).

    Logged by PPO and GRPO, never trained on: it falls as the policy grows sure of its answers, and
    one near 0 samples the same answer every time, so its rollouts have nothing left to explore.
    """
    entropy = -(torch.softmax(logits, -1) * torch.log_softmax(logits, -1)).sum(-1)  # (B, N)
    return masked_mean(entropy, mask).item()


def answer_logprob(model: nn.Module, ids: Tensor, loss_mask: Tensor) -> Tensor:
    """log p(answer | prompt) of each row: the sum of its answer tokens' log-probs, (B, T) -> (B,).

    `ids` are conversations right-padded by `collate`; `loss_mask` is True on the answer's tokens (and
    its `<eos>`), as the chat template marks them. As in the SFT loss, the LM head runs only at the
    positions that predict an answer token, and no attention mask is needed: the pads come after
    every real token of their row, where causal attention never looks.
    """
    counts = loss_mask[:, 1:]  # (B, T-1): position t predicts token t+1, an answer token where True
    logits = model(ids, logits_at=F.pad(counts, (0, 1)))  # (M, V), one row per answer token, row-major
    answer_token_logprobs = -F.cross_entropy(logits, ids[:, 1:][counts], reduction="none")  # (M,)
    return scatter_to_mask(answer_token_logprobs, counts).sum(dim=1)  # (B, T-1) -> (B,)


@dataclass
class Responses:
    """A batch of prompts and the answers a policy sampled: B rows, T0 prompt columns (left-padded),
    N response columns (right-padded after the first `<eos>`)."""

    answers: list[str]  # (B,) decoded
    ids: Tensor  # (B, T0 + N) prompt then response
    attention_mask: Tensor  # (B, T0 + N) True on real tokens
    mask: Tensor  # (B, N) True on the response's tokens, <eos> included
    has_eos: Tensor  # (B,) bool: the answer ended by itself rather than at max_new_tokens
    logprobs: Tensor  # (B, N) each token's log-probability under the policy that sampled it; 0 on pads

    @property
    def response_mask(self) -> Tensor:
        """(B, T0 + N): True on the response's tokens only (what a reward model reads)."""
        prompt_columns = self.ids.shape[1] - self.mask.shape[1]
        prompt_part = torch.zeros_like(self.mask[:, :1]).expand(-1, prompt_columns)  # (B, T0) all False
        return torch.cat([prompt_part, self.mask], dim=1)


@torch.no_grad()
def sample_responses(policy: GPT, tokenizer: Tokenizer, prompts: list[str], max_new_tokens: int, temperature: float,
                     generator: torch.Generator) -> Responses:
    """Sample one answer per prompt with the KV cache, and keep it as tensors for scoring and training."""
    device = next(policy.parameters()).device
    check_room_for_prompt(policy.config.block_size, max_new_tokens, "max_new_tokens")
    room = policy.config.block_size - max_new_tokens
    prompt_ids, prompt_mask = left_pad([encode_prompt(tokenizer, p, max_len=room) for p in prompts], tokenizer.pad_id)
    gen = policy.generate(  # detail: sampling with the KV cache, at the training temperature
        prompt_ids.to(device), max_new_tokens, temperature=temperature, eos_id=tokenizer.eos_id,
        attention_mask=prompt_mask.to(device), pad_id=tokenizer.pad_id, generator=generator,
    )
    # detail: responses are cut after the first <eos> and padded; `mask` excludes the pads everywhere.
    mask = gen.response_mask  # (B, N)
    has_eos = ((gen.new_ids == tokenizer.eos_id) & mask).any(dim=1)  # (B,)
    answers = [decode_response(tokenizer, row.tolist()) for row in gen.new_ids]
    return Responses(answers, gen.ids, torch.cat([prompt_mask.to(device), mask], dim=1), mask, has_eos,
                     gen.logprobs)


@torch.no_grad()
def per_answer(fn: Callable[[dict[str, Tensor]], Tensor], model: nn.Module, tokenizer: Tokenizer,
               prompts: Sequence[str], answers: Sequence[str], batch_size: int = 64) -> Tensor:
    """`fn` of each (prompt, answer) in the chat template, one value each: (P,).

    `fn` runs `model` on a batch {"ids", "attention_mask", "loss_mask"} (B, T) (loss_mask True on
    the answer and its `<eos>`) and returns (B,). The batches are built to fit the model's context
    and placed on its device.
    """
    block_size, device = model.config.block_size, next(model.parameters()).device
    examples = [encode_example(tokenizer, p, a, block_size) for p, a in zip(prompts, answers, strict=True)]
    if any(ex is None for ex in examples):
        raise DataError(f"an answer does not fit the model's context ({block_size} tokens) after its prompt; "
                        "generate shorter answers")
    batches = (collate(examples[start:start + batch_size], tokenizer.pad_id)
               for start in range(0, len(examples), batch_size))
    return torch.cat([fn(to_device(batch, device)) for batch in batches])


def answers_logprob(model: nn.Module, tokenizer: Tokenizer, prompts: Sequence[str], answers: Sequence[str]) -> Tensor:
    """log p(answer | prompt) of each pair under `model`, at temperature 1: (P,)."""
    return per_answer(lambda b: answer_logprob(model, b["ids"], b["loss_mask"]), model, tokenizer, prompts, answers)
