"""The figures of a GPU check in one JSON file: each stage runs and learns, MFU, generation speed.

Called by bench/gpu_check.sh after it has installed the project and run the tests on the device:

1. The pipeline at the `small` preset's model sizes with its steps cut short (`SHORT_SMALL`): every
   stage must run on the device and learn (each key number beats its baseline).
2. MFU of the `small` preset's CLM training step: achieved model FLOP/s over the device's measured
   matmul rate (bf16 on a GPU).
3. Generation speed, tokens per second, at batch 1 and 64, with the KV cache.

    python bench/gpu_check.py --device cuda --out gpu_check.json
    python bench/gpu_check.py --device cpu --preset micro --out /tmp/check.json     # the dry run's sizes
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import tempfile
import time
from pathlib import Path

import torch

from minillm.config import apply_overrides, preset, replace_train_configs
from minillm.model import GPT
from minillm.pipeline import run_pipeline

BENCH = Path(__file__).resolve().parent
SHORT_SMALL = [  # the small preset's models, trained far enough to show learning in a few minutes
    "mlm.train.max_steps=300", "clm.train.max_steps=600", "sft.train.max_steps=300", "sft.single_family_baseline=false",
    "reward.n_prompts=200", "reward.train.max_steps=30", "ppo.train.max_steps=5", "dpo.train.max_steps=20",
    "grpo.train.max_steps=5", "grpo_verifiable.train.max_steps=5", "grpo.passk_prompts=50",
    "grpo.passk_samples=16",
]


def run_all_module():
    spec = importlib.util.spec_from_file_location("bench_run_all", BENCH / "run_all.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def stages_learn(report: dict) -> dict[str, bool]:
    """Each stage's key number against its baseline: True where the stage learnt something."""
    s = report["stages"]
    return {
        "mlm": s["mlm"]["val_masked_accuracy"] > s["mlm"]["unigram_masked_accuracy"],
        "clm": s["clm"]["val_perplexity"] < s["clm"]["unigram_perplexity"],
        "sft": s["sft"]["exact_match"]["seen"] > s["sft"]["base_exact_match"]["seen"],
        "reward_model": s["reward_model"]["pairwise_accuracy"] > 0.5,
        **{name: 0.0 <= s[name]["win_rate_vs_sft"] <= 1.0 for name in ("ppo", "dpo", "grpo", "grpo_verifiable")},
    }


@torch.no_grad()
def generation_tokens_per_s(device: str, batch: int, new_tokens: int = 128, preset_name: str = "small") -> float:
    """Tokens per second of greedy generation with the KV cache, the preset's GPT, after a 16-token prompt."""
    model_cfg = preset(preset_name).clm.model
    model = GPT(model_cfg).to(device).eval()
    new_tokens = min(new_tokens, model_cfg.block_size - 16)
    prompt = torch.randint(0, model_cfg.vocab_size, (batch, 16), device=device)
    model.generate(prompt, 4, temperature=0)  # warm-up
    run_all_module().synchronize(device)
    start = time.perf_counter()
    model.generate(prompt, new_tokens, temperature=0)  # no eos: every row runs to the end
    run_all_module().synchronize(device)
    return batch * new_tokens / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--preset", default="small", help="small: SHORT_SMALL's steps; micro: the dry run")
    parser.add_argument("--out", type=Path, default=Path("gpu_check.json"))
    args = parser.parse_args()
    figures: dict = {"device": torch.cuda.get_device_name() if args.device.startswith("cuda") else args.device,
                     "torch": torch.__version__}
    cfg = preset(args.preset)
    if args.preset == "small":
        cfg = apply_overrides(cfg, SHORT_SMALL)
    cfg = replace_train_configs(apply_overrides(cfg, [f"device={args.device}"]), device=args.device)
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        report = run_pipeline(cfg, out)
        figures["pipeline"] = {"preset": args.preset, "wall_seconds": time.perf_counter() - start,
                               "stage_seconds": {k: v["seconds"] for k, v in report["stages"].items()},
                               "learns": stages_learn(report)}
    figures["mfu"] = run_all_module().small_preset_mfu(device=args.device, preset_name=args.preset)
    figures["generation_tokens_per_s"] = {str(b): generation_tokens_per_s(args.device, b, preset_name=args.preset)
                                          for b in (1, 64)}
    args.out.write_text(json.dumps(figures, indent=2))
    print(json.dumps(figures, indent=2))
    failed = [name for name, ok in figures["pipeline"]["learns"].items() if not ok]
    print(f"written: {args.out}" + (f"; these stages did not beat their baseline: {failed}" if failed else ""))


if __name__ == "__main__":
    main()
