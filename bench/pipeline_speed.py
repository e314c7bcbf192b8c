"""Is the journey faster than it was? A reference commit's pipeline against this tree's, in one run.

The tiny pipeline of the reference commit and of this working tree run back to back on the same
machine, with the same Python environment.

The reference is checked out with `git worktree` into a temporary folder, and each pipeline runs as
`python -m minillm.cli pipeline` with PYTHONPATH pointing at its own tree, so that each imports its
own minillm. The figure to read is the ratio of wall times (this tree over the reference): both
runs meet the same machine, so its speed on the day cancels out. Each stage's ratio is printed too,
with the learning figures of both runs side by side (a faster run must not teach less).

The default reference, 86be2f6, is the journey before the speed work of docs/findings.md's "A faster
journey" (its tiny run: 529 s in "The tiny run, as it stands"): the ratio then says what that work
and everything since gained. It predates `--jobs`, so it always runs one step at a time.

A shared machine's speed drifts, by a fifth within one run on some days: a journey run after the
other can meet a different machine. `--interleave` runs the two journeys step by step in turns
instead (the reference's tokenizer, ours, our MLM, the reference's, ...; the order flips at every
step), each in a worker process of its own tree that keeps its data between steps as a pipeline
does, so that both meet the machine at nearly the same moments.

    python bench/pipeline_speed.py                       # reference 86be2f6, --jobs as the CLI's default
    python bench/pipeline_speed.py --ref HEAD~3 --jobs 2 --preset micro
    python bench/pipeline_speed.py --ours-first          # the other order, to see the machine's drift
    python bench/pipeline_speed.py --interleave          # step by step in turns: the drift cancels
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from minillm.config import PRESETS
from minillm.console import OneLineParser, description, path_arg, positive_int
from minillm.errors import TrainingError, one_line_errors
from minillm.pipeline import STEP_NAMES, step_folder
from minillm.run_lock import check_is_folder, check_not_foreign, run_folder_lock

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
    done = subprocess.run([sys.executable, "-m", "minillm.cli", "pipeline", "--preset", preset, "--out", str(out),
                           *extra], cwd=tree, env=env)
    if done.returncode != 0:  # the pipeline printed why; a traceback of this call would add nothing
        raise TrainingError(f"`minillm pipeline` of {tree} stopped (exit status {done.returncode}); its error is above")
    return time.perf_counter() - start, json.loads((out / "report.json").read_text(encoding="utf-8"))


# A worker runs one tree's pipeline a step at a time: it reads a step name on stdin, runs it into
# its folder (keeping the journey's data, as `minillm pipeline` does) and answers "DONE <seconds>".
# "report" writes report.json once every step is done. The same code runs in both trees: it uses
# only what 86be2f6's pipeline already had (Journey, run_step, STEP_NAMES, run_pipeline).
WORKER = """
import sys, time
from pathlib import Path
from minillm.config import preset
from minillm.pipeline import STEP_NAMES, Journey, run_pipeline, run_step
cfg, out = preset(sys.argv[1]), Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
journey = Journey(cfg, out)
print("STEPS", *STEP_NAMES, flush=True)
for line in sys.stdin:
    start = time.perf_counter()
    if line.strip() == "report":
        run_pipeline(cfg, out)  # every step is done: this reads their results and writes the report
    else:
        journey.results[line.strip()] = run_step(journey, line.strip())
    print("DONE", time.perf_counter() - start, flush=True)
"""


class Worker:
    """One tree's pipeline in its own process, driven a step at a time."""

    def __init__(self, tree: Path, out: Path, preset: str) -> None:
        self.out = out
        self.process = subprocess.Popen([sys.executable, "-c", WORKER, preset, str(out)], cwd=tree, text=True,
                                        env={**os.environ, "PYTHONPATH": str(tree)},
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.steps = self.answer("STEPS").split()

    def answer(self, tag: str) -> str:
        """The text after `tag` on the worker's next line that starts with it (its other lines are echoed)."""
        for line in self.process.stdout:
            if line.startswith(tag + " "):
                return line[len(tag) + 1:]
            print(line, end="")
        self.stop()  # reaped and its pipes closed: else a ResourceWarning says the process still runs
        raise TrainingError(f"the pipeline worker in {self.out} stopped; its error is above")

    def run(self, step: str) -> float:
        """Run `step` (or "report"); return its wall time in seconds."""
        self.process.stdin.write(step + "\n")
        self.process.stdin.flush()
        return float(self.answer("DONE"))

    def stop(self) -> None:
        """Close the worker's stdin (it stops at its end) and stdout, and wait for it to exit."""
        self.process.stdin.close()
        self.process.stdout.close()
        self.process.wait()

    def close(self) -> dict:
        """Write the report, stop the worker, return the report."""
        self.run("report")
        self.stop()
        return json.loads((self.out / "report.json").read_text(encoding="utf-8"))


def run_interleaved(trees: dict[str, Path], outs: dict[str, Path], preset: str) -> dict[str, tuple[float, dict]]:
    """Both journeys, step by step in turns, the order flipping at every step: {name: (wall s, report)}."""
    workers = {name: Worker(trees[name], outs[name], preset) for name in trees}
    walls = dict.fromkeys(trees, 0.0)
    steps = workers["ours"].steps  # ours has every step of the reference, and maybe more
    for i, step in enumerate(steps):
        for name in (("ref", "ours") if i % 2 == 0 else ("ours", "ref")):
            if step in workers[name].steps:
                walls[name] += workers[name].run(step)
    return {name: (walls[name], workers[name].close()) for name in trees}


def ref_problem(ref: str) -> str | None:
    """Why `git worktree add` could not check out `ref` from ROOT's history, in a sentence; None if it can."""
    try:
        top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=ROOT, capture_output=True, text=True)
    except FileNotFoundError:
        return "git is not installed, and the reference is checked out of the repository's history with it"
    if top.returncode != 0 or Path(top.stdout.strip()).resolve() != ROOT:
        return (f"{ROOT} is not a git checkout (a copy without its history?), so no reference can be checked out "
                "of it; run the bench in a clone of the repository")
    known = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"], cwd=ROOT,
                           capture_output=True)
    if known.returncode != 0:
        return f"no such commit in {ROOT} (a commit id, tag or branch, e.g. HEAD~3)"
    return None


def main() -> None:
    parser = OneLineParser(description=description(__doc__))
    parser.add_argument("--ref", default="86be2f6", help="the reference commit")
    parser.add_argument("--preset", default="tiny", choices=PRESETS)
    parser.add_argument("--jobs", type=positive_int, default=None,
                        help="this tree's --jobs (default: the CLI's default); the reference runs with its own "
                             "default (86be2f6 has no --jobs: one step at a time)")
    parser.add_argument("--keep", type=path_arg, default=None,
                        help="keep this tree's run in this folder (e.g. runs/tiny; new, empty or a run's, as "
                             "for --out): its step folders are trained anew, as --force does; nothing else in "
                             "it is touched")
    parser.add_argument("--ours-first", action="store_true",
                        help="run this tree before the reference: a machine whose speed drifts favours one "
                             "order, and running both orders shows by how much")
    parser.add_argument("--interleave", action="store_true",
                        help="run the two journeys step by step in turns, so that the machine's drift "
                             "cancels (one step at a time in each: --jobs 1)")
    args = parser.parse_args()
    if args.interleave and args.jobs not in (None, 1):
        parser.error("--interleave runs one step at a time in each journey; drop --jobs or pass --jobs 1")
    problem = ref_problem(args.ref)
    if problem:
        parser.error(f"--ref {args.ref}: {problem}")
    keep = Path(args.keep).resolve() if args.keep else None
    if keep:  # the pipeline's own rules for --out, checked before the reference's journey runs
        check_is_folder(keep, flag="--keep")
        check_not_foreign(keep, flag="--keep")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        subprocess.run(["git", "worktree", "add", "--detach", str(tmp / "ref"), args.ref], cwd=ROOT, check=True)
        try:
            ours_extra = [] if args.jobs is None else ["--jobs", str(args.jobs)]
            our_out = keep or tmp / "our_run"
            if args.interleave:
                with run_folder_lock(our_out):  # as `minillm pipeline` holds it (back to back, that command takes it)
                    for name in STEP_NAMES:  # as the pipeline's --force does: every step anew, the rest kept
                        shutil.rmtree(our_out / step_folder(name), ignore_errors=True)
                    done = run_interleaved({"ref": tmp / "ref", "ours": ROOT},
                                           {"ref": tmp / "ref_run", "ours": our_out}, args.preset)
            else:
                journeys = {"ref": lambda: run_journey(tmp / "ref", tmp / "ref_run", args.preset, []),
                            "ours": lambda: run_journey(ROOT, our_out, args.preset, [*ours_extra, "--force"])}
                done = {name: journeys[name]() for name in (("ours", "ref") if args.ours_first else ("ref", "ours"))}
            (ref_wall, ref), (our_wall, ours) = done["ref"], done["ours"]
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tmp / "ref")], cwd=ROOT, check=False)
    how = "step by step in turns" if args.interleave else "back to back"
    print(f"\n=== the {args.preset} journey: this tree against {args.ref}, {how} ===")
    print_comparison(args.ref, (our_wall, ours), (ref_wall, ref))


def print_comparison(ref_name: str, ours_run: tuple[float, dict], ref_run: tuple[float, dict]) -> None:
    """The figures to read: the ratio of wall times (this tree over the reference), each stage's seconds
    and ratio, the stages both have summed, and the learning figures side by side.
    `ours_run`, `ref_run`: (wall seconds, report.json)."""
    (our_wall, ours), (ref_wall, ref) = ours_run, ref_run
    print(f"wall time: this tree {our_wall:.0f} s, {ref_name} {ref_wall:.0f} s = {our_wall / ref_wall:.2f}x "
          "(under 1: this tree is faster)")
    print(f"{'stage':18s}{'ours s':>9s}{'ref s':>9s}{'ratio':>8s}")
    for name, stage in ref["stages"].items():
        if name in ours["stages"]:
            a, b = ours["stages"][name]["seconds"], stage["seconds"]
            ratio = f"{a / b:8.2f}" if b > 0 else f"{'-':>8s}"  # a part with no time of its own (best_of_n)
            print(f"{name:18s}{a:9.1f}{b:9.1f}{ratio}")
    shared = [name for name in ref["stages"] if name in ours["stages"]]
    a, b = (sum(run["stages"][name]["seconds"] for name in shared) for run in (ours, ref))
    print(f"{'those stages':18s}{a:9.1f}{b:9.1f}{a / b:8.2f}  (the journey the reference has)")
    new = [name for name in ours["stages"] if name not in ref["stages"]]
    if new:
        extra = ", ".join(f"{n} {ours['stages'][n]['seconds']:.0f} s" for n in new)
        print(f"stages the reference does not have: {extra}")
    print(f"\n{'learning figure':38s}{'ours':>9s}{'ref':>9s}")
    for name, read in FIGURES.items():
        print(f"{name:38s}{read(ours['stages']):9.3f}{read(ref['stages']):9.3f}")


if __name__ == "__main__":
    one_line_errors()
    main()
