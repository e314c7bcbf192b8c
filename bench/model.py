"""How fast is our GPT? Training throughput against PyTorch's own transformer blocks, and the KV cache.

Three measurements; the first two against a reference timed in the same run (so the ratio, not the
absolute number, is what to read: the machine may be busy):

1. Training step (forward + backward + the fused AdamW step that training runs), tokens per second, for
   - our GPT with attention written out by hand (`attention="manual"`),
   - our GPT with PyTorch's fused kernel (`attention="sdpa"`),
   - the same sizes built from `torch.nn.TransformerEncoderLayer` (norm_first=True, causal mask,
     the same GELU variant), with the same embeddings, final LayerNorm and tied head around it.
   Targets: sdpa >= PyTorch's blocks (a model written to be read need not be slower than PyTorch's
   own layers); manual within 1.5x of sdpa (the attention a learner reads, written out as matmuls and
   a softmax, stays fast enough to train with). Measured alongside, against our
   sdpa GPT: RoPE instead of learned positions; the Llama-style block (RMSNorm, SwiGLU, RoPE, no
   biases, untied head, 2 of 4 key/value heads), what the modern switches cost per step; and Muon
   instead of AdamW (`train.optimizer=muon`), what orthogonalising the updates costs.
2. Generation of 256 new tokens: tokens/s at batch 1 and 64 with the KV cache, and at batch 1 the
   cache's speed-up over recomputing the whole sequence at every step. Target: >= 6x. Tokens/s counts
   every row's new tokens: batch 1 is the speed one reader waits on, batch 64 the throughput of
   sampling many answers at once (as RL's rollouts do), where each read of the weights serves 64 rows.
3. The KV cache's bytes per token with 4, 2 and 1 key/value heads (grouped-query attention),
   read off a filled cache.

Timings alternate between the models in several rounds and keep each model's median, so a burst of
load from another process does not favour one side. By default the clock is this process's CPU
time on one thread: on a shared machine the time other people's processes take is then not counted
(with several threads, CPU time would also count threads spinning while they wait for work, so use
`--clock wall` there, on a quiet machine).

    python bench/model.py                   # the default sizes: 4 layers, 4 heads, width 128, context 128, batch 16
    python bench/model.py --threads 4 --clock wall --rounds 5
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from minillm.config import ModelConfig, TrainConfig
from minillm.console import OneLineParser, description, positive_int
from minillm.errors import one_line_errors
from minillm.model import GPT, MLP, KVCache
from minillm.train.optim import make_optimizer

CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}
KV_CACHE_TARGET = 6.0  # the KV cache's speed-up over no cache at batch 1, 256 new tokens
KV_CACHE_TOKENS = 256  # the target holds at this length only: the cache gains less on shorter runs


class TorchBlocksLM(nn.Module):
    """The reference: the same language model, its blocks taken from torch.nn.TransformerEncoderLayer."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.tok_emb = nn.Embedding(config.vocab_size, config.n_embd)
        self.pos_emb = nn.Embedding(config.block_size, config.n_embd)
        layer = nn.TransformerEncoderLayer(
            config.n_embd, config.n_head, dim_feedforward=config.mlp_ratio * config.n_embd, dropout=0.0,
            activation=MLP(config).act, batch_first=True, norm_first=True,  # the same GELU variant as ours
        )
        self.blocks = nn.TransformerEncoder(layer, config.n_layer, enable_nested_tensor=False)
        self.ln_f = nn.LayerNorm(config.n_embd)
        # Embeddings start as ours do, N(0, 0.02). torch's default N(0, 1) makes the tied head's logits
        # so large that the softmax's gradient is full of denormal floats, and a CPU matmul over
        # denormals runs ~50x slower: the reference would be slow for a reason that is not its blocks.
        for table in (self.tok_emb, self.pos_emb):
            nn.init.normal_(table.weight, std=0.02)

    def forward(self, ids: Tensor) -> Tensor:
        T = ids.shape[1]
        x = self.tok_emb(ids) + self.pos_emb(torch.arange(T, device=ids.device))  # (B, T, C)
        causal = nn.Transformer.generate_square_subsequent_mask(T, device=ids.device)  # (T, T) float -inf
        x = self.blocks(x, mask=causal, is_causal=True)
        return self.ln_f(x) @ self.tok_emb.weight.T  # (B, T, V)


def train_step_fn(model: nn.Module, batch: int, config: ModelConfig, optimizer_name: str = "adamw"
                  ) -> Callable[[], None]:
    """One forward + backward + optimizer step on random tokens, with the optimizer training uses."""
    optimizer = make_optimizer(model, TrainConfig(lr=1e-4, optimizer=optimizer_name))
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, config.vocab_size, (batch, config.block_size + 1), generator=g)
    x, y = ids[:, :-1], ids[:, 1:]

    def step() -> None:
        logits = model(x)  # (B, T, V)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def median_seconds(
    fns: dict[str, Callable[[], None]], repeats: int, rounds: int, clock: Callable[[], float],
    warmup: bool = True,
) -> dict[str, float]:
    """Median time per call of each fn, alternating between them round by round."""
    for fn in fns.values() if warmup else ():  # allocator, kernels, optimizer state
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = clock()
            for _ in range(repeats):
                fn()
            times[name].append((clock() - start) / repeats)
    return {name: statistics.median(ts) for name, ts in times.items()}


def verdict(ok: bool) -> str:
    return "meets target" if ok else "BELOW target"


def threads_text() -> str:
    """'1 thread', '4 threads'."""
    n = torch.get_num_threads()
    return f"{n} thread{'' if n == 1 else 's'}"


def bench_training(args: argparse.Namespace) -> dict[str, float]:
    """Part 1: the training step of each model, timed in turns; prints tokens/s per model and the ratios
    to the reference (the `*_time` ratios: over our sdpa GPT's time, above 1 costs more), returns them."""
    base = dict(vocab_size=args.vocab, block_size=args.context, n_layer=4, n_head=4, n_embd=128)
    config = ModelConfig(**base)
    models = {  # "(tiny CLM)": RoPE, as the tiny preset's CLM places its positions
        "ours, manual attention": GPT(ModelConfig(**base, attention="manual")),
        "ours, sdpa attention": GPT(ModelConfig(**base, attention="sdpa")),
        "ours, sdpa + RoPE (tiny CLM)": GPT(ModelConfig(**base, attention="sdpa", position="rope")),
        "ours, Llama block (GQA 2 of 4)": GPT(ModelConfig(**base, attention="sdpa", arch="llama", n_kv_head=2)),
        "torch TransformerEncoderLayer": TorchBlocksLM(config),
    }
    steps = {name: train_step_fn(m.train(), args.batch, config) for name, m in models.items()}
    muon_model = GPT(ModelConfig(**base, attention="sdpa"))
    steps["ours, sdpa attention, Muon"] = train_step_fn(muon_model.train(), args.batch, config, "muon")
    seconds = median_seconds(steps, args.steps, args.rounds, CLOCKS[args.clock])
    tokens = args.batch * args.context
    print(f"\nTraining step (forward+backward+optimizer), batch {args.batch} x context {args.context}, "
          f"4 layers, 4 heads, width 128, vocab {args.vocab}, {threads_text()}, "
          f"{args.clock} clock:")
    for name, s in seconds.items():
        print(f"  {name:32s} {tokens / s:10.0f} tokens/s  ({1000 * s:6.1f} ms/step)")
    sdpa_vs_torch = seconds["torch TransformerEncoderLayer"] / seconds["ours, sdpa attention"]
    manual_vs_sdpa = seconds["ours, manual attention"] / seconds["ours, sdpa attention"]
    print(f"  sdpa speed / torch blocks speed = {sdpa_vs_torch:.2f}x  (target >= 1.0: "
          f"{verdict(sdpa_vs_torch >= 1.0)})")
    print(f"  manual time / sdpa time         = {manual_vs_sdpa:.2f}x  (target <= 1.5: "
          f"{verdict(manual_vs_sdpa <= 1.5)})")
    rope_vs_learned = seconds["ours, sdpa + RoPE (tiny CLM)"] / seconds["ours, sdpa attention"]
    print(f"  RoPE time / learned positions   = {rope_vs_learned:.2f}x  (the price of turning q and k)")
    llama_vs_gpt2 = seconds["ours, Llama block (GQA 2 of 4)"] / seconds["ours, sdpa attention"]
    print(f"  Llama block time / GPT-2 block  = {llama_vs_gpt2:.2f}x  (RMSNorm, SwiGLU, RoPE, GQA, untied head)")
    muon_vs_adamw = seconds["ours, sdpa attention, Muon"] / seconds["ours, sdpa attention"]
    print(f"  Muon step time / AdamW step     = {muon_vs_adamw:.2f}x  (Newton-Schulz on every block matrix)")
    return {"sdpa_tokens_per_s": tokens / seconds["ours, sdpa attention"],
            "sdpa_vs_torch_speed": sdpa_vs_torch, "manual_vs_sdpa_time": manual_vs_sdpa,
            "rope_vs_learned_time": rope_vs_learned, "llama_vs_gpt2_time": llama_vs_gpt2,
            "muon_vs_adamw_time": muon_vs_adamw}


def bench_generation(args: argparse.Namespace) -> dict[str, dict[int, float]]:
    """Generation tokens/s per batch size in args.gen_batch, with the KV cache; at batch 1 also without
    it, and the cache's speed-up (recomputing 64 rows for 256 steps would take minutes)."""
    speedups, tokens_per_s = {}, {}
    prompt_len = 16
    config = ModelConfig(vocab_size=args.vocab, block_size=prompt_len + args.new_tokens, n_layer=4,
                         n_head=4, n_embd=128, attention="sdpa")
    model = GPT(config).eval()
    print(f"\nGeneration of {args.new_tokens} new tokens after a {prompt_len}-token prompt, greedy, "
          f"4 layers, width 128:")
    for batch in args.gen_batch:
        prompt = torch.randint(0, args.vocab, (batch, prompt_len), generator=torch.Generator().manual_seed(0))
        runs = {"with KV cache": lambda p=prompt: model.generate(p, args.new_tokens, temperature=0, use_cache=True)}
        if batch == 1:
            runs["without cache"] = lambda p=prompt: model.generate(p, args.new_tokens, temperature=0, use_cache=False)
        seconds = median_seconds(runs, 1, args.gen_rounds, CLOCKS[args.clock])
        for name, s in seconds.items():
            print(f"  batch {batch:2d}, {name:14s} {s:6.2f} s  ({batch * args.new_tokens / s:7.0f} tokens/s)")
        tokens_per_s[batch] = batch * args.new_tokens / seconds["with KV cache"]
        if batch == 1:
            speedups[batch] = seconds["without cache"] / seconds["with KV cache"]
            judged = (verdict(speedups[batch] >= KV_CACHE_TARGET) if args.new_tokens == KV_CACHE_TOKENS
                      else f"not judged at {args.new_tokens} tokens")
            print(f"  batch  1: KV cache speed-up = {speedups[batch]:.1f}x  "
                  f"(target >= {KV_CACHE_TARGET} at {KV_CACHE_TOKENS} new tokens: {judged})")
    return {"speedup": speedups, "tokens_per_s": tokens_per_s}


def bench_kv_cache_memory(args: argparse.Namespace) -> dict[int, float]:
    """Bytes the KV cache holds per token, with 4, 2 and 1 key/value heads for 4 query heads."""
    print("\nKV cache per token (float32, 4 layers, 4 query heads of 32 channels):")
    per_token = {}
    for kv_heads in (4, 2, 1):
        model = GPT(ModelConfig(vocab_size=args.vocab, block_size=args.context, n_layer=4, n_head=4, n_embd=128,
                                n_kv_head=kv_heads)).eval()
        cache = KVCache(model.config.n_layer)
        with torch.no_grad():
            model(torch.zeros(1, args.context, dtype=torch.long), cache=cache)
        per_token[kv_heads] = cache.nbytes() / args.context
        print(f"  {kv_heads} key/value head(s): {per_token[kv_heads]:6.0f} bytes/token "
              f"({per_token[kv_heads] / per_token[4]:.2f}x multi-head attention's)")
    return per_token


def parse_args(argv: list[str] | None = None, prog: str | None = None) -> argparse.Namespace:
    """The options; `prog` names them in an error (run_all.py passes its own option that held them)."""
    parser = OneLineParser(prog=prog, description=description(__doc__))
    parser.add_argument("--threads", type=positive_int, default=1)
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="cpu")
    parser.add_argument("--batch", type=positive_int, default=16)
    parser.add_argument("--context", type=positive_int, default=128)
    parser.add_argument("--vocab", type=positive_int, default=4096)
    parser.add_argument("--steps", type=positive_int, default=2, help="training steps timed per round")
    parser.add_argument("--rounds", type=positive_int, default=3)
    parser.add_argument("--gen-rounds", type=positive_int, default=3)
    parser.add_argument("--new-tokens", type=positive_int, default=256)
    parser.add_argument("--gen-batch", type=positive_int, nargs="+", default=[1, 64],
                        help="prompts per generate call")
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    bench_training(args)
    bench_generation(args)
    bench_kv_cache_memory(args)


if __name__ == "__main__":
    one_line_errors()
    main()
