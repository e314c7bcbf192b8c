"""`minillm compare`: curves of several runs in one PNG, their final values, the settings that differ."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from minillm import compare
from minillm.cli import main
from minillm.compare import (
    LoggedRun,
    compare_pipelines,
    compare_runs,
    config_differences,
    curve_rows,
    data_note,
    distinct_texts,
    inputs_apart,
    load_run,
    shared_metrics,
    stage_of,
    twin_dashes,
)
from minillm.datasets.corpus import corpus_given
from minillm.datasets.instructions import instructions_given


def write_run(folder: Path, lr: float, losses: list[float], extra: str = "grad_norm") -> Path:
    """A run folder as a training command writes it: its curves, and a config.json that holds the
    train and model settings twice (at the top and inside the stage's own config), as real ones do."""
    folder.mkdir(parents=True)
    rows = [{"step": 10 * (i + 1), "split": "train", "loss": loss, extra: 1.0 / (i + 1), "lr": lr}
            for i, loss in enumerate(losses)]
    rows.append({"step": 10 * len(losses), "split": "val", "val_loss": losses[-1] + 0.5})
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    train, model = {"lr": lr, "seed": 1}, {"n_layer": 3}
    config = {"run": {"sft": {"train": train, "lora": {"rank": 8 if lr > 1e-3 else 0}}, "model": model,
                      "init_dir": str(folder.parent / "03_clm")},  # the step it read, beside it
              "train": train, "model": model, "model_kind": "gpt"}
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


def test_compare_tables_final_values_and_only_the_differing_settings(tmp_path):
    a = write_run(tmp_path / "full", 1e-3, [3.0, 2.0, 1.5])
    b = write_run(tmp_path / "lora", 3e-3, [3.0, 2.5, 1.75], extra="only_lora")
    result = compare_runs([a, b], tmp_path / "cmp.png")
    assert result["final"]["full"]["loss"] == 1.5 and result["final"]["lora"]["val_loss"] == 2.25
    assert result["differences"] == {"run.sft.lora.rank": [0, 8], "train.lr": [1e-3, 3e-3]}  # said once
    assert (tmp_path / "cmp.png").stat().st_size > 10_000
    report = result["report"]
    assert "train.lr" in report and "seed" not in report  # the same in both: not shown
    assert "grad_norm" not in report and "only_lora" not in report  # logged by one run only


def runs_logging_kl(tmp_path: Path, kls: dict[str, list[float]]) -> list[Path]:
    """A run folder for each name, whose metrics.jsonl logs only its `kl` values, at steps 1, 2, ..."""
    runs = []
    for name, values in kls.items():
        folder = write_run(tmp_path / name, 1e-3, [2.0, 1.0])
        rows = [{"step": step, "kl": kl} for step, kl in enumerate(values, start=1)]
        (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        runs.append(folder)
    return runs


def test_the_png_draws_each_runs_logged_values_against_whole_steps(tmp_path, drawn_figures):
    """Runs of a few steps (PPO's micro runs log steps 1 and 2) had ticks at step 0.5, 1.5 and 2.5."""
    compare_runs(runs_logging_kl(tmp_path, {"a": [0.0, 0.1], "b": [0.0, 0.3]}), tmp_path / "c.png")
    [ax] = [ax for ax in drawn_figures[-1].axes if ax.get_visible()]
    assert ax.get_title() == "kl (nats)" and [line.get_label() for line in ax.lines] == ["a", "b"]
    assert [list(line.get_ydata()) for line in ax.lines] == [[0.0, 0.1], [0.0, 0.3]]
    assert all(float(tick).is_integer() for tick in ax.get_xticks())


def test_shared_metrics_order_and_config_of_identical_runs(tmp_path):
    runs = [load_run(write_run(tmp_path / n, 1e-3, [2.0, 1.0]), n) for n in ("a", "b")]
    assert shared_metrics(runs) == ["loss", "val_loss", "grad_norm", "lr"]
    assert config_differences(runs) == {}


def test_curves_only_leaves_out_a_metric_logged_at_one_step():
    rows = [{"step": 1, "loss": 1.0}, {"step": 2, "loss": 0.5}, {"step": 2, "split": "final", "val_acc": 0.7}]
    runs = [LoggedRun("a", rows, {}), LoggedRun("b", rows, {})]
    assert shared_metrics(runs) == ["loss", "val_acc"]
    assert shared_metrics(runs, curves_only=True) == ["loss"]  # val_acc is one end-of-run figure, not a curve


def test_compare_command_prints_the_table_and_refuses_a_folder_without_metrics(tmp_path, capsys):
    a = write_run(tmp_path / "x" / "run", 1e-3, [2.0, 1.0])
    b = write_run(tmp_path / "y" / "run", 3e-3, [2.0, 0.5])
    assert main(["compare", str(a), str(b), "--out", str(tmp_path / "c.png")]) == 0
    out = capsys.readouterr().out
    assert str(a) in out and "0.5" in out and "curves:" in out  # same folder names: whole paths as labels
    (tmp_path / "empty").mkdir()
    assert main(["compare", str(a), str(tmp_path / "empty")]) == 2
    assert "holds no metrics.jsonl rows" in capsys.readouterr().err
    pipeline_run = tmp_path / "pipeline"  # a pipeline's folder: its steps' folders hold the curves
    write_run(pipeline_run / "03_clm", 1e-3, [2.0, 1.0])
    (pipeline_run / "report.json").write_text("{}", encoding="utf-8")
    assert main(["compare", str(a), str(pipeline_run)]) == 2
    assert (f"{pipeline_run} is a pipeline run: compare it with another pipeline run, or one of its steps with "
            f"the same step of the other run, e.g. {pipeline_run / '06_ppo'} (its steps with curves: 03_clm)"
            ) in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["compare"])


def write_pipeline_run(folder: Path, kl_coef: float, ppo_run: str, win_rate: float) -> Path:
    """A finished pipeline's folder as far as compare reads it: report.json, config.json, and each
    step's inputs.json naming its run (the same id: a step --reuse copied from the other run)."""
    write_run(folder / "06_ppo", 1e-4, [1.0, win_rate])
    (folder / "07_dpo").mkdir()
    for step, run in (("06_ppo", ppo_run), ("07_dpo", "dpo-1")):
        inputs = {"id": run, "settings": {}, "made_from": {}}
        (folder / step / "inputs.json").write_text(json.dumps(inputs), encoding="utf-8")
    stages = {"ppo": {"win_rate_vs_sft": win_rate, "kl": 0.5 + kl_coef, "seconds": 20 * win_rate,
                      "win_rate_by_family": {"count": win_rate, "plural": 0.7}},
              "dpo": {"win_rate_vs_sft": 0.6, "seconds": 10 * win_rate}}
    report = {"stages": stages, "wall_seconds": 300 * win_rate}
    (folder / "report.json").write_text(json.dumps(report), encoding="utf-8")
    config = {"ppo": {"kl_coef": kl_coef, "epochs": 2}, "dpo": {"beta": 0.3}}
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


@pytest.mark.parametrize("kind", ["missing", "file"])
def test_a_folder_that_is_not_there_is_named_as_such_beside_any_run(tmp_path, capsys, kind):
    # it was called a folder that "holds no metrics.jsonl rows", and beside a pipeline run the
    # pipeline run was blamed ("is a pipeline run: compare it with another pipeline run")
    wrong = tmp_path / "typo"
    if kind == "file":
        wrong.write_text("not a run\n", encoding="utf-8")
    what = "does not exist" if kind == "missing" else "is a file, not a run folder"
    for other in (write_run(tmp_path / "run", 1e-3, [2.0, 1.0]), write_pipeline_run(tmp_path / "tiny", 0.2, "p", 0.6)):
        assert main(["compare", str(other), str(wrong), "--out", str(tmp_path / "c.png")]) == 2
        assert capsys.readouterr().err.strip() == (f"minillm: error: {wrong} {what}: point compare at run folders "
                                                   "a training command or the pipeline wrote (e.g. runs/clm, "
                                                   "runs/tiny)")


def test_a_pipeline_run_that_has_not_finished_is_named_as_such_beside_any_run(tmp_path, capsys):
    # a pipeline stopped before its report (killed, Ctrl-C) was said to hold "no metrics.jsonl rows"
    # and sent to "run folders a training command wrote"; beside a finished one, that one was blamed
    stopped = write_pipeline_run(tmp_path / "stopped", 0.2, "p", 0.6)
    (stopped / "01_tokenizer").mkdir()
    (stopped / "report.json").unlink()
    for other in (write_run(tmp_path / "run", 1e-3, [2.0, 1.0]), write_pipeline_run(tmp_path / "tiny", 0.2, "p", 0.6)):
        for pair in ([other, stopped], [stopped, other]):
            assert main(["compare", *map(str, pair), "--out", str(tmp_path / "c.png")]) == 2
            assert capsys.readouterr().err.strip() == (
                f"minillm: error: {stopped} is a pipeline run that has not finished (it has no report.json yet): "
                "run its `minillm pipeline` command again, which goes on where it stopped, then compare")


def test_two_pipeline_runs_compare_by_their_figures_settings_and_the_steps_each_trained(tmp_path, capsys):
    tiny = write_pipeline_run(tmp_path / "tiny", 0.2, "ppo-1", 0.625)
    no_kl = write_pipeline_run(tmp_path / "no-kl", 0.0, "ppo-2", 0.63)
    result = compare_runs([tiny, no_kl])
    assert result["figures"] == {"tiny": {"ppo.win_rate_vs_sft": 0.625, "ppo.kl": 0.7,
                                          "ppo.win_rate_by_family.count": 0.625},
                                 "no-kl": {"ppo.win_rate_vs_sft": 0.63, "ppo.kl": 0.5,
                                           "ppo.win_rate_by_family.count": 0.63}}  # times left out
    assert result["differences"] == {"ppo.kl_coef": [0.2, 0.0]} and result["steps_apart"] == ["06_ppo"]
    assert main(["compare", str(tiny), str(no_kl)]) == 0
    out = capsys.readouterr().out
    assert "the other 2 are the same in every run" in out and "steps each run trained on its own: 06_ppo" in out
    assert f"overlay a step's curves: minillm compare {tiny / '06_ppo'} {no_kl / '06_ppo'}" in out
    # the two PPO steps read their own journey's 03_clm: the same setting, in two folders
    assert compare_runs([tiny / "06_ppo", no_kl / "06_ppo"], tmp_path / "steps.png")["differences"] == {}


def test_the_overlay_command_it_suggests_can_be_pasted_when_a_folder_has_a_space(tmp_path, capsys):
    runs = tmp_path / "my runs"
    tiny = write_pipeline_run(runs / "tiny", 0.2, "ppo-1", 0.625)
    no_kl = write_pipeline_run(runs / "no-kl", 0.0, "ppo-2", 0.63)
    assert main(["compare", str(tiny), str(no_kl)]) == 0
    hint = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("overlay a step's curves: "))
    assert shlex.split(hint.removeprefix("overlay a step's curves: ")) == [
        "minillm", "compare", str(tiny / "06_ppo"), str(no_kl / "06_ppo")]


def test_a_folder_read_from_elsewhere_is_a_setting_that_differs(tmp_path):
    a = write_run(tmp_path / "x" / "sft", 1e-3, [2.0, 1.0])
    b = write_run(tmp_path / "y" / "sft", 1e-3, [2.0, 1.0])
    config = json.loads((b / "config.json").read_text(encoding="utf-8"))
    config["run"]["init_dir"] = str(tmp_path / "elsewhere" / "03_clm")  # not beside b: another checkpoint
    (b / "config.json").write_text(json.dumps(config), encoding="utf-8")
    assert compare_runs([a, b], tmp_path / "c.png")["differences"] == {
        "run.init_dir": ["../03_clm", str(tmp_path / "elsewhere" / "03_clm")]}


def test_a_setting_that_is_a_word_is_shown_as_written_when_the_runs_sit_in_the_current_folder(tmp_path,
                                                                                          monkeypatch):
    for name, optimizer in (("a", "adamw"), ("b", "muon")):
        folder = write_run(tmp_path / name, 1e-3, [2.0, 1.0])
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        config["train"]["optimizer"] = optimizer
        (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    monkeypatch.chdir(tmp_path)  # "adamw" resolves to tmp_path/adamw, beside the run folders
    assert compare_runs(["a", "b"], tmp_path / "c.png")["differences"] == {"train.optimizer": ["adamw", "muon"]}


def test_metrics_equal_in_every_run_go_on_one_line_and_the_table_shows_the_last_step(tmp_path):
    a = write_run(tmp_path / "a", 1e-3, [3.0, 2.0, 1.5])
    b = write_run(tmp_path / "b", 3e-3, [3.0, 2.5, 1.5])
    report = compare_runs([a, b], tmp_path / "c.png")["report"]
    assert "the same in every run: loss 1.5, val_loss 2, grad_norm 0.3333\n" in report
    assert report.splitlines()[:4] == ["final values:", "run  step", "a    30  ", "b    30  "]  # lr: no result


def test_a_figure_only_one_pipeline_run_reports_is_a_difference_shown_as_missing(tmp_path):
    tiny = write_pipeline_run(tmp_path / "tiny", 0.2, "ppo-1", 0.625)
    more = write_pipeline_run(tmp_path / "more", 0.2, "ppo-1", 0.625)
    report = json.loads((more / "report.json").read_text(encoding="utf-8"))
    report["stages"]["ppo"]["extra_figure"] = 1.0  # e.g. a figure a later minillm added
    (more / "report.json").write_text(json.dumps(report), encoding="utf-8")
    result = compare_runs([more, tiny])
    assert result["figures"] == {"more": {"ppo.extra_figure": 1.0}, "tiny": {"ppo.extra_figure": None}}
    assert "ppo.extra_figure  1     -" in result["report"] and "the other 5 are the same" in result["report"]


def test_a_setting_at_two_depths_is_shown_at_both_when_they_say_different_things():
    """The longer path is left out only when it repeats the shorter one's values: the reward model's own
    lr inside the run's config is another setting than the loop's lr."""
    runs = [LoggedRun(name, [], {"train": {"lr": lr}, "run": {"reward": {"train": {"lr": rm_lr}}}})
            for name, lr, rm_lr in (("a", 1e-3, 1e-4), ("b", 3e-3, 2e-4))]
    assert config_differences(runs) == {"run.reward.train.lr": [1e-4, 2e-4], "train.lr": [1e-3, 3e-3]}


def test_a_metric_logged_as_a_curve_by_one_run_is_a_curve_and_a_flag_is_no_metric():
    a = [{"step": 1, "val_loss": 2.0, "stopped_early": False}, {"step": 2, "val_loss": 1.0, "stopped_early": False}]
    b = [{"step": 2, "val_loss": 1.5, "stopped_early": True}]  # b logged val_loss once
    runs = [LoggedRun("a", a, {}), LoggedRun("b", b, {})]
    assert shared_metrics(runs) == ["val_loss"]  # True/False is not a number to plot
    assert shared_metrics(runs, curves_only=True) == ["val_loss"]  # a's curve is worth overlaying


def test_a_folder_of_the_same_name_elsewhere_is_not_a_sibling(tmp_path):
    a = write_run(tmp_path / "x" / "sft", 1e-3, [2.0, 1.0])
    b = write_run(tmp_path / "other" / "x" / "sft", 1e-3, [2.0, 1.0])
    config = json.loads((b / "config.json").read_text(encoding="utf-8"))
    config["run"]["init_dir"] = str(tmp_path / "x" / "03_clm")  # a's CLM (folder "x" too), not b's own
    (b / "config.json").write_text(json.dumps(config), encoding="utf-8")
    assert compare_runs([a, b], tmp_path / "c.png")["differences"] == {
        "run.init_dir": ["../03_clm", str(tmp_path / "x" / "03_clm")]}


def test_three_runs_a_metric_that_differs_in_the_middle_one_is_in_the_table(tmp_path):
    runs = [write_run(tmp_path / name, 1e-3, [3.0, 2.0, last]) for name, last in (("a", 1.5), ("b", 1.75), ("c", 1.5))]
    result = compare_runs(runs, tmp_path / "c.png")
    assert [result["final"][name]["loss"] for name in "abc"] == [1.5, 1.75, 1.5]
    assert "the same in every run: grad_norm 0.3333\n" in result["report"]  # loss and val_loss differ
    assert result["report"].splitlines()[1].split() == ["run", "step", "loss", "val_loss"]


def test_three_pipeline_runs_a_step_trained_apart_in_the_last_one_is_named(tmp_path):
    folders = [write_pipeline_run(tmp_path / name, 0.2, ppo_run, 0.625)
               for name, ppo_run in (("a", "ppo-1"), ("b", "ppo-1"), ("c", "ppo-2"))]
    assert compare_runs(folders)["steps_apart"] == ["06_ppo"]


def test_pipeline_runs_that_differ_only_in_their_times_or_sources_have_the_same_figures(tmp_path):
    folders = [write_pipeline_run(tmp_path / name, 0.2, "ppo-1", 0.625) for name in ("fast", "slow")]
    for folder, seconds in zip(folders, (12.5, 30.0), strict=True):  # the machine's speed, not the run's
        report = json.loads((folder / "report.json").read_text(encoding="utf-8"))
        report["stages"]["ppo"].update(seconds=seconds + 1, train_seconds=seconds)
        report["stages"]["dpo"]["copied_from"] = str(folder / "source" / "07_dpo")  # --reuse: no figure either
        (folder / "report.json").write_text(json.dumps(report), encoding="utf-8")
    result = compare_runs(folders)
    assert result["figures"] == {"fast": {}, "slow": {}}
    assert "learning figures that differ:\n(none)\nall 5 are the same in every run" in result["report"]


def test_a_file_inside_a_sibling_step_is_the_same_setting_in_two_journeys(tmp_path):
    """DPO reads its journey's 05_reward_model/prefs.jsonl: two journeys' DPO runs read the same-named
    file of their own sibling step, which is no difference."""
    runs = []
    for journey in ("tiny", "beta"):
        folder = write_run(tmp_path / journey / "07_dpo", 1e-3, [2.0, 1.0])
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        config["run"]["prefs"] = str(tmp_path / journey / "05_reward_model" / "prefs.jsonl")
        (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
        runs.append(folder)
    assert compare_runs(runs, tmp_path / "c.png")["differences"] == {}


def test_figures_that_differ_only_beyond_four_digits_are_printed_differently(tmp_path):
    assert distinct_texts([-0.18961, -0.18964, "-"]) == ["-0.18961", "-0.18964", "-"]
    assert distinct_texts([0.625, 0.625, 2]) == ["0.625", "0.625", "2"]  # equal ones keep 4 digits
    near = distinct_texts([1 / 3, 1 / 3 + 1e-16])  # the last bit of a float64
    assert near[0] != near[1] and [float(t) for t in near] == [1 / 3, 1 / 3 + 1e-16]
    runs = [write_pipeline_run(tmp_path / name, 0.2, "ppo-1", rate) for name, rate in (("a", 0.625), ("b", 0.62504))]
    row = next(line for line in compare_runs(runs)["report"].splitlines()
               if line.startswith("ppo.win_rate_vs_sft "))
    assert row.split() == ["ppo.win_rate_vs_sft", "0.625", "0.62504"]
    a, b = (write_run(tmp_path / name, 1e-3, [2.0, last]) for name, last in (("x", 1.00001), ("y", 1.00002)))
    table = compare_runs([a, b], tmp_path / "d.png")["report"].splitlines()
    assert table[1].split()[:3] == ["run", "step", "loss"] and [line.split()[2] for line in table[2:4]] == [
        "1.00001", "1.00002"]  # a column (one metric's runs) gets the digits it needs


def test_a_curve_ends_at_the_logs_last_value_not_at_the_end_of_run_evaluation(tmp_path, drawn_figures):
    """A CLM run's metrics.jsonl ends with its final evaluation's val_loss (0.664 on every window), at the
    step of the log's last one (0.686 on a few batches): compare drew both, a drop at the curve's end."""
    runs = []
    for name in ("a", "b"):
        folder = write_run(tmp_path / name, 1e-3, [2.0, 1.0])
        rows = [{"step": 1, "split": "val", "val_loss": 0.9}, {"step": 2, "split": "val", "val_loss": 0.686},
                {"step": 2, "split": "final", "val_loss": 0.664, "val_perplexity": 1.94}]
        (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        runs.append(folder)
    result = compare_runs(runs, tmp_path / "c.png")
    [ax] = [ax for ax in drawn_figures[-1].axes if ax.get_visible()]
    assert ax.get_title() == "val_loss" and [list(line.get_ydata()) for line in ax.lines] == [[0.9, 0.686]] * 2
    assert result["final"]["a"]["val_loss"] == 0.664  # the figure compare tabulates is still the final one
    assert curve_rows(rows, "val_perplexity") == rows  # a metric only the final row holds: its one point


def test_the_learning_rate_and_other_bookkeeping_are_named_apart_from_the_final_values(tmp_path):
    """Lesson 11's runs listed "lr 0.0003" under "the same in every run" as if it were their setting: it is
    the cosine's floor at the last step. The machine's speed and the counts of what was read are no results
    either (the settings that make them are compared below)."""
    runs = []
    for name, loss in (("a", 1.5), ("b", 1.25)):
        folder = write_run(tmp_path / name, 3e-3, [2.0, loss])
        final = {"step": 20, "split": "final", "val_loss": loss, "train_tokens": 5120, "samples_per_s": 300.0 + loss,
                 "val_masked_positions": 77}
        with (folder / "metrics.jsonl").open("a", encoding="utf-8") as f:
            f.write(json.dumps({**final, "lr": 3e-4}) + "\n")
        runs.append(folder)
    report = compare_runs(runs, tmp_path / "c.png")["report"]
    final_values = report.split("\n\n")[0].splitlines()
    assert final_values[1].split() == ["run", "step", "loss", "val_loss"]
    assert final_values[4] == "the same in every run: grad_norm 0.5"
    assert final_values[5] == ("left out, as no result of the training: lr (the schedule's learning rate at the "
                               "last step, which the train settings set); samples_per_s (the machine's speed); "
                               "train_tokens, val_masked_positions (how much was read or measured)")
    assert len(final_values) == 6


def ppo_run(folder: Path) -> Path:
    """An online-RL run's folder: its curves, and its stage's settings at the top of config.json."""
    folder.mkdir(parents=True)
    (folder / "metrics.jsonl").write_text(json.dumps({"step": 1, "kl": 0.1, "lr": 1e-4}) + "\n", encoding="utf-8")
    config = {"ppo": {"train": {"lr": 1e-4}, "kl_coef": 0.2}, "sft_dir": str(folder.parent / "04_sft")}
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


def test_runs_of_different_stages_compare_only_the_settings_they_share_and_say_so(tmp_path):
    """A CLM run beside an SFT run listed every setting of either stage, with "-" for the other."""
    sft = write_run(tmp_path / "04_sft", 1e-3, [2.0, 1.0])
    clm = write_run(tmp_path / "03_clm", 3e-3, [2.0, 1.5])
    config = json.loads((clm / "config.json").read_text(encoding="utf-8"))
    config["run"] = {"model": config["model"], "train": config["train"]}  # CLM's run config is its stage's own
    (clm / "config.json").write_text(json.dumps(config), encoding="utf-8")
    ppo = ppo_run(tmp_path / "06_ppo")
    assert [stage_of(load_run(d, "x").config) for d in (clm, sft, ppo)] == ["clm", "sft", "ppo"]
    assert stage_of({}) == ""
    result = compare_runs([clm, sft], tmp_path / "c.png")
    assert result["differences"] == {"train.lr": [3e-3, 1e-3]}  # not run.sft.lora.rank, run.init_dir, run.train.*
    report = result["report"]
    assert report.startswith("these runs are of different stages (03_clm: clm, 04_sft: sft); only the settings "
                             "they share are compared (the 6 that not every run has are left out)\n\nfinal values:")
    assert '"-"' not in report
    same = write_run(tmp_path / "other" / "04_sft", 1e-3, [2.0, 1.0])  # the same stage: no note
    assert compare_runs([sft, same], tmp_path / "c.png")["report"].startswith("final values:")
    report = compare_runs([sft, ppo], tmp_path / "c.png")["report"]
    assert "settings that differ:\n(none among the settings they share)" in report


def with_record(config_path: Path, record: dict | None) -> None:
    """Write `record` into a config.json or inputs.json as minillm's provenance.py does (None: none, as
    a run made before it was recorded)."""
    data = json.loads(config_path.read_text(encoding="utf-8"))
    data.pop("made_by", None)
    config_path.write_text(json.dumps(data if record is None else {**data, "made_by": record}), encoding="utf-8")


RECORD = {"minillm": "0.1.0", "commit": "ca60458f4d1f7d5b", "dirty": False, "torch": "2.6.0", "python": "3.12.3",
          "device": "cpu"}


def test_runs_made_by_different_code_are_named_in_one_line_and_no_setting_differs(tmp_path):
    # after an upgrade, compare showed the same settings for runs whose figures moved with the code
    runs = [write_run(tmp_path / name, 1e-3, [2.0, 1.0]) for name in ("a", "b", "old")]
    with_record(runs[0] / "config.json", RECORD)
    with_record(runs[1] / "config.json", {**RECORD, "device": "cuda:0 (H100)"})  # the same code elsewhere
    result = compare_runs(runs[:2], tmp_path / "c.png")
    assert "made by" not in result["report"] and result["differences"] == {}
    with_record(runs[1] / "config.json", {**RECORD, "commit": "0123456789ab", "dirty": True})
    result = compare_runs(runs, tmp_path / "c.png")  # and a run made before minillm recorded its code
    assert result["differences"] == {}  # the record is no setting
    assert result["report"].splitlines()[0] == (
        "made by different code: a: minillm 0.1.0 (commit ca60458f4d), torch 2.6.0, Python 3.12.3; "
        "b: minillm 0.1.0 (commit 0123456789 with uncommitted changes), torch 2.6.0, Python 3.12.3; "
        "old: unknown code (made before minillm recorded it)")


def test_sft_runs_that_learnt_different_instructions_are_named_in_one_line_and_no_setting_differs(tmp_path,
                                                                                                 monkeypatch):
    """Two SFT runs, one on a file of the learner's and one on the generated suite, were compared as "settings
    that differ: (none: the runs have the same config)": no setting names the instruction file."""
    monkeypatch.setattr(compare, "plot_runs", lambda runs, metrics, path: Path(path))  # (the text alone, in ms)
    records = {"mine": {"file": "/home/me/mine.jsonl", "data_seed": None, "sha256": "9f2c" * 16},
               "suite": {"file": None, "data_seed": 0, "sha256": "41d7" * 16}}
    runs = [write_run(tmp_path / name, 1e-3, [2.0, 1.0]) for name in records]
    for name, record in records.items():
        config = json.loads((tmp_path / name / "config.json").read_text(encoding="utf-8"))
        (tmp_path / name / "config.json").write_text(json.dumps({**config, "instructions": record}), encoding="utf-8")
    result = compare_runs(runs, tmp_path / "c.png")
    assert result["differences"] == {}  # the record is no setting
    assert result["report"].splitlines()[0] == ("read different instructions: mine: the instructions in "
                                                "/home/me/mine.jsonl; suite: the generated suite (data_seed 0)")
    mine = load_run(runs[0], "mine")
    moved = LoggedRun("moved", [], {}, read={"instructions": {**records["mine"], "file": "/home/me/old/mine.jsonl"}})
    clm = LoggedRun("clm", [], {})  # a run that records none
    assert data_note([mine, moved, clm]) == []  # a moved file: the same records
    moved.read["instructions"] = {**records["mine"], "sha256": "0123" * 16}  # the file, edited before the second run
    assert data_note([mine, moved, clm]) == [
        "read different instructions: mine: the instructions in /home/me/mine.jsonl (sha256 9f2c9f2c9f); moved: "
        "the instructions in /home/me/mine.jsonl (sha256 0123012301)"]


def with_data(config_path: Path, **records: dict) -> None:
    """Write the records of the data a run read (key -> record) into its config.json, as the training loop does."""
    data = json.loads(config_path.read_text(encoding="utf-8"))
    config_path.write_text(json.dumps({**data, **records}), encoding="utf-8")


MINE = {"file": "/home/me/mine.jsonl", "data_seed": None, "sha256": "9f2c" * 16}
SUITE = {"file": None, "data_seed": 0, "sha256": "41d7" * 16}
GENERATED = {"file": None, "corpus_mb": 2.0, "data_seed": 0, "val_fraction": 0.05, "sha256": "5b1e" * 16}


def test_runs_of_any_stage_and_journeys_that_read_different_data_are_named_in_one_line_each(tmp_path, monkeypatch):
    """Two PPO runs from one SFT run, with different --data, were compared as "settings that differ: (none: ...)":
    no stage after SFT recorded its instructions, nor pretraining its corpus; and two journeys made with different
    --data named no file at all."""
    monkeypatch.setattr(compare, "plot_runs", lambda runs, metrics, path: Path(path))  # (the text alone, in ms)
    ppo = [ppo_run(tmp_path / name / "06_ppo") for name in ("mine", "suite")]
    with_data(ppo[0] / "config.json", instructions=MINE)
    with_data(ppo[1] / "config.json", instructions=SUITE)
    result = compare_runs(ppo, tmp_path / "c.png")
    assert result["differences"] == {}  # no setting differs
    assert result["report"].splitlines()[0] == (f"read different instructions: {ppo[0]}: the instructions in "
                                                f"/home/me/mine.jsonl; {ppo[1]}: the generated suite (data_seed 0)")
    clm = [write_run(tmp_path / name, 1e-3, [2.0, 1.0]) for name in ("clm_mine", "clm_generated")]
    with_data(clm[0] / "config.json", corpus={**GENERATED, "file": "/home/me/mine.txt", "corpus_mb": None,
                                             "sha256": "e3b0" * 16})
    with_data(clm[1] / "config.json", corpus=GENERATED)
    assert compare_runs(clm, tmp_path / "c.png")["report"].splitlines()[0] == (
        "read different corpora: clm_mine: the corpus in /home/me/mine.txt (data_seed 0, val_fraction 0.05); "
        "clm_generated: the generated corpus (corpus_mb 2.0, data_seed 0, val_fraction 0.05)")
    journeys = [write_pipeline_run(tmp_path / name, 0.2, f"ppo-{name}", 0.6) for name in ("tiny", "tiny_mine")]
    for journey, instructions in zip(journeys, (SUITE, MINE), strict=True):
        (journey / "04_sft").mkdir()
        (journey / "04_sft" / "config.json").write_text(json.dumps({"instructions": instructions}), encoding="utf-8")
        with_data(journey / "06_ppo" / "config.json", instructions=instructions)
    assert compare_pipelines(journeys)["report"].splitlines()[0] == (
        "read different instructions: tiny: the generated suite (data_seed 0); tiny_mine: the instructions in "
        "/home/me/mine.jsonl")


def sft_run(folder: Path, pretrain_mix: float | None, **records: dict) -> LoggedRun:
    """An SFT run with `pretrain_mix` (None: made before the setting existed) and the records of what it read."""
    write_run(folder, 1e-3, [2.0, 1.0])
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    if pretrain_mix is not None:
        config["run"]["sft"]["pretrain_mix"] = pretrain_mix
    (folder / "config.json").write_text(json.dumps({**config, **records}), encoding="utf-8")
    return load_run(folder, folder.name)


def test_an_sft_run_that_replays_no_corpus_read_none_unlike_one_that_replays_one(tmp_path):
    """An SFT run that replays no corpus (sft.pretrain_mix 0) records none, for it read none; beside one that
    replays the corpus, compare drew no "read different corpora" line. Runs made before the records (no
    record of their instructions either) and runs older than the setting are unknown, not "none"."""
    replays = sft_run(tmp_path / "replays", 0.1, instructions=SUITE, corpus=GENERATED)
    plain = sft_run(tmp_path / "plain", 0.0, instructions=SUITE)
    assert data_note([replays, plain]) == [
        "read different corpora: replays: the generated corpus (corpus_mb 2.0, data_seed 0, val_fraction 0.05); "
        "plain: none (sft.pretrain_mix 0: it replays no corpus)"]
    assert data_note([plain, sft_run(tmp_path / "plain_too", 0, instructions=SUITE)]) == []  # both read none
    for older in (sft_run(tmp_path / "before_records", 0.0),
                  sft_run(tmp_path / "before_replay", None, instructions=SUITE),
                  sft_run(tmp_path / "replayed_unrecorded", 0.1, instructions=SUITE)):
        assert data_note([replays, older]) == [] and data_note([plain, older]) == []


def test_runs_given_their_data_in_python_are_named_as_runs_from_a_file_are():
    """Lessons' runs (`train_clm(cfg, tokenizer, train_docs, val_docs, folder)`) recorded no data: two of them on
    different documents, or one against a run of a file, drew no "read different corpora" line. Data given in
    Python is recorded as such (run_data's `data_record`) and named in the same words; a run made before any
    record stays unknown, and the same documents as a file's are the same data."""
    given = corpus_given((["One document."], ["Another one."]))
    lesson = LoggedRun("lesson", [], {}, read={"corpus": given})
    edited = LoggedRun("edited", [], {}, read={"corpus": corpus_given((["One document, edited."], ["Another one."]))})
    assert data_note([lesson, edited]) == [
        f"read different corpora: lesson: the corpus given in Python (2 documents) (sha256 {given['sha256'][:10]}); "
        f"edited: the corpus given in Python (2 documents) (sha256 {edited.read['corpus']['sha256'][:10]})"]
    from_file = LoggedRun("clm", [], {}, read={"corpus": GENERATED})
    assert data_note([lesson, from_file]) == [
        "read different corpora: lesson: the corpus given in Python (2 documents); clm: the generated corpus "
        "(corpus_mb 2.0, data_seed 0, val_fraction 0.05)"]
    same = LoggedRun("same", [], {}, read={"corpus": {**GENERATED, "sha256": given["sha256"]}})  # its documents
    older = LoggedRun("older", [], {})  # made before any record
    assert data_note([lesson, same, older]) == [] and data_note([edited, older]) == []
    # SFT's replayed training documents given in Python hash one split, a file's record both: not comparable
    replay = LoggedRun("lesson_sft", [], {}, read={"corpus": corpus_given((["One document."],))})
    assert data_note([replay, from_file]) == [] and data_note([replay, from_file, lesson]) == []
    assert len(data_note([replay, LoggedRun("x", [], {}, read={"corpus": corpus_given((["Other."],))})])) == 1
    records = [{"prompt": "Where is Vell?", "response": "On the river."}]
    ppo = LoggedRun("ppo", [], {}, read={"instructions": instructions_given(records)})
    assert data_note([ppo, LoggedRun("suite", [], {}, read={"instructions": SUITE})]) == [
        "read different instructions: ppo: the instructions given in Python (1 record); suite: the generated suite "
        "(data_seed 0)"]


def test_pipeline_runs_name_the_code_of_the_steps_each_trained_on_its_own(tmp_path):
    tiny = write_pipeline_run(tmp_path / "tiny", 0.2, "ppo-1", 0.625)  # (its steps: made before records)
    no_kl = write_pipeline_run(tmp_path / "no-kl", 0.0, "ppo-2", 0.63)
    for folder in (tiny, no_kl):  # 07_dpo: copied by --reuse, the same run (and code) in both
        with_record(folder / "07_dpo" / "inputs.json", {**RECORD, "commit": "0123456789ab"})
    with_record(no_kl / "06_ppo" / "inputs.json", RECORD)
    report = compare_pipelines([tiny, no_kl])["report"]
    assert report.splitlines()[0] == ("made by different code: tiny: unknown code (made before minillm recorded it); "
                                      "no-kl: minillm 0.1.0 (commit ca60458f4d), torch 2.6.0, Python 3.12.3")
    with_record(tiny / "06_ppo" / "inputs.json", RECORD)
    assert "made by" not in compare_pipelines([tiny, no_kl])["report"]


def test_a_metric_that_differs_only_in_the_last_of_three_runs_is_not_called_the_same(tmp_path):
    """"the same in every run" must ask every run: a metric that only the last of three runs moved
    would be printed once, with the first run's value, as if the change had done nothing."""
    runs = [write_run(tmp_path / name, 1e-3, [3.0, 2.0, last]) for name, last in (("a", 1.5), ("b", 1.5), ("c", 1.75))]
    result = compare_runs(runs, tmp_path / "c.png")
    assert "the same in every run: grad_norm 0.3333\n" in result["report"]  # loss and val_loss differ in c
    assert result["report"].splitlines()[1].split() == ["run", "step", "loss", "val_loss"]


def test_figures_are_printed_to_four_significant_digits_where_those_tell_them_apart():
    # rounded by hand: 0.123456 is 0.1235 at 4 digits (0.123 at 3); more digits only where 4 print two as one
    assert distinct_texts([0.123456, 0.234567, 7]) == ["0.1235", "0.2346", "7"]
    assert distinct_texts([2.0, 2.0]) == ["2", "2"]


def test_a_run_without_a_config_json_is_compared_on_every_setting_the_other_has(tmp_path):
    """A run folder without config.json (copied without it, say) has no stage: it is no run "of a
    different stage" compared on the settings both have (it has none, so the table would say none
    differ). Every setting of the other run is listed, "-" where this one has none."""
    with_config = write_run(tmp_path / "a", 1e-3, [2.0, 1.0])
    without = write_run(tmp_path / "b", 1e-3, [2.0, 1.0])
    (without / "config.json").unlink()
    result = compare_runs([with_config, without], tmp_path / "c.png")
    assert result["differences"] == {"model.n_layer": [3, "-"], "model_kind": ["gpt", "-"],
                                     "run.init_dir": ["../03_clm", "-"], "run.sft.lora.rank": [0, "-"],
                                     "train.lr": [1e-3, "-"], "train.seed": [1, "-"]}
    assert result["report"].startswith("final values:")  # no line about stages


def test_no_overlay_is_suggested_for_a_step_whose_curves_one_run_lacks(tmp_path):
    """The overlay command compare suggests is pasted as it is: for a step one run has no metrics.jsonl
    of (a folder copied without its log, say) it would only end in "holds no metrics.jsonl rows"."""
    tiny = write_pipeline_run(tmp_path / "tiny", 0.2, "ppo-1", 0.625)
    no_kl = write_pipeline_run(tmp_path / "no-kl", 0.0, "ppo-2", 0.63)
    (no_kl / "06_ppo" / "metrics.jsonl").unlink()
    report = compare_pipelines([tiny, no_kl])["report"]
    assert "steps each run trained on its own: 06_ppo" in report and "overlay" not in report


def test_a_value_that_is_not_a_number_leaves_a_gap_in_its_curve(tmp_path, drawn_figures):
    """A NaN in metrics.jsonl (a loss that overflowed at one step) is skipped, not drawn: matplotlib would
    break the line there and a NaN would set no axis limit, hiding that the log holds a bad value."""
    compare_runs(runs_logging_kl(tmp_path, {"a": [0.0, float("nan"), 0.2], "b": [0.0, 0.1, 0.3]}), tmp_path / "c.png")
    [ax] = [ax for ax in drawn_figures[-1].axes if ax.get_visible()]
    assert [list(line.get_xdata()) for line in ax.lines] == [[1, 3], [1, 2, 3]]
    assert [list(line.get_ydata()) for line in ax.lines] == [[0.0, 0.2], [0.0, 0.1, 0.3]]


def test_nan_prints_as_nan_and_leaves_the_other_floats_of_its_column_their_four_digits(tmp_path):
    """NaN != NaN: two NaNs were two floats that "nan" prints as one, and distinct_texts went on to 17
    digits, the most a float has, printing the column's 0.3 as 0.29999999999999999."""
    assert distinct_texts([float("nan"), float("nan"), 0.3]) == ["nan", "nan", "0.3"]
    # read from metrics.jsonl, every NaN is one float (json's), so a loss that is NaN in every run is the same
    a, b = (write_run(tmp_path / name, 1e-3, [2.0, float("nan")]) for name in ("a", "b"))
    assert "the same in every run: loss nan, val_loss nan, grad_norm 0.5\n" in compare_runs([a, b], tmp_path / "c.png")[
        "report"]


def test_a_run_whose_curve_is_anothers_is_drawn_dashed_over_it_and_its_legend_says_so(tmp_path, monkeypatch):
    """The final values said "the same in every run", and the plot showed one line fewer than there were
    runs: a run whose curve was another's was drawn exactly over it. Each twin is now dashed over the first
    (in a gap of its own: twin_dashes), its legend saying "(same as a)"; the text is as it was."""
    drawn, styled = [], []
    monkeypatch.setattr("minillm.compare.save_figure", lambda fig, path: drawn.append(fig) or Path(path))  # no PNG
    monkeypatch.setattr(compare, "twin_dashes", lambda k, n: styled.append((k, n)) or twin_dashes(k, n))
    kls = {"a": [0.0, 0.1], "b": [0.0, 0.3], "c": [0.0, 0.1], "d": [0.0, 0.1]}
    runs = runs_logging_kl(tmp_path, kls)
    for seconds, run in enumerate(runs, start=1):  # a row holds more than the curve: its time differs in each run
        path = run / "metrics.jsonl"
        rows = [{**json.loads(line), "elapsed_s": seconds} for line in path.read_text(encoding="utf-8").splitlines()]
        path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    report = compare_runs(runs, tmp_path / "c.png")["report"]
    [ax] = [ax for ax in drawn[0].axes if ax.get_visible()]
    assert [line.get_label() for line in ax.lines] == ["a", "b", "c\n(same as a)", "d\n(same as a)"]
    assert [line.get_linestyle() for line in ax.lines] == ["-", "-", "--", "--"]
    assert styled == [(1, 3), (2, 3)]  # c and d: the 1st and 2nd twin of the 3 runs on a's curve
    assert report.startswith("final values:\nrun  step  kl \na    2     0.1\nb    2     0.3\nc    2     0.1\n")


def test_each_run_drawn_on_one_curve_shows_its_colour_where_no_other_does():
    """Of n runs on one curve the first is solid; each other one's dashes (twin_dashes) fall where no other
    twin's do, and some of each period is left to the first: every run's colour is seen along the line."""
    for n in (2, 3, 4):
        styles = [twin_dashes(k, n) for k in range(1, n)]
        [period] = {on + off for _, (on, off) in styles}  # (points) every twin repeats alike
        dashes = [{(i - offset) % period for i in range(on)} for offset, (on, _) in styles]  # points each draws
        assert sum(len(d) for d in dashes) == len(set().union(*dashes)) < period, (n, styles)


def test_a_null_in_metrics_jsonl_is_a_dash_in_the_final_values(tmp_path, monkeypatch):
    """minillm writes null for a value that is no number (utils.json_text: a float16 step the scaler skipped
    logs an infinite gradient norm), where it wrote NaN: the line of final values the same in every run
    formatted it with :.4g, a TypeError, and a table cell read "None"."""
    monkeypatch.setattr("minillm.compare.save_figure", lambda fig, path: Path(path))  # the text alone: no PNG
    same = compare_runs(runs_logging_kl(tmp_path / "same", {"a": [0.0, None], "b": [0.0, None]}), tmp_path / "c.png")
    assert "the same in every run: kl -" in same["report"]
    apart = compare_runs(runs_logging_kl(tmp_path / "apart", {"a": [0.0, 0.2], "b": [0.0, None]}), tmp_path / "c.png")
    assert "\na    2     0.2\nb    2     -  \n" in apart["report"], apart["report"]  # (cells padded to "0.2")
    assert distinct_texts([None, 0, 0.25]) == ["-", "0", "0.25"]  # a 0 is a figure measured


def test_two_journeys_made_in_one_folder_and_compared_from_another_read_the_same_siblings(tmp_path, monkeypatch):
    """`minillm pipeline --out runs/tiny` (and runs/beta) started in tmp_path records SFT's init_dir as
    runs/tiny/03_clm, relative to tmp_path. Compared from tmp_path/runs, that path was read against the
    current folder (runs/runs/tiny/03_clm, beside neither run) and shown as a setting that differs."""
    for journey, read in (("tiny", "runs/tiny/03_clm"), ("beta", "runs/beta/03_clm"), ("gamma", "runs/tiny/03_clm")):
        folder = write_run(tmp_path / "runs" / journey / "04_sft", 1e-3, [2.0, 1.0])
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        config["run"]["init_dir"] = read  # gamma's SFT read tiny's CLM, not its own
        (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    monkeypatch.chdir(tmp_path / "runs")
    assert compare_runs(["tiny/04_sft", "beta/04_sft"], tmp_path / "c.png")["differences"] == {}
    assert compare_runs(["tiny/04_sft", "gamma/04_sft"], tmp_path / "c.png")["differences"] == {
        "run.init_dir": ["../03_clm", "runs/tiny/03_clm"]}
    monkeypatch.chdir(tmp_path)  # where they were made: as before
    assert compare_runs(["runs/tiny/04_sft", "runs/beta/04_sft"], tmp_path / "c.png")["differences"] == {}


def test_runs_made_from_other_runs_of_an_input_named_alike_say_so_in_one_line(tmp_path):
    """Two journeys' PPO runs each read the 04_sft beside them: one setting ("../04_sft"), two SFT runs (told
    apart here by what they logged; in a pipeline by their inputs.json's id). compare said only that the runs
    have the same config, and a learner took their different results for noise."""
    for journey, losses in (("tiny", [2.0, 1.0]), ("beta", [2.0, 1.5]), ("copy", [2.0, 1.0])):
        write_run(tmp_path / journey / "04_sft", 1e-3, losses)
        ppo_run(tmp_path / journey / "06_ppo")
    tiny, beta, copy = (tmp_path.resolve() / journey for journey in ("tiny", "beta", "copy"))
    compared = compare_runs([tiny / "06_ppo", beta / "06_ppo"], tmp_path / "c.png")
    assert compared["differences"] == {}
    assert compared["other_inputs"] == {"sft_dir": [str(tiny / "04_sft"), str(beta / "04_sft")]}
    assert (f"made from different input runs, though their settings name them alike: sft_dir ({tiny / '04_sft'}, "
            f"{beta / '04_sft'})") in compared["report"].splitlines()
    assert compare_runs([tiny / "06_ppo", copy / "06_ppo"], tmp_path / "c.png")["other_inputs"] == {}  # a copy


def test_a_step_reuse_copied_names_the_run_it_read_by_the_first_journeys_path_and_that_is_no_difference(tmp_path):
    """A step that `pipeline --reuse runs/tiny` copies keeps its config.json, which names the SFT run it read
    as runs/tiny/04_sft; the copy's own 04_sft is a copy of that run too (the same inputs.json id). It was
    shown as a setting that differs from runs/tiny's own "../04_sft"."""
    for journey in ("tiny", "no-kl"):
        write_run(tmp_path / journey / "04_sft", 1e-3, [2.0, 1.0 if journey == "tiny" else 1.5])
        inputs = {"id": "sft-1", "settings": {}, "made_from": {}}
        (tmp_path / journey / "04_sft" / "inputs.json").write_text(json.dumps(inputs), encoding="utf-8")
        ppo_run(tmp_path / journey / "06_ppo")
    copied = tmp_path / "no-kl" / "06_ppo" / "config.json"
    copied.write_text(copied.read_text(encoding="utf-8").replace("no-kl", "tiny"), encoding="utf-8")
    compared = compare_runs([tmp_path / "tiny" / "06_ppo", tmp_path / "no-kl" / "06_ppo"], tmp_path / "c.png")
    assert (compared["differences"], compared["other_inputs"]) == ({}, {})


def test_a_file_in_the_run_itself_is_no_input_run_of_its_own(tmp_path, monkeypatch):
    """A reward run reads the prefs.jsonl in its own folder: two journeys' reward runs, ranked alike, were
    said to be "made from different input runs" for it, each run being the input "run" it named. (The runs
    are named as a learner types them, relative to the current folder.)"""
    for journey, losses in (("tiny", [2.0, 1.0]), ("beta", [2.0, 1.5])):
        run = write_run(tmp_path / journey / "05_reward_model", 1e-3, losses)
        ranking = {"prompt": "p", "answers": ["a", "b"], "ranking": [0, 1]}
        (run / "prefs.jsonl").write_text(json.dumps(ranking) + "\n", encoding="utf-8")
        config = json.loads((run / "config.json").read_text(encoding="utf-8"))
        config["run"]["prefs"] = str(run / "prefs.jsonl")
        (run / "config.json").write_text(json.dumps(config), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    compared = compare_runs([f"{j}/05_reward_model" for j in ("tiny", "beta")], tmp_path / "c.png")
    assert compared["other_inputs"] == {} and "made from different input runs" not in compared["report"]


def naming(folder: Path, **paths: Path) -> Path:
    """An online-RL run (`ppo_run`) whose settings name `paths` too (setting -> path)."""
    ppo_run(folder)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    config.update({setting: str(path) for setting, path in paths.items()})
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


def test_a_file_in_another_run_names_that_run_as_an_input(tmp_path):
    """DPO reads the rankings in its journey's 05_reward_model: two journeys' DPO runs name them alike
    ("../05_reward_model/prefs.jsonl"), and were made from different reward runs."""
    prefs = []
    for journey, losses in (("tiny", [2.0, 1.0]), ("beta", [2.0, 1.5])):
        reward = write_run(tmp_path / journey / "05_reward_model", 1e-3, losses)
        prefs.append(reward / "prefs.jsonl")
        prefs[-1].write_text('{"prompt": "p", "answers": ["a", "b"], "ranking": [0, 1]}\n', encoding="utf-8")
        naming(tmp_path / journey / "07_dpo", prefs=prefs[-1])
    runs = [load_run(tmp_path / journey / "07_dpo", journey) for journey in ("tiny", "beta")]
    assert inputs_apart(runs, config_differences(runs)) == {"prefs": [str(path.resolve()) for path in prefs]}


def test_a_path_that_differs_is_a_difference_unless_both_runs_name_one_run(tmp_path):
    """Two paths of one setting are one setting only where both name the same run now (`one_input_run`). A path
    to no run (a corpus, in a folder of the user's), or to a run that is gone, is compared as it is written;
    and a setting that differs is shown in the settings alone, not also among the inputs named alike."""
    sft_a, sft_b = (write_run(tmp_path / name, 1e-3, [2.0, loss]) for name, loss in (("sft_a", 1.0), ("sft_b", 1.5)))
    mine, yours = tmp_path / "mine" / "corpus.txt", tmp_path / "yours" / "corpus.txt"
    for corpus in (mine, yours):
        corpus.parent.mkdir()
        corpus.write_text("A document.\n", encoding="utf-8")
    a = naming(tmp_path / "a" / "06_ppo", sft_dir=sft_a, corpus=mine)
    b = naming(tmp_path / "b" / "06_ppo", sft_dir=sft_b, corpus=yours)
    gone = naming(tmp_path / "c" / "06_ppo", sft_dir=tmp_path / "gone" / "04_sft", corpus=mine)
    for other, differ in ((b, {"corpus": [str(mine), str(yours)], "sft_dir": [str(sft_a), str(sft_b)]}),
                          (gone, {"sft_dir": [str(sft_a), str(tmp_path / "gone" / "04_sft")]})):
        runs = [load_run(a, "a"), load_run(other, "other")]
        assert config_differences(runs) == differ
        assert inputs_apart(runs, differ) == {}


def test_a_step_whose_inputs_json_id_was_edited_into_a_list_is_a_run_of_unknown_inputs(tmp_path, capsys):
    # compare's set of each step's run ids was a TypeError (unhashable type: 'list'), a traceback
    tiny = write_pipeline_run(tmp_path / "tiny", 0.2, "ppo-1", 0.625)
    edited = write_pipeline_run(tmp_path / "edited", 0.2, "ppo-1", 0.625)
    inputs = edited / "06_ppo" / "inputs.json"
    inputs.write_text(json.dumps({**json.loads(inputs.read_text(encoding="utf-8")), "id": ["ppo-1"]}), encoding="utf-8")
    assert main(["compare", str(tiny), str(edited)]) == 0
    assert "steps each run trained on its own: 06_ppo" in capsys.readouterr().out


def test_a_chart_asked_of_pipeline_runs_is_refused_and_runs_without_out_draw_compare_png(tmp_path, capsys,
                                                                                           monkeypatch):
    """`compare runs/tiny runs/no-kl --out c.png` printed the comparison, exited 0 and drew no chart (pipeline
    runs draw none), without a word; the default chart, compare.png, is for run folders only."""
    tiny = write_pipeline_run(tmp_path / "tiny", 0.2, "ppo-1", 0.625)
    no_kl = write_pipeline_run(tmp_path / "no-kl", 0.0, "ppo-2", 0.63)
    chart = tmp_path / "c.png"
    assert main(["compare", str(tiny), str(no_kl), "--out", str(chart)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == (f"minillm: error: --out {chart}: pipeline runs are compared by their reports, with no "
                                 "chart (each step's curves are in its folder); drop --out, or compare two steps' "
                                 "folders for a chart, e.g. runs/a/03_clm runs/b/03_clm\n")
    drawn = []
    monkeypatch.setattr(compare, "plot_runs", lambda runs, metrics, path: drawn.append(path) or Path(path))
    assert main(["compare", str(tiny / "06_ppo"), str(no_kl / "06_ppo")]) == 0
    assert drawn == ["compare.png"] and capsys.readouterr().out.endswith("curves: compare.png\n")


def test_a_chart_inside_one_of_the_runs_compared_is_refused_and_the_runs_files_are_kept(tmp_path, capsys):
    # `--out b/loss.png` wrote the comparison over run b's own loss curve
    a, b = (write_run(tmp_path / name, 1e-3, [2.0, 1.0]) for name in ("a", "b"))
    (b / "loss.png").write_bytes(b"b's own curve")
    assert main(["compare", str(a), str(b), "--out", str(b / "loss.png")]) == 2
    assert f"--out {b / 'loss.png'} lies inside {b}, one of the runs compared" in capsys.readouterr().err
    assert (b / "loss.png").read_bytes() == b"b's own curve"
