"""The figures of a GPU check in one JSON file: each stage runs (and the first ones learn), MFU, generation speed.

Called by bench/gpu_check.sh after it has installed the project and run the tests on the device:

0. The device's name (an error when `--device cuda` finds no CUDA), and the tests' outcome, read
   from the JUnit XML files that pytest wrote (`--tests`); a test run in which nothing passed, every
   test skipped (as the device tests do where the device is missing), is a problem too.
1. MFU (model FLOPs utilisation) of the preset's CLM training step: the FLOPs its arithmetic needs
   (run_all.py's `model_flops_per_token`) per second of the step, over the rate this device reaches on
   one large matmul (bf16 on a GPU), measured rather than read off a datasheet (`small_preset_mfu` says
   why). The JSON's "mfu" holds both rates, in TFLOP/s, beside their ratio.
2. Generation speed with the KV cache, in new tokens per second counted over every row: at batch 1,
   the speed one reader waits on; at batch 64, the throughput of sampling many answers at once (as
   RL's rollouts do), where each step's read of the weights serves 64 rows instead of one.
3. The pipeline at the `small` preset's model sizes with its steps cut short (`SHORT_SMALL`): every
   stage must run on the device. MLM, CLM, SFT and the reward model must also learn (each key
   number beats its baseline: "learns" in the JSON); the RL stages' few steps show only that they
   ran (a win rate in [0, 1]: "ran"), not that they learn.

A GPU may be lent for minutes, so one failing part does not cost the others: a phase that raises
records its error in the JSON and the next one runs, and the JSON is written again (atomically)
before every phase, listing the phases not run yet among its problems, so a check stopped by its
time limit still brings back what it measured. The longest phase, the pipeline, comes last. The
exit status is 1 when anything failed (a test, a phase, a stage that did not learn), so that a script can tell:
a result of the check, where a mistake in its own arguments ends it with 2, as it ends a `minillm` command.

    python bench/gpu_check.py --device cuda --out gpu_check.json --tests tests_all.xml
    python bench/gpu_check.py --device cpu --preset micro --out /tmp/check.json     # the dry run's sizes
"""

from __future__ import annotations

import importlib.util
import tempfile
import time
import traceback
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from minillm.config import apply_overrides, preset, replace_train_configs
from minillm.console import OneLineParser, description, path_arg
from minillm.errors import one_line_errors
from minillm.model import GPT
from minillm.pipeline import run_pipeline
from minillm.utils import json_text, write_json

BENCH = Path(__file__).resolve().parent
SHORT_SMALL = [  # the small preset's models, trained far enough to show learning in a few minutes
    "mlm.train.max_steps=300", "clm.train.max_steps=600", "sft.train.max_steps=300", "sft.single_family_baseline=false",
    "reward.n_prompts=200", "reward.train.max_steps=30", "ppo.train.max_steps=5", "dpo.train.max_steps=20",
    "grpo.train.max_steps=5", "grpo_verifiable.train.max_steps=5", "grpo.passk_prompts=50",
    "grpo.passk_samples=16",
]


def run_all_module():
    """bench/run_all.py as a module (bench/ is a folder of scripts, not a package): its MFU and clock."""
    spec = importlib.util.spec_from_file_location("bench_run_all", BENCH / "run_all.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def stages_learn(report: dict) -> dict[str, bool]:
    """The first four stages' key numbers against their baselines: True where the stage learnt something."""
    s = report["stages"]
    return {
        "mlm": s["mlm"]["val_masked_accuracy"] > s["mlm"]["unigram_masked_accuracy"],
        "clm": s["clm"]["val_perplexity"] < s["clm"]["unigram_perplexity"],
        "sft": s["sft"]["exact_match"]["seen"] > s["sft"]["base_exact_match"]["seen"],
        "reward_model": s["reward_model"]["pairwise_accuracy"] > 0.5,
    }


def rl_stages_ran(report: dict) -> dict[str, bool]:
    """The RL stages ran to a win rate, a number in [0, 1] (not NaN). Only that: SHORT_SMALL's few RL
    steps are too few to expect a win over SFT, so learning is not claimed for them."""
    return {name: 0.0 <= report["stages"][name]["win_rate_vs_sft"] <= 1.0
            for name in ("ppo", "dpo", "grpo", "grpo_verifiable")}


@torch.no_grad()
def generation_tokens_per_s(device: str, batch: int, new_tokens: int = 128, preset_name: str = "small") -> float:
    """New tokens per second, every row's counted (batch x new tokens over the seconds), of greedy
    generation with the KV cache, the preset's GPT (its vocabulary the tokenizer's, as in the journey),
    after a 16-token prompt; `new_tokens` is cut to what the context leaves after it."""
    run_all = run_all_module()  # loaded here, not inside the timed stretch: each load runs the file again
    model_cfg = run_all.journey_gpt_config(preset_name)
    model = GPT(model_cfg).to(device).eval()
    prompt_len = 16
    new_tokens = min(new_tokens, model_cfg.block_size - prompt_len)
    prompt = torch.randint(0, model_cfg.vocab_size, (batch, prompt_len), device=device)
    model.generate(prompt, 4, temperature=0)  # warm-up
    run_all.synchronize(device)
    start = time.perf_counter()
    model.generate(prompt, new_tokens, temperature=0)  # no eos: every row runs to the end
    run_all.synchronize(device)
    return batch * new_tokens / (time.perf_counter() - start)


def device_name(device: str) -> str:
    """The GPU's name for a CUDA device, else the device as given; an error when CUDA is not there."""
    if not device.startswith("cuda"):
        return device
    if not torch.cuda.is_available():
        raise RuntimeError(f"--device {device}, but torch {torch.__version__} finds no CUDA device (its CUDA "
                           f"build: {torch.version.cuda or 'none'})")
    return torch.cuda.get_device_name(device)


def junit_outcome(junit_xml: Path, stopped: bool = False) -> dict[str, Any]:
    """Counts and failing test ids from a pytest `--junitxml` report; an error when there is none or it
    is cut short (gpu_check.sh stops a test run that outlasts its time limit, perhaps while pytest writes).

    `stopped`: the run reached its time limit and was interrupted (Ctrl-C): the report then holds the
    tests that finished, counted as usual, and "stopped_at_time_limit" says the others did not run."""
    if not junit_xml.is_file():
        return {"error": f"no report at {junit_xml}: the run was stopped before it ended (time limit?)"}
    try:
        cases = [case for case in ET.parse(junit_xml).getroot().iter("testcase")
                 if case.get("name")]  # an interrupted test is written as a nameless <testcase/>
    except ET.ParseError as err:
        return {"error": f"the report {junit_xml} is not whole XML ({err}): the run was stopped while writing it?"}
    failed = [f"{case.get('classname')}::{case.get('name')}" for case in cases
              if case.find("failure") is not None or case.find("error") is not None]
    skipped = sum(case.find("skipped") is not None for case in cases)
    outcome = {"passed": len(cases) - len(failed) - skipped, "failed": len(failed), "skipped": skipped,
               "failures": failed}
    return {**outcome, "stopped_at_time_limit": True} if stopped else outcome


def run_phase(figures: dict[str, Any], name: str, phase: Callable[[], Any]) -> None:
    """figures[name] = phase(), or {"error": ...} when it raises: the check goes on to the next phase."""
    try:
        figures[name] = phase()
    except Exception as err:  # any failure on an unfamiliar machine is a figure to bring back, not a stop
        traceback.print_exc()
        figures[name] = {"error": f"{type(err).__name__}: {err}"}


def pipeline_figures(preset_name: str, device: str) -> dict[str, Any]:
    """Every stage at the preset's sizes (SHORT_SMALL's steps for `small`): its seconds, whether the
    first four learnt and whether the RL stages ran.

    SHORT_SMALL is applied to the small preset whatever the preset (no training, a fraction of a
    second), so that the dry run on a CPU catches a mistyped override before a GPU is lent for it."""
    short_small = apply_overrides(preset("small"), SHORT_SMALL)
    cfg = short_small if preset_name == "small" else preset(preset_name)
    cfg = replace_train_configs(apply_overrides(cfg, [f"device={device}"]), device=device)
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        report = run_pipeline(cfg, out)
        return {"preset": preset_name, "wall_seconds": time.perf_counter() - start,
                "stage_seconds": {k: v["seconds"] for k, v in report["stages"].items()},
                "learns": stages_learn(report), "ran": rl_stages_ran(report)}


def problems(figures: dict[str, Any], expect_learning: bool = True, not_run_yet: tuple[str, ...] = ()) -> list[str]:
    """What failed, one line each: an empty list means the check passed. `expect_learning=False` for
    the micro preset, whose few steps show that each stage runs, not that it learns. `not_run_yet`:
    the phases still to come, each a problem until it has run (a check stopped now did not run them)."""
    found = [f"{name}: {value['error']}" for name, value in figures.items()
             if isinstance(value, dict) and "error" in value]
    for name, value in figures.get("tests", {}).items():
        if "error" in value:
            found.append(f"tests {name}: {value['error']}")
        elif value["failed"]:
            found.append(f"{name}: {value['failed']} test(s) failed: {', '.join(value['failures'][:10])}")
        elif not value["passed"]:  # e.g. --device cuda where CUDA is missing: every device test skips
            found.append(f"{name}: no test passed ({value['skipped']} skipped): is the device there?")
        if value.get("stopped_at_time_limit"):
            found.append(f"{name}: stopped at its time limit; the tests after the {value['passed']} that "
                         "passed did not run")
    pipeline = figures.get("pipeline", {})
    learns = pipeline.get("learns", {}) if expect_learning else {}
    found += [f"the {stage} stage did not beat its baseline" for stage, ok in learns.items() if not ok]
    found += [f"the {stage} stage gave no win rate in [0, 1]" for stage, ok in pipeline.get("ran", {}).items()
              if not ok]
    found += [f"{name}: not run (the check stopped before it: time limit?)" for name in not_run_yet]
    return found


def main() -> None:
    parser = OneLineParser(description=description(__doc__))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--preset", default="small", choices=("small", "micro"),
                        help="small: SHORT_SMALL's steps; micro: the dry run")
    parser.add_argument("--out", type=path_arg, default="gpu_check.json")
    parser.add_argument("--tests", type=path_arg, nargs="*", default=[],
                        help="JUnit XML reports of the test runs (pytest --junitxml), read into the JSON")
    parser.add_argument("--not-run", action="append", default=[],
                        help="a sentence naming tests the check left out, and why; written into the JSON")
    parser.add_argument("--stopped", type=path_arg, action="append", default=[],
                        help="one of the --tests reports whose run was stopped at its time limit")
    args = parser.parse_args()
    tests, stopped = [Path(t) for t in args.tests], {Path(s) for s in args.stopped}
    figures: dict[str, Any] = {"torch": torch.__version__, "not_run": args.not_run,
                               "tests": {path.stem: junit_outcome(path, path in stopped) for path in tests}}
    phases: dict[str, Callable[[], Any]] = {  # the longest last: a time limit then costs only it
        "device": lambda: device_name(args.device),
        "mfu": lambda: run_all_module().small_preset_mfu(device=args.device, preset_name=args.preset),
        "generation_tokens_per_s": lambda: {
            str(b): generation_tokens_per_s(args.device, b, preset_name=args.preset) for b in (1, 64)},
        "pipeline": lambda: pipeline_figures(args.preset, args.device),
    }

    def save(not_run_yet: tuple[str, ...]) -> None:
        figures["problems"] = problems(figures, expect_learning=args.preset != "micro", not_run_yet=not_run_yet)
        write_json(args.out, figures)

    for i, name in enumerate(phases):
        save(tuple(phases)[i:])  # what a check stopped during this phase brings back
        run_phase(figures, name, phases[name])
    save(())
    print(json_text(figures, indent=2))  # as written into --out
    print(f"written: {args.out}; " + ("every check passed" if not figures["problems"] else
                                      "what failed:\n  " + "\n  ".join(figures["problems"])))
    raise SystemExit(1 if figures["problems"] else 0)


if __name__ == "__main__":
    one_line_errors()
    main()
