"""Is the journey faster than it was? The tiny pipeline of a reference commit and of this working
tree, back to back on the same machine, with the same Python environment.

The reference is checked out with `git worktree` into a temporary folder, and each pipeline runs as
`python -m minillm.cli pipeline` with PYTHONPATH pointing at its own tree, so that each imports its
own minillm. The figure to read is the ratio of wall times (this tree over the reference): both
runs meet the same machine, so its speed on the day cancels out. Each stage's ratio is printed too,
with the learning figures of both runs side by side (a faster run must not teach less).

    python bench/pipeline_speed.py                       # reference 86be2f6, --jobs as the CLI's default
    python bench/pipeline_speed.py --ref HEAD~3 --jobs 2 --preset micro
    python bench/pipeline_speed.py --ours-first          # the other order, to see the machine's drift
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIGURES = {  # name -> how to read it from report.json's stages
    "MLM masked accuracy": lambda s: s["mlm"]["val_masked_accuracy"],
    "CLM perplexity": lambda s: s["clm"]["val_perplexity"],
    "SFT exact match, seen": lambda s: s["sft"]["exact_match"]["seen"],
    "SFT exact match, held-out phrasings": lambda s: s["sft"]["exact_match"]["heldout_phrasings"],
    "SFT exact match, world facts": lambda s: s["sft"]["exact_match"]["world_facts"],
    "reward model accuracy": lambda s: s["reward_model"]["pairwise_accuracy"],
    "PPO win rate": lambda s: s["ppo"]["win_rate_vs_sft"],
    "DPO win rate": lambda s: s["dpo"]["win_rate_vs_sft"],
}


def run_journey(tree: Path, out: Path, preset: str, extra: list[str]) -> tuple[float, dict]:
    """Run `minillm pipeline` of the code in `tree`; return its wall time and report."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "minillm.cli", "pipeline", "--preset", preset, "--out", str(out), *extra],
                   cwd=tree, env=env, check=True)
    return time.perf_counter() - start, json.loads((out / "report.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", default="86be2f6", help="the reference commit")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--jobs", type=int, default=None, help="this tree's --jobs (default: the CLI's default)")
    parser.add_argument("--keep", type=Path, default=None, help="keep this tree's run in this folder (e.g. runs/tiny)")
    parser.add_argument("--ours-first", action="store_true",
                        help="run this tree before the reference: a machine whose speed drifts favours one "
                             "order, and running both orders shows by how much")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        subprocess.run(["git", "worktree", "add", "--detach", str(tmp / "ref"), args.ref], cwd=ROOT, check=True)
        try:
            ours_extra = [] if args.jobs is None else ["--jobs", str(args.jobs)]
            our_out = args.keep.resolve() if args.keep else tmp / "our_run"
            journeys = {"ref": lambda: run_journey(tmp / "ref", tmp / "ref_run", args.preset, []),
                        "ours": lambda: run_journey(ROOT, our_out, args.preset, [*ours_extra, "--force"])}
            done = {name: journeys[name]() for name in (("ours", "ref") if args.ours_first else ("ref", "ours"))}
            (ref_wall, ref), (our_wall, ours) = done["ref"], done["ours"]
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tmp / "ref")], cwd=ROOT, check=False)
    print(f"\n=== the {args.preset} journey: this tree against {args.ref}, back to back ===")
    print(f"wall time: {our_wall:.0f} s against {ref_wall:.0f} s = {our_wall / ref_wall:.2f}x")
    print(f"{'stage':18s}{'ours s':>9s}{'ref s':>9s}{'ratio':>8s}")
    for name, stage in ref["stages"].items():
        if name in ours["stages"]:
            a, b = ours["stages"][name]["seconds"], stage["seconds"]
            print(f"{name:18s}{a:9.1f}{b:9.1f}{a / b:8.2f}")
    new = [name for name in ours["stages"] if name not in ref["stages"]]
    if new:
        extra = ", ".join(f"{n} {ours['stages'][n]['seconds']:.0f} s" for n in new)
        print(f"stages the reference does not have: {extra}")
    print(f"\n{'learning figure':38s}{'ours':>9s}{'ref':>9s}")
    for name, read in FIGURES.items():
        print(f"{name:38s}{read(ours['stages']):9.3f}{read(ref['stages']):9.3f}")


if __name__ == "__main__":
    main()
