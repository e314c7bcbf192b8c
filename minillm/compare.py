"""`minillm compare RUN_DIR...`: several training runs side by side, the tool for ablations.

An ablation changes one thing (a switch, a learning rate, a seed) and asks what it did. Every run
folder already holds what is needed to answer: `metrics.jsonl` (the curves) and `config.json`
(every setting). `compare_runs` overlays the curves of every metric the runs share, one panel per
metric, in one PNG (a curve that is another run's, point for point, dashed over it); tabulates their
final values (what was learned: the learning rate the schedule reached, the machine's speed and the
counts of what was read are named apart, `not_a_result`); and lists the settings in which the runs
differ, so a reader sees at once what was changed and what it did. Runs of different stages
(`stage_of`) are compared on the settings they share, and told so. A setting that names another run
(PPO's sft_dir) is compared by that run (`input_runs`), not by how its path is written.

Two runs of the whole pipeline (an experiment made with `minillm pipeline --set ... --reuse
runs/tiny`, against runs/tiny) are compared by their reports instead (`compare_pipelines`): every
learning figure that differs, the settings that differ, and which steps each trained on its own.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from minillm.datasets.corpus import CORPUS
from minillm.datasets.instructions import INSTRUCTIONS
from minillm.datasets.run_data import DATA, data_text, same_span, saved_data
from minillm.errors import DataError
from minillm.provenance import MADE_BY, code_summary, describe
from minillm.reuse import run_id
from minillm.run_lock import holds_pipeline_steps
from minillm.train.loop import CONFIG_NAME, FINAL_SPLIT, METRICS_NAME, read_metrics, summarize
from minillm.train.plots import axis_label, curve_points, plot_curve, save_figure, step_axis, text_fonts
from minillm.utils import damaged, read_json

CHART_NAME = "compare.png"  # the overlaid curves' PNG when no --out names one (in the current folder)
REPORT_NAME = "report.json"  # what a finished journey (`minillm pipeline`) writes, and compare reads of it
NOT_CURVES = ("step", "elapsed_s")  # the x axis, and wall time (it measures the machine, not the run)
READ_NONE = "none (sft.pretrain_mix 0: it replays no corpus)"  # an empty record of the data read (`records_read`)


@dataclass
class LoggedRun:
    """What a training run logged: its curves and settings, under the label the comparison shows."""

    name: str
    rows: list[dict]  # metrics.jsonl, one dict per logged step
    config: dict  # config.json as written by the training loop, without its record of the code
    made_by: object = None  # that record (provenance.py); None for a run made before minillm recorded it
    inputs: dict[str, InputRun] = field(default_factory=dict)  # flattened setting -> the run it names
    read: dict[str, object] = field(default_factory=dict)  # the records of the data it read (datasets/run_data.py)


@dataclass(frozen=True)
class InputRun:
    """A run that one of a run's settings names (PPO's sft_dir), as found now."""

    folder: Path  # where it is
    identity: str  # which run it is (`run_identity`): two folders hold the same run when theirs agree


def compare_runs(run_dirs: Sequence[str | os.PathLike], out_png: str | os.PathLike | None = None) -> dict:
    """Overlay the runs' shared metrics in `out_png` (None: CHART_NAME); return the final values, the
    differing settings and the text report (`report`) that the command line prints. Pipeline runs are
    compared by their reports instead (`compare_pipelines`, no PNG: each step has its own curves), and a
    chart asked of them is refused (`check_no_chart_of_pipelines`).

    The steps, in the order the rest of this file defines them: check the folders, load the runs, plot
    the metrics they share, tabulate the final values that differ, list the settings that differ."""
    check_run_folders(run_dirs)
    if all(is_pipeline_run(d) for d in run_dirs):
        check_no_chart_of_pipelines(out_png)
        return compare_pipelines(run_dirs)
    out_png = CHART_NAME if out_png is None else out_png
    check_chart_outside_runs(run_dirs, out_png)
    runs = [load_run(d, n) for d, n in zip(run_dirs, run_names(run_dirs), strict=True)]
    metrics = shared_metrics(runs)
    if not metrics:
        raise DataError(f"the runs share no metric: {', '.join(r.name for r in runs)} log different things "
                        "(compare runs of the same stage)")
    plot = plot_runs(runs, shared_metrics(runs, curves_only=True) or metrics, out_png)
    final = {run.name: summarize(run.rows) for run in runs}
    stages = {r.name: stage_of(r.config) for r in runs}
    shared_only = "" not in stages.values() and len(set(stages.values())) > 1  # runs of different stages
    differences = config_differences(runs, shared_only)
    other_inputs = inputs_apart(runs, differences)
    report = "\n\n".join([
        *([stages_note(runs, stages)] if shared_only else []),
        *code_note([r.name for r in runs], [describe(r.made_by) for r in runs]),
        *data_note(runs),
        *inputs_note(other_inputs),
        final_values_text(runs, final, metrics),
        settings_text([r.name for r in runs], differences, shared_only),
        f"curves: {plot}",
    ])
    return {"final": final, "differences": differences, "other_inputs": other_inputs, "plot": str(plot),
            "report": report}


def check_no_chart_of_pipelines(out_png: str | os.PathLike | None) -> None:
    """Refuse a chart path given for pipeline runs, which are compared by their reports and draw none: the
    comparison would print, exit 0 and leave no chart where the user (or a script that reads it next)
    expects one. As every option that would go unread is refused, not passed by."""
    if out_png is not None:
        raise DataError(f"--out {out_png}: pipeline runs are compared by their reports, with no chart (each step's "
                        "curves are in its folder); drop --out, or compare two steps' folders for a chart, e.g. "
                        "runs/a/03_clm runs/b/03_clm")


def check_chart_outside_runs(run_dirs: Sequence[str | os.PathLike], out_png: str | os.PathLike) -> None:
    """Refuse a chart path inside one of the runs compared: `--out runs/b/loss.png` wrote the comparison over
    the run's own loss curve, and a run's folder holds what its training wrote, nothing else."""
    chart = Path(out_png).resolve()
    for run_dir in run_dirs:
        if Path(run_dir).resolve() in chart.parents:
            raise DataError(f"--out {out_png} lies inside {run_dir}, one of the runs compared, where it could replace "
                            "a file the run wrote (its loss.png, say); write the chart outside the runs, e.g. "
                            "--out compare.png")


def check_run_folders(run_dirs: Sequence[str | os.PathLike]) -> None:
    """Refuse what is no set of run folders to compare, each with its own sentence: fewer than two, a
    path that is missing or a file, a pipeline run that has not finished (no report to compare yet)."""
    if len(run_dirs) < 2:
        raise DataError(f"compare needs at least two run folders, got {len(run_dirs)}")
    for run_dir in run_dirs:  # before a pipeline run beside it is blamed for the company it keeps
        if not Path(run_dir).is_dir():
            what = "is a file, not a run folder" if Path(run_dir).exists() else "does not exist"
            raise DataError(f"{run_dir} {what}: point compare at run folders a training command or the "
                            "pipeline wrote (e.g. runs/clm, runs/tiny)")
        if holds_pipeline_steps(Path(run_dir)) and not is_pipeline_run(run_dir):  # stopped, or still running
            raise DataError(f"{run_dir} is a pipeline run that has not finished (it has no {REPORT_NAME} yet): run "
                            "its `minillm pipeline` command again, which goes on where it stopped, then compare")


def load_run(run_dir: str | os.PathLike, name: str) -> LoggedRun:
    """A run folder's metrics and config; DataError naming the folder if it holds no metrics."""
    folder = Path(run_dir)
    rows = read_metrics(folder / METRICS_NAME)
    if not rows and is_pipeline_run(folder):
        steps = sorted(p.name for p in folder.iterdir() if (p / METRICS_NAME).is_file())
        raise DataError(f"{folder} is a pipeline run: compare it with another pipeline run, or one of its steps "
                        f"with the same step of the other run, e.g. {folder / '06_ppo'} "
                        f"(its steps with curves: {', '.join(steps) or 'none yet'})")
    if not rows:
        raise DataError(f"{folder} holds no {METRICS_NAME} rows: point compare at run folders a training "
                        "command wrote (e.g. runs/clm)")
    config_path = folder / CONFIG_NAME
    config = read_json(config_path) if config_path.is_file() else {}
    made_by = config.pop(MADE_BY, None)  # not a setting: `code_note` names it apart
    read = records_read(config)  # nor these: `data_note`
    return LoggedRun(name, rows, siblings_by_name(config, folder), made_by, input_runs(config, folder), read)


def records_read(config: dict) -> dict[str, dict]:
    """The records of the data a run read (datasets/run_data.py), taken out of its `config`: key -> record.

    An SFT run that replays no corpus (sft.pretrain_mix 0) records none, for it read none (stage2_sft/sft.py's
    `data_read`): it gets an empty record, "none", unlike a run that replays one. Only a run that records what
    SFT reads (its instructions) is taken so: the data of a run made before its stage recorded it is unknown,
    and so is that of a run with no record otherwise (of a stage that reads none). Data given in Python has a
    record of its own (run_data's `data_record`), compared as a file's is.
    """
    read = {key: config.pop(key) for key in DATA if isinstance(config.get(key), dict)}
    if flatten(config).get("run.sft.pretrain_mix") == 0 and INSTRUCTIONS in read and CORPUS not in read:
        read[CORPUS] = {}
    return read


def siblings_by_name(config: dict, folder: Path) -> dict:
    """`config` with each path to a folder beside `folder`, or to a file in one, written "../NAME[/FILE]".

    A pipeline step names the steps it read (PPO's sft_dir: runs/tiny/04_sft). Two runs of the same
    step in two journeys read the same-named siblings in different folders: the same setting.
    Only a path is rewritten: a word such as "adamw" would resolve to a file in the current folder,
    which is `folder`'s parent when the runs sit there.
    """
    parent = folder.resolve().parent

    def short(value: object) -> object:
        if isinstance(value, dict):
            return {key: short(inner) for key, inner in value.items()}
        if is_path(value):  # a sibling, or a file in one (DPO's prefs: runs/tiny/05_reward_model/prefs.jsonl)
            for path in readings(Path(value), parent):
                if path.is_relative_to(parent) and path != parent:
                    return f"../{path.relative_to(parent).as_posix()}"
        return value

    return short(config)


def readings(path: Path, parent: Path) -> list[Path]:
    """Where `path`, a setting of a run in `parent`, may point. A relative path was written relative to the
    folder the run was started in, which need not be the current one: read against the current folder, and
    against each folder above `parent` from which its first names lead back down to `parent` (runs/tiny/04_sft,
    of a run in /home/me/runs/tiny, read against /home/me), nearest the root first."""
    if path.is_absolute():
        return [path.resolve()]
    starts = [Path.cwd(), *(parent.parents[k - 1] for k in range(len(path.parts) - 1, 0, -1)
                           if k < len(parent.parts) and path.parts[:k] == parent.parts[-k:])]
    return [(start / path).resolve() for start in starts]


def input_runs(config: dict, folder: Path) -> dict[str, InputRun]:
    """Each setting of `config` (flattened) that names a run, or a file in one, -> that run, read as
    `siblings_by_name` reads it; a setting whose path holds no run now (gone, a file of the user's) is left out,
    and so is one that names the run in `folder` itself (the reward run's own prefs.jsonl): no input run."""
    own = folder.resolve()
    found = {}
    for setting, value in flatten(config).items():
        if is_path(value):
            runs = [InputRun(path, identity) for path in readings(Path(value), own.parent)
                    if own not in (path, path.parent) and (identity := run_identity(path))]
            if runs:
                found[setting] = runs[0]
    return found


def run_identity(path: Path) -> str | None:
    """Which run the folder `path` holds, or the folder of the file `path` (05_reward_model/prefs.jsonl):
    the id its inputs.json holds (a pipeline step; a step --reuse copied keeps the id of the run it copies),
    else the sha256 of its metrics.jsonl (a stage command's run: a few kilobytes, whose times alone tell
    two trainings apart). None when it holds no run. A checkpoint is never read: it may weigh gigabytes."""
    folder = path if path.is_dir() else path.parent if path.is_file() else None
    if folder is None:
        return None
    if (step_run := run_id(folder)) is not None:
        return f"run {step_run}"
    metrics = folder / METRICS_NAME
    return f"metrics sha256 {hashlib.sha256(metrics.read_bytes()).hexdigest()}" if metrics.is_file() else None


def is_path(value: object) -> bool:
    """A setting that names a file or folder: text with a path separator in it."""
    return isinstance(value, str) and any(sep in value for sep in {"/", os.sep})


def run_names(run_dirs: Sequence[str | os.PathLike]) -> list[str]:
    """Short labels: each folder's name, or its whole path where two folders share a name."""
    names = [Path(d).name for d in run_dirs]
    return names if len(set(names)) == len(names) else [str(d) for d in run_dirs]


def steps_logged(run: LoggedRun) -> dict[str, set[int]]:
    """Each numeric metric of the run -> the steps at which it was logged."""
    steps: dict[str, set[int]] = {}
    for row in run.rows:
        for key, value in row.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key not in NOT_CURVES:
                steps.setdefault(key, set()).add(row.get("step", 0))
    return steps


def shared_metrics(runs: Sequence[LoggedRun], curves_only: bool = False) -> list[str]:
    """The numeric metrics every run logged, losses first; with `curves_only`, only those that some
    run logged at two steps or more (a curve, not a single end-of-run figure)."""
    logged = [steps_logged(run) for run in runs]
    common = set.intersection(*(set(steps) for steps in logged))
    if curves_only:
        common = {k for k in common if any(len(steps[k]) > 1 for steps in logged)}
    return sorted(common, key=lambda k: (k not in ("loss", "val_loss"), k))


def plot_runs(runs: Sequence[LoggedRun], metrics: Sequence[str], path: str | os.PathLike) -> Path:
    """One panel per metric (`plot_panel`), one line per run, against the step; saved as a PNG at `path`."""
    cols = min(len(metrics), 2)
    grid_rows = math.ceil(len(metrics) / cols)
    with text_fonts([*metrics, *(run.name for run in runs)]):
        fig = Figure(figsize=(6 * cols, 3.5 * grid_rows))
        axes = fig.subplots(grid_rows, cols, squeeze=False).ravel()
        for ax, metric in zip(axes, metrics, strict=False):
            plot_panel(ax, runs, metric)
        for ax in axes[len(metrics):]:
            ax.set_visible(False)
        return save_figure(fig, path)


def plot_panel(ax: Axes, runs: Sequence[LoggedRun], metric: str) -> None:
    """The runs' curves of `metric`, a line each. A run whose curve is an earlier run's, point for point
    (a setting that changed nothing there, a run made again), would be drawn exactly over it and hide
    it: it is drawn dashed over it (`twin_dashes`), and its legend entry says "(same as a)" under its
    name (a line of its own: two long run paths side by side would be wider than the panel)."""
    curves = [curve_rows(run.rows, metric) for run in runs]
    points = [curve_points(rows, metric) for rows in curves]
    for i, (run, rows) in enumerate(zip(runs, curves, strict=True)):
        same = [j for j, other in enumerate(points) if other == points[i]]  # the runs drawn on this curve, i too
        k = same.index(i)
        if k == 0:
            plot_curve(ax, rows, metric, label=run.name)
        else:
            plot_curve(ax, rows, metric, label=f"{run.name}\n(same as {runs[same[0]].name})",
                       linestyle=twin_dashes(k, len(same)))
    ax.set_title(axis_label([metric]))
    step_axis(ax)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def twin_dashes(k: int, n: int) -> tuple[int, tuple[int, int]]:
    """The line style of the k-th (k >= 1) of `n` runs drawn on one curve, over the first, which is solid:
    dashes 4 points long with gaps for the n - 1 others, each shifted into a gap of its own, so every
    run's colour shows along the curve. matplotlib's (offset, (on, off))."""
    return 4 * k, (4, 4 * (n - 1))


def curve_rows(rows: Sequence[dict], metric: str) -> list[dict]:
    """The rows a curve of `metric` is drawn through: the training log's. An end-of-run evaluation
    (FINAL_SPLIT) measures on more data than the log's, so a curve through both would jump at its last
    step (stage 1's val_loss); it is drawn only where it is the metric's one value."""
    logged = [row for row in rows if row.get("split") != FINAL_SPLIT and metric in row]
    return logged or list(rows)


def final_values_text(runs: Sequence[LoggedRun], final: dict[str, dict], metrics: Sequence[str]) -> str:
    """The runs' last values (`final`, run -> metric -> value) of the metrics they share: a table of those
    that differ, one row per run; a line of those the same in every run; a line of the numbers that are no
    result of the training (`not_a_result`), left out."""
    results = [m for m in metrics if not not_a_result(m)]
    same = [m for m in results if len({final[r.name][m] for r in runs}) == 1]
    varying = [m for m in results if m not in same]
    columns = [distinct_texts([final[r.name][m] for r in runs]) for m in varying]  # one metric's runs each
    rows = [[r.name, final[r.name].get("step", "-"), *(column[i] for column in columns)] for i, r in enumerate(runs)]
    table = text_table(["run", "step", *varying], rows)
    first = final[runs[0].name]  # (None: not measured at the last step, a null in metrics.jsonl)
    same_line = ("\nthe same in every run: " + ", ".join(f"{m} {'-' if first[m] is None else f'{first[m]:.4g}'}"
                                                          for m in same) if same else "")
    return "final values:\n" + table + same_line + not_results_text([m for m in metrics if m not in results])


def not_a_result(metric: str) -> str | None:
    """Why a logged number is no result of what a run learned, so no row of the final values (None: it
    is one). Its curve is still drawn: the learning rate's shows the schedule each run followed."""
    if metric == "lr":  # at the last step, the cosine's floor: train.lr x min_lr_ratio, a setting
        return "the schedule's learning rate at the last step, which the train settings set"
    if metric == "samples_per_s":
        return "the machine's speed"
    if metric == "steps" or metric.endswith(("_tokens", "_positions")):  # train_tokens, val_masked_positions
        return "how much was read or measured"
    return None


def not_results_text(metrics: Sequence[str]) -> str:
    """A line naming the logged numbers left out of the final values, each group with why (not_a_result)."""
    reasons: dict[str, list[str]] = {}
    for metric in metrics:
        reasons.setdefault(not_a_result(metric) or "", []).append(metric)
    parts = [f"{', '.join(names)} ({why})" for why, names in reasons.items()]
    return "\nleft out, as no result of the training: " + "; ".join(parts) if parts else ""


def distinct_texts(values: Sequence[object]) -> list[str]:
    """Values that are compared with each other, as table cells: floats to 4 significant digits, or to
    as many more as it takes to print different ones differently (-0.18961 and -0.18964 are both
    -0.1896 at 4, and a table of what differs would show them the same). NaN prints "nan" at any
    digits, and NaN != NaN: two would ask for more digits than any float has. None, a figure not
    measured (JSON's null, utils.json_text), prints "-", as a figure a run has not got."""
    floats = {v for v in values if isinstance(v, float) and not math.isnan(v)}
    digits = next((d for d in range(4, 17) if len({f"{v:.{d}g}" for v in floats}) == len(floats)), 17)
    return [f"{v:.{digits}g}" if isinstance(v, float) else "-" if v is None else str(v) for v in values]


def text_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Columns padded to their widest cell."""
    cells = [[str(v) for v in row] for row in [header, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells)


def stage_of(config: dict) -> str:
    """The stage whose run wrote `config` (its config.json): the name of its own settings, those that
    hold its train settings ("sft" in run.sft, "ppo"); pretraining's are the whole run config, named by
    the model ("clm" for a GPT, "mlm" for BERT). "" when config.json says neither (it is missing)."""
    settings = config["run"] if isinstance(config.get("run"), dict) else config
    own = [key for key, value in settings.items() if isinstance(value, dict) and "train" in value]
    return own[0] if own else {"gpt": "clm", "bert": "mlm"}.get(str(config.get("model_kind")), "")


def flatten(config: dict, prefix: str = "") -> dict[str, object]:
    """{"clm": {"model": {"n_layer": 3}}} -> {"clm.model.n_layer": 3}."""
    flat: dict[str, object] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def config_differences(runs: Sequence[LoggedRun], shared_only: bool = False) -> dict[str, list[object]]:
    """Every setting whose value is not the same in all runs: path -> one value per run ("-" = absent);
    with `shared_only`, only settings that every run has (runs of different stages share few).

    A config.json may hold the same setting twice (the model's config under "model" and again inside
    the stage's "run" config); the longer path is dropped when it says the same as the shorter. A path
    that names the same run in every run (`input_runs`) is the same setting however it is written: a
    step --reuse copied records the path of the journey it was copied from.
    """
    flat = [flatten(run.config) for run in runs]
    paths = sorted(set.intersection(*map(set, flat)) if shared_only else set().union(*flat),
                   key=lambda p: (p.count("."), p))
    differ: dict[str, list[object]] = {}
    for path in paths:
        values = [f.get(path, "-") for f in flat]
        if (len({json.dumps(v) for v in values}) > 1 and not one_input_run(runs, path)
                and not any(path.endswith("." + q) and differ[q] == values for q in differ)):
            differ[path] = values
    return dict(sorted(differ.items()))


def one_input_run(runs: Sequence[LoggedRun], setting: str) -> bool:
    """True when `setting` names one and the same run (`input_runs`) in every run."""
    named = [run.inputs.get(setting) for run in runs]
    return None not in named and len({n.identity for n in named}) == 1


def data_note(runs: Sequence[LoggedRun]) -> list[str]:
    """A line for each of the corpus and the instructions that the runs read different ones of (their records,
    datasets/run_data.py), naming each run's: no setting says which file a run read. Runs without a record (of
    a stage that reads none, or made before it was recorded) are left out; so is the path alone, when the
    contents are the same (a moved file). An empty record, of a run that read none (`records_read`), says "none"."""
    lines = []
    for key in DATA:
        known = {run.name: record for run in runs if isinstance(record := run.read.get(key), dict)}
        if len({str(record.get("sha256")) for record in known.values()}) < 2:
            continue
        read_some = [record for record in known.values() if record]
        if not all(same_span(read_some[0], record) for record in read_some):  # their hashes cannot tell
            continue
        texts = {name: data_text(key, record) if record else READ_NONE for name, record in known.items()}
        if len(set(texts.values())) < len(texts):  # one file, edited between the runs: its hash tells them apart
            texts = {name: f"{text} (sha256 {str(known[name].get('sha256'))[:10]})" for name, text in texts.items()}
        what = "corpora" if key == CORPUS else key
        lines.append(f"read different {what}: " + "; ".join(f"{name}: {text}" for name, text in texts.items()))
    return lines


def inputs_apart(runs: Sequence[LoggedRun], differences: dict[str, list[object]]) -> dict[str, list[str]]:
    """The settings that name an input alike in every run (PPO's sft_dir: the "../04_sft" beside each, so
    no setting that differs) where the runs there are not one and the same: setting -> each run's input folder."""
    return {setting: [str(run.inputs[setting].folder) for run in runs] for setting in runs[0].inputs
            if setting not in differences and all(setting in run.inputs for run in runs)
            and not one_input_run(runs, setting)}


def inputs_note(apart: dict[str, list[str]]) -> list[str]:
    """A line for runs made from different runs of inputs their settings name alike (`inputs_apart`): their
    results may differ for that, and the table of settings cannot show it. No line when there are none."""
    if not apart:
        return []
    return ["made from different input runs, though their settings name them alike: " + "; ".join(
        f"{setting} ({', '.join(folders)})" for setting, folders in apart.items())]


def settings_text(names: Sequence[str], differences: dict[str, list[object]], shared_only: bool = False) -> str:
    """The settings that differ (config_differences), one row each and one column per run."""
    if not differences:
        return "settings that differ:\n" + ("(none among the settings they share)" if shared_only
                                             else "(none: the runs have the same config)")
    rows = [[path, *(json.dumps(v) for v in values)] for path, values in differences.items()]
    return "settings that differ:\n" + text_table(["setting", *names], rows)


def stages_note(runs: Sequence[LoggedRun], stages: dict[str, str]) -> str:
    """One line for runs of different stages: each run's stage, and how many of their settings only some of
    them have (a CLM run has no sft.lora, an SFT run no clm settings), left out of the table."""
    flat = [set(flatten(run.config)) for run in runs]
    apart = len(set().union(*flat) - set.intersection(*flat))
    return (f"these runs are of different stages ({', '.join(f'{name}: {stage}' for name, stage in stages.items())});"
            f" only the settings they share are compared (the {apart} that not every run has are left out)")


def code_note(names: Sequence[str], codes: Sequence[str]) -> list[str]:
    """A line for runs made by different code (provenance.py), naming each run's: a figure may have moved
    with the code, not with the settings. No line when one code made them all."""
    if len(set(codes)) == 1:
        return []
    return ["made by different code: " + "; ".join(f"{name}: {code}" for name, code in zip(names, codes, strict=True))]


# --------------------------------------------------------------------------------------------------
# Two journeys: the folders of `minillm pipeline`, compared by their report.json.

# A stage's entries in report.json that are no learning figure: its times (the machine's speed, not the
# run's) and the run a step was copied from (`--reuse`; "steps each run trained on its own" lists those).
NOT_FIGURES = ("seconds", "train_seconds", "copied_from")


def is_pipeline_run(folder: str | os.PathLike) -> bool:
    """A finished pipeline run: its folder holds the report that `compare_pipelines` reads."""
    return (Path(folder) / REPORT_NAME).is_file()


def compare_pipelines(run_dirs: Sequence[str | os.PathLike]) -> dict:
    """The learning figures that differ between pipeline runs, the settings that differ, and the steps
    each trained on its own (whose curves `compare` can then overlay, step folder against step folder)."""
    from minillm.pipeline import code_records  # (the pipeline imports every stage: only needed here)

    folders, names = [Path(d) for d in run_dirs], run_names(run_dirs)
    figures = [report_figures(folder) for folder in folders]
    every = list(dict.fromkeys(path for f in figures for path in f))  # in the reports' order
    differ = [path for path in every if len({json.dumps(f.get(path)) for f in figures}) > 1]  # missing: None
    configs = [LoggedRun(name, [], read_json(folder / CONFIG_NAME) if (folder / CONFIG_NAME).is_file() else {},
                         read=journey_data(folder)) for folder, name in zip(folders, names, strict=True)]
    differences = config_differences(configs)
    apart = steps_trained_apart(folders)
    made = [code_records(folder) for folder in folders]  # which code made the steps each trained on its own
    codes = [code_summary({step: records.get(step) for step in apart}) for records in made]
    report = "\n\n".join([*code_note(names, codes), *data_note(configs),
                          figures_text(names, figures, differ, len(every) - len(differ)),
                          settings_text(names, differences), steps_apart_text(folders, apart)])
    return {"figures": {name: {p: f.get(p) for p in differ} for name, f in zip(names, figures, strict=True)},
            "differences": differences, "steps_apart": apart, "report": report}


def journey_data(folder: Path) -> dict[str, dict]:
    """The data a pipeline run read, as its steps recorded it (datasets/run_data.py): each record from the first
    step that holds it (the corpus from 02_mlm, the instructions from 04_sft); none for a step made before its
    stage recorded it. The journey's own config.json holds its settings alone."""
    steps = sorted(p for p in folder.iterdir() if p.is_dir())
    read = {}
    for key in DATA:
        record = next((r for step in steps if (r := saved_data(step / CONFIG_NAME, key)) is not None), None)
        if record is not None:
            read[key] = record
    return read


def figures_text(names: Sequence[str], figures: Sequence[dict[str, object]], differ: Sequence[str],
                 n_same: int) -> str:
    """The learning figures that differ (`differ`, paths into each run's `figures`), one row each and one
    column per run, then how many are the same in every run."""
    text = "learning figures that differ:\n" + (
        text_table(["figure", *names], [[p, *distinct_texts([f.get(p, "-") for f in figures])] for p in differ])
        if differ else "(none)")
    return text + f"\n{'the other' if differ else 'all'} {n_same} are the same in every run"


def steps_apart_text(folders: Sequence[Path], apart: Sequence[str]) -> str:
    """The steps each pipeline run trained on its own (`steps_trained_apart`), and a command to paste that
    overlays the curves of the first of them that every run logged."""
    with_curves = [step for step in apart if all((folder / step / METRICS_NAME).is_file() for folder in folders)]
    text = "steps each run trained on its own: " + (", ".join(apart) or "none (every step is the same run)")
    if with_curves:
        step_folders = " ".join(shlex.quote(str(f / with_curves[0])) for f in folders)  # a command to paste
        text += f"\noverlay a step's curves: minillm compare {step_folders}"
    return text


def report_figures(folder: Path) -> dict[str, object]:
    """Every figure of a pipeline run's report.json by its path ("ppo.win_rate_vs_sft"), NOT_FIGURES left out."""
    stages = read_json(folder / REPORT_NAME).get("stages", {})
    if not isinstance(stages, dict):
        raise damaged(folder / REPORT_NAME, f"holds \"stages\" that are a JSON {type(stages).__name__}, not an "
                      "object {...}")
    return {path: value for path, value in flatten(stages).items() if path.rsplit(".", 1)[-1] not in NOT_FIGURES}


def steps_trained_apart(folders: Sequence[Path]) -> list[str]:
    """The step folders (e.g. 06_ppo) whose runs are not one and the same in every pipeline run: each
    step's inputs.json names its run, and a step copied by --reuse keeps the id of the run it copies."""
    steps = sorted(p.name for p in folders[0].iterdir() if p.is_dir())
    return [step for step in steps if len({run_id(folder / step) for folder in folders}) > 1]
