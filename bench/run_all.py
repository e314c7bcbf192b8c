"""Every benchmark in one run, and one table of figures and ratios against their references.

    python bench/run_all.py                    # tokenizer + model benches + a timed tiny pipeline
    python bench/run_all.py --skip-pipeline    # the benches alone (a few minutes)
    python bench/run_all.py --skip-pipeline --model-args="--rounds 1 --new-tokens 64"   # shorter

Each figure is a ratio against a reference measured in the same run, so a busy or slow machine
changes the absolute numbers but not what they say:
- tokenizer: our fast BPE trainer and encoder against sentencepiece BPE (bench/tokenizer.py);
- training step: our GPT (SDPA and hand-written attention) against torch.nn.TransformerEncoderLayer
  blocks, and what RoPE, the Llama-style block and Muon cost (bench/model.py);
- generation: tokens/s with the KV cache at batch 1 and 64, the cache's speed-up over recomputing
  the whole sequence, and its bytes per token with 2 and 1 key/value heads against 4 (bench/model.py's
  parts 2 and 3);
- the tiny pipeline's wall time against its 10-minute budget, and each stage's key number against
  its baseline and the tiny preset's target (report.json); another `--preset` is timed and its
  figures shown, without verdicts (the budget and the targets are tiny's);
- on a GPU only: the training step's model FLOPs utilisation (MFU) for the `small` preset, achieved
  FLOP/s over this GPU's measured bf16 matmul rate (`small_preset_mfu`).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

import torch

from minillm.config import PRESETS, ModelConfig
from minillm.console import OneLineParser, description
from minillm.errors import TrainingError, one_line_errors
from minillm.model import GPT

BENCH = Path(__file__).resolve().parent


def load_bench(name: str) -> ModuleType:
    """Import bench/<name>.py as a module (bench/ is a folder of scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_pipeline(preset: str) -> tuple[dict, float]:
    """Run `minillm pipeline` from scratch in a temporary folder; return its report and wall time."""
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "minillm.cli", "pipeline", "--preset", preset, "--out", out,
                               "--force"])
        seconds = time.perf_counter() - start
        if done.returncode != 0:  # the pipeline printed why; a traceback of this call would add nothing
            raise TrainingError(f"the timed `minillm pipeline --preset {preset}` stopped (exit status "
                                f"{done.returncode}); its own error is above (--skip-pipeline runs the benches alone)")
        return json.loads((Path(out) / "report.json").read_text(encoding="utf-8")), seconds


def matmul_tflops(device: str = "cuda", dtype: torch.dtype = torch.bfloat16, n: int = 8192,
                  repeats: int = 20) -> float:
    """The device's achieved matmul rate in TFLOP/s: the denominator of MFU. Each (n, n) @ (n, n)
    product is 2 n^3 FLOPs (n^3 multiplies, n^3 adds); n = 8192 is large enough to keep a GPU busy."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    synchronize(device)
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e12


def synchronize(device: str) -> None:
    """Wait for the device's queued work: GPU kernels run asynchronously, so a clock needs this.
    That device's, by name: a bare synchronize() waits for the current GPU (cuda:0), not for cuda:1."""
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def journey_gpt_config(preset_name: str) -> ModelConfig:
    """The GPT config of the preset's journey: its vocabulary sized to the tokenizer the journey
    trains, not to clm.model's default."""
    from minillm.config import preset

    journey = preset(preset_name)
    return dataclasses.replace(journey.clm.model, vocab_size=journey.tokenizer.vocab_size)


def model_flops_per_token(model: GPT) -> float:
    """A training step's model FLOPs per token: 6 x parameters (a weight meets each token once in a
    matmul, a multiply and an add: 2 FLOPs forward; backward takes twice that, one product for the
    input's gradient and one for the weight's) plus the attention scores and weighted sums, 12 x
    layers x context x width (the PaLM paper's accounting, which counts the whole T x T score matrix,
    not its causal half)."""
    cfg = model.config
    n_params = sum(p.numel() for p in model.parameters())  # a tied table once: a lookup multiplies nothing
    return 6 * n_params + 12 * cfg.n_layer * cfg.block_size * cfg.n_embd


def small_preset_mfu(steps: int = 20, device: str = "cuda", preset_name: str = "small") -> dict[str, float | str]:
    """Model FLOPs utilisation of a training step of the preset's GPT (`small` unless told; bf16
    autocast on CUDA): its model FLOPs (`model_flops_per_token`) per second over the device's measured
    matmul rate (`matmul_tflops`).

    The usual denominator is the datasheet's peak FLOP/s. A measured one needs no table of GPUs and
    their peaks, and it is what this device's matmuls actually reach, below its datasheet peak: so
    this MFU reads higher than one against the datasheet, and 100% would mean the step runs its
    matmuls as fast as one large matmul runs. The softmaxes, norms and optimizer step are work the
    step does but not model FLOPs: they count against the MFU, as they take time."""
    from minillm.config import preset

    model_cfg = journey_gpt_config(preset_name)
    batch = preset(preset_name).clm.train.batch_size
    cuda = device.startswith("cuda")
    dtype = torch.bfloat16 if cuda else torch.float32
    model = GPT(model_cfg).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=cuda)
    ids = torch.randint(0, model_cfg.vocab_size, (batch, model_cfg.block_size + 1), device=device)

    def step() -> None:
        with torch.autocast(device.split(":")[0], dtype=dtype, enabled=cuda):
            logits = model(ids[:, :-1])  # (B, T, V)
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), ids[:, 1:].flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(3):
        step()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    seconds = (time.perf_counter() - start) / steps
    achieved = model_flops_per_token(model) * batch * model_cfg.block_size / seconds / 1e12
    matmul_rate = matmul_tflops(device, dtype, n=8192 if cuda else 1024, repeats=20 if cuda else 3)
    return {"achieved_tflops": achieved, "matmul_tflops": matmul_rate, "mfu": achieved / matmul_rate,
            "step_seconds": seconds, "dtype": str(dtype)}


def main() -> None:
    parser = OneLineParser(description=description(__doc__))
    parser.add_argument("--skip-pipeline", action="store_true")
    parser.add_argument("--preset", default="tiny", choices=PRESETS, help="the pipeline preset to time")
    parser.add_argument("--tokenizer-args", type=shlex.split, default=[],
                        help='bench/tokenizer.py\'s options, e.g. --tokenizer-args="--simple-merges 20"')
    parser.add_argument("--model-args", type=shlex.split, default=[],
                        help='bench/model.py\'s options, e.g. --model-args="--rounds 1 --new-tokens 64"')
    args = parser.parse_args()
    tok_bench, model_bench = load_bench("tokenizer"), load_bench("model")
    # every option is checked here, before the minutes of the first benchmark; an error names the option that held it
    tok_args = tok_bench.parse_args(args.tokenizer_args, prog=f"{parser.prog} --tokenizer-args")
    model_args = model_bench.parse_args(args.model_args, prog=f"{parser.prog} --model-args")

    rows: list[tuple[str, str, str, str, str]] = []  # (what, figure, reference, target, verdict)
    tok = tok_bench.measure(tok_args)
    rows += [
        ("BPE training time / sentencepiece", f"{tok['fast_train_vs_spm_time']:.2f}x", "sentencepiece BPE", "<= 3",
         met(tok["fast_train_vs_spm_time"] <= 3)),
        ("sentencepiece encode speed / ours", f"{tok['spm_vs_ours_encode_speed']:.2f}x", "sentencepiece BPE",
         "<= 10", met(tok["spm_vs_ours_encode_speed"] <= 10)),
        ("tokens per byte / sentencepiece", f"{tok['tokens_per_byte_vs_spm']:.3f}", "sentencepiece BPE",
         f"within {tok_bench.TOKENS_PER_BYTE_TOLERANCE:.0%}",
         tok_bench.tokens_per_byte_verdict(tok["tokens_per_byte_vs_spm"], tok["ours_vocab_size"],
                                           tok["spm_vocab_size"])),
    ]

    torch.set_num_threads(model_args.threads)
    train = model_bench.bench_training(model_args)
    gen = model_bench.bench_generation(model_args)
    kv_bytes = model_bench.bench_kv_cache_memory(model_args)  # three forward passes: under a second
    rows += [
        ("train step speed, SDPA / torch blocks", f"{train['sdpa_vs_torch_speed']:.2f}x",
         "nn.TransformerEncoderLayer", ">= 1", met(train["sdpa_vs_torch_speed"] >= 1)),
        ("train step time, manual / SDPA", f"{train['manual_vs_sdpa_time']:.2f}x", "our SDPA path", "<= 1.5",
         met(train["manual_vs_sdpa_time"] <= 1.5)),
        ("train step time, RoPE / learned positions", f"{train['rope_vs_learned_time']:.2f}x", "our SDPA path",
         "(measured)", ""),
        ("train step time, Llama block / GPT-2 block", f"{train['llama_vs_gpt2_time']:.2f}x", "our SDPA path",
         "(measured)", ""),
        ("train step time, Muon / AdamW", f"{train['muon_vs_adamw_time']:.2f}x", "our fused AdamW",
         "(measured)", ""),
        *[(f"KV-cache speed-up, batch {b}, {model_args.new_tokens} tokens", f"{s:.1f}x", "no-cache generation",
           *((f">= {model_bench.KV_CACHE_TARGET:g}", met(s >= model_bench.KV_CACHE_TARGET))
             if model_args.new_tokens == model_bench.KV_CACHE_TOKENS  # the target is for 256 tokens only
             else (f"({model_bench.KV_CACHE_TOKENS} tokens: >= {model_bench.KV_CACHE_TARGET:g})", "")))
          for b, s in gen["speedup"].items()],
        *[(f"generation, batch {b}, KV cache", f"{s:.0f} tokens/s", "", "(measured)", "")
          for b, s in gen["tokens_per_s"].items()],
        *[(f"KV cache bytes per token, {h} of 4 key/value heads", f"{kv_bytes[h] / kv_bytes[4]:.2f}x",
           f"4 of 4: {kv_bytes[4]:.0f} bytes", "(measured)", "") for h in (2, 1)],
    ]

    if torch.cuda.is_available():
        mfu = small_preset_mfu()
        rows.append(("MFU, small preset, bf16", f"{mfu['mfu']:.1%}",
                     f"measured matmul {mfu['matmul_tflops']:.0f} TFLOP/s", "as high as possible", ""))

    if not args.skip_pipeline:
        report, seconds = run_pipeline(args.preset)
        s = report["stages"]
        tiny = args.preset == "tiny"

        def target(text: str, ok: bool) -> tuple[str, str]:
            """The target and verdict columns: the budget and targets are the tiny preset's."""
            return (text, met(ok)) if tiny else (f"(tiny: {text})", "")

        rows += [
            (f"pipeline --preset {args.preset}, wall time", f"{seconds:.0f} s", "budget 600 s",
             *target("<= 600 s", seconds <= 600)),
            ("MLM masked accuracy", f"{s['mlm']['val_masked_accuracy']:.3f}",
             f"unigram {s['mlm']['unigram_masked_accuracy']:.3f}",  # tiny: 0.50 against 0.08, 6x
             *target(">= 3x higher", s["mlm"]["val_masked_accuracy"] >= 3 * s["mlm"]["unigram_masked_accuracy"])),
            ("CLM perplexity", f"{s['clm']['val_perplexity']:.1f}",
             f"unigram {s['clm']['unigram_perplexity']:.1f}",
             *target(">= 5x lower", s["clm"]["unigram_perplexity"] >= 5 * s["clm"]["val_perplexity"])),
            ("SFT exact match, held-out phrasings", f"{s['sft']['exact_match']['heldout_phrasings']:.3f}",
             f"base {s['sft']['base_exact_match']['heldout_phrasings']:.3f}",
             *target(">= 0.8", s["sft"]["exact_match"]["heldout_phrasings"] >= 0.8)),
            ("reward model pairwise accuracy", f"{s['reward_model']['pairwise_accuracy']:.3f}", "chance 0.5",
             *target(">= 0.8", s["reward_model"]["pairwise_accuracy"] >= 0.8)),
            ("PPO win rate vs SFT (gold judge)", f"{s['ppo']['win_rate_vs_sft']:.3f}", "0.5",
             *target(">= 0.7", s["ppo"]["win_rate_vs_sft"] >= 0.7)),
            ("DPO win rate vs SFT (gold judge)", f"{s['dpo']['win_rate_vs_sft']:.3f}", "0.5",
             *target(">= 0.65", s["dpo"]["win_rate_vs_sft"] >= 0.65)),
        ]

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    print(f"\n=== minillm benchmarks on {device}, {model_bench.threads_text()} ===")
    header = ("what", "figure", "reference", "target", "target met?")
    widths = [max(len(r[i]) for r in [*rows, header]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def met(ok: bool) -> str:
    """The last column of the table: a miss shows in the row itself, not only in the log above it."""
    return "met" if ok else "BELOW"


if __name__ == "__main__":
    one_line_errors()
    main()
