"""GPT: a decoder-only transformer that predicts the next token, and the sampling loop that writes text.

Follow a batch of token ids through `GPT.forward` (`hidden_states`, then `lm_head`):

    ids (B, T) --token embedding--> (B, T, C) + position embedding (B, T, C)
      (or, with config.position = "rope", no position vector: each attention turns its queries and keys)
      -> n_layer blocks, each with a CAUSAL mask (position t sees positions 0..t only)
      -> final LayerNorm (B, T, C)
      -> LM head: the token embedding table again, transposed (weight tying) -> logits (B, T, V)

logits[b, t] scores every vocabulary entry as the token that comes AFTER ids[b, t]. The loss is
computed by the training stages, not here.

Generation (`GPT.generate`) repeats: run the model, take the logits of the last position, turn them
into a distribution (temperature, top-k, top-p), draw a token, append it. Two details matter:
- **KV cache**: keys and values of past tokens are kept (attention.KVCache), so each step only
  processes the one new token. `use_cache=False` recomputes everything, for comparison. A prompt
  that several rows repeat (n samples of one prompt) fills the cache once, for all of them.
- **Batched prompts of different lengths** are LEFT-padded ("<pad> <pad> Hello there") so that every
  row's next token is appended at the same column. The attention mask hides the pads (also from
  all later tokens, through the cache), and position ids count real tokens only, so a padded prompt
  is continued exactly as it would be on its own.

`GPT.from_gpt2_state_dict` loads the weights of OpenAI's GPT-2 (a state dict you already have):
the default architecture here is GPT-2's, choice for choice (pre-LN, tanh GELU, eps 1e-5, tied head).
The switches of `ModelConfig` (RMSNorm, SwiGLU, grouped-query attention, RoPE, no biases, an untied
head; `arch="llama"` sets them all) turn it into Llama, and `GPT.from_llama_state_dict` loads
Llama's weights (Hugging Face layout) to prove that the switches are right.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from minillm.config import MIN_TEMPERATURE, ModelConfig, check_section
from minillm.errors import CheckpointError, ModelInputError
from minillm.model.attention import KVCache, padding_mask
from minillm.model.blocks import (
    Block,
    add_positions,
    check_model_inputs,
    init_weights,
    make_dropout,
    make_norm,
    output_table,
    position_table,
    positions_from_mask,
    read_out,
)
from minillm.model.weight_import import (
    count_layers,
    gpt2_ignored,
    gpt2_plan,
    llama_ignored,
    llama_plan,
    load_converted,
    mlp_size,
    sized_source,
)
from minillm.utils import is_whole_number


@dataclass
class Generation:
    """What `GPT.generate` returns. N = number of generated steps (<= max_new_tokens: it stops
    early once every row has produced eos).

    ids:           (B, T0 + N) the prompts (as given, padding included) followed by new_ids
    new_ids:       (B, N) the generated tokens; after a row's first eos, pad_id
    logprobs:      (B, N) log-probability of each generated token under the temperature-scaled
                   distribution, before top-k/top-p truncation (what a forward pass recomputes);
                   0 where response_mask is False. With temperature 0 (greedy): under temperature 1.
    response_mask: (B, N) bool, True for real generated tokens, up to AND including the first eos
    """

    ids: Tensor
    new_ids: Tensor
    logprobs: Tensor
    response_mask: Tensor


class GPT(nn.Module):
    """A GPT-2 style decoder: token + position embeddings, causal pre-LN blocks, tied LM head (by default)."""

    kind = "gpt"  # stored in checkpoints, so a run folder of another kind of model is refused

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        check_section(config, ModelConfig, "GPT")
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.n_embd)
        self.pos_emb = position_table(config)  # None with RoPE: positions turn queries and keys instead
        self.drop = make_dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config, layer, causal=True) for layer in range(config.n_layer))
        self.ln_f = make_norm(config)  # pre-LN's final norm; with norm="post" a second one after the last block's
        self.head = output_table(config)  # None: the LM head is the token table (tied)
        init_weights(self, config.n_layer)

    def hidden_states(
        self, ids: Tensor, attention_mask: Tensor | None = None, position_ids: Tensor | None = None,
        cache: KVCache | None = None,
    ) -> Tensor:
        """ids (B, T) -> (B, T, C) after the final LayerNorm.

        attention_mask (B, T): True = real token, False = padding. With a cache, ids and mask are the
        NEW tokens only; the cache remembers the earlier ones and their mask.
        """
        check_model_inputs(ids, attention_mask, self.config, self.tok_emb.weight.device, cache)
        past = 0 if cache is None else cache.length  # T_past, read before add_tokens counts these tokens
        B, T = ids.shape
        key_mask = attention_mask if cache is None else cache.add_tokens(attention_mask, B, T)  # (B, Tk)
        if position_ids is None and key_mask is not None:
            position_ids = positions_from_mask(key_mask)[:, -T:]  # (B, T): real tokens counted only
        elif position_ids is None:
            position_ids = torch.arange(past, past + T, device=ids.device)[None]  # (1, T)
        x, rotary = add_positions(self.tok_emb(ids), self.pos_emb, position_ids, self.config)
        x = self.drop(x)  # (B, T, C)
        mask = None if key_mask is None else padding_mask(key_mask)  # (B, 1, 1, Tk); blocks add causality
        for block in self.blocks:
            x = block(x, mask, cache, rotary)  # (B, T, C)
        return self.ln_f(x)

    def forward(
        self, ids: Tensor, attention_mask: Tensor | None = None, position_ids: Tensor | None = None,
        cache: KVCache | None = None, logits_at: Tensor | None = None,
    ) -> Tensor:
        """ids (B, T) -> logits (B, T, V); logits[:, t] predict the token after ids[:, t].

        logits_at (B, T) bool: the positions whose predictions are needed; the logits come back as
        (M, V), one row per True (M of them) in row-major order. The vocabulary projection is a small
        model's largest matmul, and a loss that counts only the answer's tokens (SFT) needs it nowhere
        else.
        """
        h = self.hidden_states(ids, attention_mask, position_ids, cache)  # (B, T, C)
        return self.lm_head(h if logits_at is None else h[logits_at])  # (B, T, V) or (M, V)

    def lm_head(self, h: Tensor) -> Tensor:
        """Hidden states (..., C) -> logits (..., V): the token table read backwards (weight tying),
        or the head's own table with config.tie_embeddings=False (blocks.output_table)."""
        return read_out(h, self.tok_emb, self.head)

    @torch.no_grad()
    def generate(
        self, ids: Tensor, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
        top_p: float | None = None, eos_id: int | None = None, attention_mask: Tensor | None = None,
        pad_id: int | None = None, generator: torch.Generator | None = None, use_cache: bool = True,
    ) -> Generation:
        """Continue each prompt of `ids` (B, T0) by up to `max_new_tokens` tokens.

        Prompts of different lengths must be LEFT-padded, with attention_mask False on the pads.
        temperature 0 = greedy (argmax); top_k keeps the k likeliest tokens (and any tied with the k-th);
        top_p keeps, of those, the smallest set whose renormalised probability reaches p (`filter_logits`).
        A row stops at `eos_id`; its later slots hold `pad_id` (default: eos_id). Pass a seeded
        torch.Generator to make sampling repeatable. Runs in eval mode (no dropout) and restores the
        previous mode afterwards.
        """
        self._check_generate_args(ids, max_new_tokens, temperature, top_k, top_p, eos_id, pad_id,
                                  attention_mask)
        pad = pad_id if pad_id is not None else (eos_id if eos_id is not None else 0)
        B = ids.shape[0]
        cache = KVCache(self.config.n_layer, capacity=ids.shape[1] + max_new_tokens) if use_cache else None
        mask = None if attention_mask is None else attention_mask.bool()  # (B, T), None = no padding
        seq = ids  # (B, T0): the whole text so far, which only use_cache=False feeds again
        # The rows still generating, as indices into the batch. A row that has produced <eos> needs no
        # more compute: it leaves the batch (and the cache), and later steps only run the others.
        # Answers differ in length, so this saves most of the work when one long answer would
        # otherwise keep every finished row running to the end.
        rows = torch.arange(B, device=ids.device)  # (b,)
        new_ids, logprobs = [], []
        was_training = self.training
        self.eval()
        try:
            # Inference mode is no_grad and more: torch also skips the bookkeeping that autograd would
            # need later (version counters, views), a tenth of a small model's step at batch 1.
            with torch.inference_mode():
                logits = self._prefill(ids, mask, cache)  # (B, V): what follows each prompt
                for step in range(max_new_tokens):
                    token, logprob = sample_next(logits, temperature, top_k, top_p, generator)  # (b,), (b,)
                    # Back to full-batch columns (B,): finished rows emit padding, log-prob 0.
                    new_ids.append(scatter_rows(token, rows, B, pad))
                    logprobs.append(scatter_rows(logprob, rows, B, 0.0))
                    if step == max_new_tokens - 1:
                        break
                    finished = None if eos_id is None else token == eos_id  # (b,)
                    if finished is not None and bool(finished.any()):  # some rows just finished: drop them
                        if bool(finished.all()):  # every row has ended
                            break
                        running = ~finished
                        rows, token = rows[running], token[running]
                        mask = None if mask is None else mask[running]
                        if cache is not None:
                            cache.take_rows(running)
                        else:
                            seq = seq[running]
                    # (b, 1) True: the token fed next is real, so the padding mask grows by one column
                    one_real = None if mask is None else torch.ones(len(rows), 1, dtype=torch.bool, device=ids.device)
                    if cache is not None:  # feed only the new token; the cache holds the rest
                        logits = self._next_token_logits(token[:, None], one_real, cache)
                    else:  # recompute the whole sequence, one token longer
                        seq = torch.cat([seq, token[:, None]], dim=1)  # (b, T + 1)
                        mask = None if mask is None else torch.cat([mask, one_real], dim=1)
                        logits = self._next_token_logits(seq, mask, None)
        finally:
            self.train(was_training)
        # Stacked outside inference mode, the results are ordinary tensors that a training step may use.
        new = torch.stack(new_ids, dim=1)  # (B, N)
        return Generation(ids=torch.cat([ids, new], dim=1), new_ids=new, logprobs=torch.stack(logprobs, dim=1),
                          response_mask=up_to_first(new, eos_id))

    def _prefill(self, ids: Tensor, attention_mask: Tensor | None, cache: KVCache | None) -> Tensor:
        """Run the prompts (B, T0) into the cache; return the logits (B, V) of each one's next token.

        Rows that repeat a prompt share its prefill. Sampling n answers to one prompt (GRPO's
        groups, pass@k, best of n) asks it n times; each distinct prompt runs once here, and its
        keys, values and logits are copied to every row that asked it.
        """
        shared = None if cache is None else distinct_prompts(ids, attention_mask)
        if shared is None:  # no cache, or no prompt repeats: nothing to share
            return self._next_token_logits(ids, attention_mask, cache)
        states = self._read_each_prompt_once(ids, attention_mask, cache, shared)  # (P, T0, C)
        return self.lm_head(states[:, -1])[shared[1]]  # (P, V) -> (B, V)

    def _read_each_prompt_once(self, ids: Tensor, attention_mask: Tensor | None, cache: KVCache,
                               shared: tuple[Tensor, Tensor]) -> Tensor:
        """Run each distinct prompt of ids (B, T0) once into `cache`, then give every row its prompt's
        keys and values; return the distinct prompts' hidden states (P, T0, C).

        `shared` is `distinct_prompts(ids, attention_mask)`: (one_each (P,), copy_of (B,)).
        """
        one_each, copy_of = shared
        states = self.hidden_states(ids[one_each], None if attention_mask is None else attention_mask[one_each],
                                    cache=cache)  # (P, T0, C)
        cache.take_rows(copy_of)  # (P, ...) -> (B, ...): every row gets its prompt's keys and values
        return states

    def _next_token_logits(self, ids: Tensor, attention_mask: Tensor | None, cache: KVCache | None) -> Tensor:
        """Logits (B, V) for the token after the last position: the LM head runs on that position only."""
        return self.lm_head(self.hidden_states(ids, attention_mask, cache=cache)[:, -1])  # (B, V)

    def _check_generate_args(
        self, ids: Tensor, max_new_tokens: int, temperature: float, top_k: int | None,
        top_p: float | None, eos_id: int | None, pad_id: int | None, attention_mask: Tensor | None,
    ) -> None:
        check_model_inputs(ids, attention_mask, self.config, self.tok_emb.weight.device)
        for name, value in (("max_new_tokens", max_new_tokens), ("top_k", top_k)):
            if value is not None and not is_whole_number(value):
                raise ModelInputError(f"generate: {name}={value!r} must be an integer")
        V, total = self.config.vocab_size, ids.shape[1] + max_new_tokens
        problems = []
        if ids.shape[1] == 0:
            problems.append("ids has no prompt tokens; give at least one (e.g. <bos>)")
        if max_new_tokens < 1:
            problems.append(f"max_new_tokens={max_new_tokens} must be >= 1")
        if total > self.config.block_size:
            problems.append(f"prompt ({ids.shape[1]}) + max_new_tokens ({max_new_tokens}) = {total} "
                            f"exceeds block_size={self.config.block_size}; shorten one of them")
        if not temperature >= 0:  # (written so that NaN fails it too)
            problems.append(f"temperature={temperature} must be >= 0 (0 = greedy)")
        elif 0 < temperature < MIN_TEMPERATURE:
            problems.append(f"temperature={temperature} is below {MIN_TEMPERATURE:g}, where logits / temperature "
                            "overflow float32 (inf, then NaN probabilities); use 0 for greedy")
        if top_k is not None and top_k < 1:
            problems.append(f"top_k={top_k} must be >= 1 or None")
        if top_p is not None and not 0 < top_p <= 1:
            problems.append(f"top_p={top_p} must be in (0, 1] or None")
        for name, value in (("eos_id", eos_id), ("pad_id", pad_id)):
            if value is not None and not 0 <= value < V:
                problems.append(f"{name}={value} must be a token id in [0, {V})")
        if attention_mask is not None:
            m = attention_mask.bool()
            if not bool((m[:, 1:] >= m[:, :-1]).all() and m[:, -1].all()):
                problems.append("attention_mask must describe LEFT padding (False pads first, then True "
                                "tokens, the last column True) so that new tokens follow the prompt")
        if problems:
            raise ModelInputError("generate: " + "; ".join(problems))

    def response_states(self, ids: Tensor, attention_mask: Tensor | None, n: int) -> Tensor:
        """Hidden states (B, n + 1, C) at each row's last prompt column and its n response columns.

        ids (B, T0 + n) are left-padded prompts followed by n columns of sampled response. These
        n + 1 positions are all that RL reads: position t predicts token t + 1, so the last prompt
        column predicts the first response token, and a reward model reads the answer's last token.

        Rows that repeat a prompt (GRPO's group of answers to one prompt) share its pass, as in
        generation: each distinct prompt runs once into a KV cache, its keys and values are copied to
        every row that asked it, and the responses run on top. The numbers are those of one full
        pass (to float rounding), and so are the gradients: autograd carries each copy's gradient
        back to the one prompt pass, where they add up. (Each cache buffer is written once after it
        is made, so autograd accepts the in-place writes.)
        """
        prompt_len = ids.shape[1] - n
        if not 0 < n < ids.shape[1]:
            raise ModelInputError(f"response_states: n={n} response columns in ids of {ids.shape[1]} columns "
                                  f"leave no prompt or no response; n must be in [1, {ids.shape[1] - 1}]")
        if attention_mask is None:
            attention_mask = torch.ones_like(ids, dtype=torch.bool)
        shared = distinct_prompts(ids[:, :prompt_len], attention_mask[:, :prompt_len])
        if shared is None:  # every row has its own prompt: one ordinary pass
            return self.hidden_states(ids, attention_mask)[:, -n - 1:]  # (B, n + 1, C)
        cache = KVCache(self.config.n_layer, capacity=ids.shape[1])
        prompt_states = self._read_each_prompt_once(ids[:, :prompt_len], attention_mask[:, :prompt_len], cache,
                                                    shared)  # (P, T0, C)
        response = self.hidden_states(ids[:, prompt_len:], attention_mask[:, prompt_len:], cache=cache)  # (B, n, C)
        return torch.cat([prompt_states[shared[1], -1:], response], dim=1)  # (B, n + 1, C)

    @classmethod
    def from_gpt2_state_dict(
        cls, state_dict: Mapping[str, Tensor], n_head: int | None = None, attention: str = "manual"
    ) -> GPT:
        """Build a GPT holding the weights of a GPT-2 state dict (HuggingFace layout, e.g. GPT2LMHeadModel).

        Sizes are read from the tensors' shapes. The number of heads cannot be (it only splits the
        width), so it is an argument; by default n_embd // 64, true for every GPT-2 size. GPT-2
        stores its Linear layers as "Conv1D" with the weight transposed: (in, out) instead of
        (out, in), so each matrix is transposed on the way in.
        """
        sd = sized_source(state_dict, "transformer.", ["wte.weight", "wpe.weight", "h.0.mlp.c_fc.weight"], "GPT-2")
        vocab_size, n_embd = sd["wte.weight"].shape
        config = ModelConfig(
            vocab_size=vocab_size, block_size=sd["wpe.weight"].shape[0], n_embd=n_embd,
            n_layer=count_layers(sd, "h."),
            n_head=n_head if n_head is not None else max(1, n_embd // 64),
            **mlp_size(sd["h.0.mlp.c_fc.weight"].shape[1], n_embd),  # Conv1D: (in, out) = (C, d_ff)
            norm="pre", activation="gelu_tanh", layer_norm_eps=1e-5, attention=attention,
        )
        if "lm_head.weight" in sd and not torch.equal(sd["lm_head.weight"], sd["wte.weight"]):
            raise CheckpointError("lm_head.weight differs from wte.weight: GPT-2 ties them, and so does "
                                  "this GPT; an untied head cannot be loaded")
        model = cls(config)
        load_converted(model, sd, gpt2_plan(config.n_layer), gpt2_ignored, "GPT-2")
        return model

    @classmethod
    def from_llama_state_dict(
        cls, state_dict: Mapping[str, Tensor], n_head: int, block_size: int = 2048,
        rope_base: float = 10000.0, norm_eps: float = 1e-5, attention: str = "manual",
    ) -> GPT:
        """Build a GPT holding the weights of a Llama state dict (Hugging Face's LlamaForCausalLM layout).

        Sizes are read from the shapes, the number of key/value heads too (the width of k_proj over
        head_dim). What no tensor holds is an argument: n_head, the context (block_size), RoPE's base
        (config.json's rope_theta) and RMSNorm's eps (rms_norm_eps). The q, k and v projections are
        stacked into our qkv, gate and up into our fc. RoPE needs no reordering: Hugging Face's Llama
        pairs channel i with i + D/2 as ours does (its conversion script already permuted the rows of
        Meta's q and k, which paired neighbours). Biases (attention_bias, mlp_bias) and RoPE scaling
        (Llama 3.1's rope_scaling) are not supported.
        """
        needed = ["embed_tokens.weight", "layers.0.self_attn.k_proj.weight", "layers.0.mlp.up_proj.weight"]
        sd = sized_source(state_dict, "model.", needed, "Llama")
        vocab_size, n_embd = sd["embed_tokens.weight"].shape
        if n_embd % n_head:
            raise CheckpointError(f"n_head={n_head} does not divide the width {n_embd}; pass the "
                                  "num_attention_heads of the model's config.json")
        head = sd.get("lm_head.weight")
        config = ModelConfig(
            vocab_size=vocab_size, block_size=block_size, n_embd=n_embd, norm_type="rmsnorm", mlp="swiglu",
            position="rope", bias=False,
            n_layer=count_layers(sd, "layers."),
            n_head=n_head, n_kv_head=sd["layers.0.self_attn.k_proj.weight"].shape[0] // (n_embd // n_head),
            mlp_hidden=sd["layers.0.mlp.up_proj.weight"].shape[0], layer_norm_eps=norm_eps,
            rope_base=rope_base, attention=attention,
            tie_embeddings=head is None or torch.equal(head, sd["embed_tokens.weight"]),
        )
        model = cls(config)
        load_converted(model, sd, llama_plan(config), llama_ignored(config), "Llama")
        return model


# --------------------------------------------------------------------------------------------------
# Generation's helpers: which rows share a prompt, and sampling from the last position's logits
# one token per row.


def distinct_prompts(ids: Tensor, attention_mask: Tensor | None) -> tuple[Tensor, Tensor] | None:
    """Which rows of ids (B, T) repeat a prompt: (one_each (P,), copy_of (B,)), or None if none does.

    one_each picks one row per distinct prompt; copy_of maps every row to its prompt's place in
    one_each, so rows[one_each][copy_of] == rows. Pads count as equal whatever id they hold.
    """
    prompts = ids if attention_mask is None else ids.masked_fill(~attention_mask.bool(), -1)  # pads all alike
    # Found on the CPU (a few thousand ids; not every accelerator has torch.unique over rows).
    distinct, copy_of = torch.unique(prompts.cpu(), dim=0, return_inverse=True)  # (P, T), (B,)
    B = ids.shape[0]
    if len(distinct) == B:
        return None
    copy_of = copy_of.to(ids.device)
    one_each = torch.empty(len(distinct), dtype=torch.long, device=ids.device).scatter_(
        0, copy_of, torch.arange(B, device=ids.device))  # (P,): any of a prompt's rows (they are equal)
    return one_each, copy_of


def sample_next(
    logits: Tensor, temperature: float, top_k: int | None, top_p: float | None,
    generator: torch.Generator | None,
) -> tuple[Tensor, Tensor]:
    """Pick one token per row from logits (B, V); return it (B,) and its log-probability (B,)."""
    # In float32 whatever the model's dtype: bfloat16's softmax and cumsum lose small probabilities.
    logits = logits.float()  # (B, V)
    if temperature == 0:  # greedy: the single likeliest token
        token = logits.argmax(dim=-1)  # (B,)
        return token, logits.log_softmax(dim=-1).gather(-1, token[:, None])[:, 0]
    scaled = logits / temperature  # < 1 sharpens the distribution, > 1 flattens it
    probs = filter_logits(scaled, top_k, top_p).softmax(dim=-1)  # (B, V)
    token = inverse_cdf_sample(probs, generator)  # (B,)
    return token, scaled.log_softmax(dim=-1).gather(-1, token[:, None])[:, 0]


def filter_logits(logits: Tensor, top_k: int | None, top_p: float | None) -> Tensor:
    """Set to -inf every token outside the top-k, then every token outside the top-p nucleus of what is
    left (renormalised). logits (B, V).

    top-k keeps every token whose logit reaches the k-th largest, so tokens tied with the k-th all stay
    (more than k). The nucleus is the likeliest tokens, best first, up to and including the one whose
    running probability first reaches top_p (Holtzman et al., 2020); of tokens tied at its edge, the
    sort decides which stays."""
    if top_k is not None:
        kth_best = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth_best, float("-inf"))
    if top_p is not None:
        sorted_logits, order = logits.sort(dim=-1, descending=True)  # (B, V)
        probs = sorted_logits.softmax(dim=-1)
        mass_before = probs.cumsum(dim=-1) - probs  # probability of the tokens ranked above this one
        outside = mass_before >= top_p
        outside[:, 0] = False  # the best always stays (a top_p below float32's range compares as 0)
        sorted_logits = sorted_logits.masked_fill(outside, float("-inf"))
        logits = torch.empty_like(logits).scatter_(-1, order, sorted_logits)
    return logits


def inverse_cdf_sample(probs: Tensor, generator: torch.Generator | None) -> Tensor:
    """One token per row of probs (B, V), drawn with probability probs[b, v]: inverse-CDF sampling.

    Lay the tokens' probabilities end to end on [0, 1), throw one uniform number u at it, and take
    the token whose stretch it lands in: the first whose cumulative probability exceeds u. A token
    of probability p owns a stretch of length p, so it is hit with probability p; a filtered token
    (p = 0) owns none and is never hit. It needs one random number per row: `torch.multinomial`
    gives the same distribution but took ~40x as long on our 2-core CPU (batch 64, 1536 tokens).
    u is drawn on the generator's device, so a CPU generator draws the same u on any device (the
    tokens match too, unless another device's rounding moves a cumulative probability across u).
    """
    cumulative = probs.cumsum(dim=-1)  # (B, V), rising to ~1 (float rounding may leave it a hair off)
    u = torch.rand(probs.shape[0], 1, generator=generator,
                   device=generator.device if generator is not None else probs.device)  # (B, 1)
    u = u.to(probs.device) * cumulative[:, -1:]  # scaled to the row's own total, so u never lies past it
    return torch.searchsorted(cumulative, u, right=True)[:, 0]  # (B,) first index with cumulative > u


def scatter_rows(values: Tensor, rows: Tensor, batch: int, fill: float | bool) -> Tensor:
    """A (batch,) tensor with values (b,) at the indices `rows` and `fill` everywhere else."""
    if len(rows) == batch:  # every row still generating: values are already in batch order
        return values
    return torch.full((batch,), fill, dtype=values.dtype, device=values.device).index_copy(0, rows, values)


def up_to_first(new_ids: Tensor, eos_id: int | None) -> Tensor:
    """(B, N) bool: True on each row's generated tokens up to and including its first eos."""
    if eos_id is None:
        return torch.ones_like(new_ids, dtype=torch.bool)
    is_eos = (new_ids == eos_id).int()  # (B, N)
    eos_before = is_eos.cumsum(dim=1) - is_eos  # (B, N): how many eos came strictly before each column
    return eos_before == 0
