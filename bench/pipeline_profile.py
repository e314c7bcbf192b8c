"""Where does the journey spend its time? A per-stage profile of `minillm pipeline`.

For every step of the pipeline it prints the wall time, split into what the step was doing:

- forward, backward, optimizer: the three parts of a training step (the models' forward passes
  outside generation and evaluation, `Tensor.backward`, `AdamW.step` and `Muon.step`);
- generation: `GPT.generate` (sampling answers, with the KV cache);
- evaluation: validation losses, exact match, win rates, pass@k, the reward model's accuracy;
- data: tokenising, packing and batching text;
- other: the rest (setup, checkpoints, plots).

A stretch of time counts once, for the outermost of these it lies in: a forward pass inside an
evaluation is evaluation. Separately, cProfile measures the **Python overhead**: the time spent in
Python functions themselves (their own time, not the torch kernels they call), as a share of the
step. cProfile slows Python code down, so the walls here are longer than an unprofiled run's; the
shares are what to read.

    python bench/pipeline_profile.py --preset tiny --out runs/profile      # the whole journey
    python bench/pipeline_profile.py --preset micro --out /tmp/p --steps tokenizer mlm
"""

from __future__ import annotations

import cProfile
import functools
import importlib
import pstats
import shutil
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

from minillm import pipeline, reuse
from minillm.config import PRESETS, PipelineConfig, changed_settings, first_changes, preset, to_dict
from minillm.console import OneLineParser, description, path_arg, positive_int
from minillm.errors import one_line_errors
from minillm.model import GPT, Bert
from minillm.run_lock import run_folder_lock
from minillm.stage3_rlhf.reward_model import RewardModel
from minillm.train.optim import Muon
from minillm.utils import read_json, write_json

CATEGORIES = ("forward", "backward", "optimizer", "generation", "evaluation", "data")
# (module, attribute) -> category; functions are replaced wherever a minillm module imported them
TIMED_FUNCTIONS = {
    ("minillm.train.loop", "run_evaluation"): "evaluation",
    ("minillm.stage2_sft.evaluate", "evaluate_model"): "evaluation",
    ("minillm.stage3_rlhf.preferences", "compare_policies"): "evaluation",
    ("minillm.stage3_rlhf.reward_model", "pairwise_accuracy"): "evaluation",
    ("minillm.stage3_rlhf.scoreboard", "policy_table"): "evaluation",
    ("minillm.stage3_rlhf.scoreboard", "right_answer_counts"): "evaluation",
    ("minillm.stage1_pretrain.data", "pack_documents"): "data",
    ("minillm.stage2_sft.sft", "collate"): "data",
    ("minillm.stage2_sft.template", "encode_example"): "data",
}
TIMED_METHODS = {
    (GPT, "forward"): "forward", (Bert, "forward"): "forward", (RewardModel, "forward"): "forward",
    (RewardModel, "token_scores"): "forward",  # PPO's critic: a value at every position
    (GPT, "response_states"): "forward", (RewardModel, "score_responses"): "forward",  # RL's reads of answers
    (GPT, "lm_head"): "forward",  # RL runs it on response_states' output itself (ppo.response_logits)
    (GPT, "generate"): "generation", (torch.Tensor, "backward"): "backward",
    (torch.optim.AdamW, "step"): "optimizer", (Muon, "step"): "optimizer",
}


class Clock:
    """Time per category; a call inside an already timed one is not counted again."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.inside = False

    def wrap(self, category: str, fn):
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            if self.inside:
                return fn(*args, **kwargs)
            self.inside, start = True, time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[category] += time.perf_counter() - start
                self.inside = False

        return timed

    def install(self) -> None:
        for (cls, name), category in TIMED_METHODS.items():
            setattr(cls, name, self.wrap(category, getattr(cls, name)))
        for (module_name, name), category in TIMED_FUNCTIONS.items():
            try:  # an older tree (bench/pipeline_speed.py's reference) may lack a module or a function
                original = getattr(importlib.import_module(module_name), name)
            except (ImportError, AttributeError):
                continue
            timed = self.wrap(category, original)
            for module in [m for n, m in sys.modules.items() if n.startswith("minillm") and m is not None]:
                if getattr(module, name, None) is original:
                    setattr(module, name, timed)


def python_overhead(profile: cProfile.Profile) -> float:
    """Seconds spent in Python functions' own code (built-ins and torch kernels excluded)."""
    stats = pstats.Stats(profile).stats  # {(file, line, name): (calls, primitive calls, own time, cumulative, callers)}
    return sum(own for (file, _, _), (_, _, own, _, _) in stats.items() if file != "~")


def profile_pipeline(preset_name: str, out_dir: Path, steps: list[str]) -> dict[str, dict[str, float]]:
    """{step: {column: seconds}} for each of `steps`, trained anew into out_dir and timed alone: its wall,
    the categories' seconds, "other" (the wall less them) and "python_overhead" (cProfile's, apart)."""
    clock = Clock()
    clock.install()
    journey = pipeline.Journey(preset(preset_name), out_dir)
    table = {}
    last = max(pipeline.STEP_NAMES.index(name) for name in steps)
    for name in pipeline.STEP_NAMES[: last + 1]:  # the steps after the last profiled one are not needed
        if name not in steps:
            if (journey.folder(name) / reuse.RESULT_NAME).is_file():  # run before: later steps read its result
                journey.results[name] = pipeline.run_step(journey, name)
            continue
        # Always train the step anew: a finished run, or its checkpoint, would only be read back.
        shutil.rmtree(journey.folder(name), ignore_errors=True)
        clock.seconds.clear()
        profile, start = cProfile.Profile(), time.perf_counter()
        profile.enable()
        journey.results[name] = pipeline.run_step(journey, name)
        profile.disable()
        wall = time.perf_counter() - start
        row = {"wall": wall, **{c: clock.seconds.get(c, 0.0) for c in CATEGORIES}}
        row["other"] = wall - sum(row[c] for c in CATEGORIES)
        row["python_overhead"] = python_overhead(profile)
        table[name] = row
    return table


def print_table(table: dict[str, dict[str, float]]) -> None:
    columns = ("wall", *CATEGORIES, "other", "python_overhead")
    print("seconds per step (python_overhead overlaps the other columns: it is measured separately)")
    print(f"{'step':16s}" + "".join(f"{c:>16s}" for c in columns))
    for name, row in table.items():
        print(f"{name:16s}" + "".join(f"{row[c]:16.1f}" for c in columns))
    total = {c: sum(row[c] for row in table.values()) for c in columns}
    print(f"{'total':16s}" + "".join(f"{total[c]:16.1f}" for c in columns))
    print(f"{'share of wall':16s}" + "".join(f"{total[c] / total['wall']:16.0%}" for c in columns))


def unmet_needs(steps: list[str], out_dir: Path, cfg: PipelineConfig) -> list[str]:
    """The steps whose results `steps` read with the settings `cfg`, directly or through each other, that
    are neither among them nor finished in out_dir: without them the first profiled step would fail on
    a missing file."""
    missing, to_check = [], list(steps)
    while to_check:
        for need in pipeline.needs(cfg, to_check.pop()):
            if need not in steps and need not in missing and not (
                    out_dir / pipeline.step_folder(need) / reuse.RESULT_NAME).is_file():
                missing.append(need)
                to_check.append(need)
    return sorted(missing, key=pipeline.STEP_NAMES.index)


def main() -> None:
    parser = OneLineParser(description=description(__doc__))
    parser.add_argument("--preset", default="tiny", choices=PRESETS)
    parser.add_argument("--out", type=path_arg, default="runs/profile")
    parser.add_argument("--steps", nargs="+", default=pipeline.STEP_NAMES, choices=pipeline.STEP_NAMES,
                        help="the steps to profile (the ones they read must be among them or have run into --out)")
    parser.add_argument("--threads", type=positive_int, default=torch.get_num_threads())
    args = parser.parse_args()
    out = Path(args.out)
    saved = out / pipeline.CONFIG_NAME  # a pipeline's run folder: its steps were made with its settings
    changed = changed_settings(read_json(saved), to_dict(preset(args.preset))) if saved.is_file() else []
    if changed:
        parser.error(f"--out {out} holds a pipeline run made with other settings than the {args.preset} preset's "
                     f"({first_changes(changed)}): the profile would replace its steps; profile into a folder of "
                     "its own")
    missing = unmet_needs(args.steps, out, preset(args.preset))
    if missing:
        parser.error(f"--steps {' '.join(args.steps)}: {out} holds no result of {', '.join(missing)}, which "
                     f"they read: profile them too (--steps {' '.join(missing + args.steps)}) or run them into "
                     "--out first")
    torch.set_num_threads(args.threads)
    print(f"profiling the {args.preset} pipeline into {out}, {args.threads} thread(s)")
    with run_folder_lock(out):  # as `minillm pipeline --out`: never a folder of someone else's files
        table = profile_pipeline(args.preset, out, args.steps)
        print_table(table)
        write_json(out / "profile.json", table)
    print(f"written: {out / 'profile.json'}")


if __name__ == "__main__":
    one_line_errors()
    main()
