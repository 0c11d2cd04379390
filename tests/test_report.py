"""`retro report` on a lake filled by scripted rollouts (shared with test_views), and on an empty lake."""

from __future__ import annotations

import json

from test_views import filled  # noqa: F401  (fixture: the scripted-rollout lake)
from typer.testing import CliRunner

from retro.eval.report import mean_curves, read_report_data, training_series, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_report_writes_html_pngs_and_the_views_curve_data(filled, tmp_path):  # noqa: F811
    index = write_report(filled, tmp_path / "report")
    out = index.parent
    assert index.name == "index.html"
    page = index.read_text()
    for png in ("success_by_trial.png", "ratings.png", "training.png"):
        assert (out / png).read_bytes().startswith(PNG_MAGIC) and (out / png).stat().st_size > 5000
        assert f"src='{png}'" in page
    assert "ppo-001" in page and "sft-001" in page  # the lineage table
    view = filled.read("SELECT run_id, mode, env, split, retro_model_version, trial, n_solved, n_tasks, success_rate "
                       "FROM lake.success_by_trial ORDER BY run_id, trial")
    curves = json.loads((out / "curves.json").read_text())
    assert curves == view.to_dicts()
    # the plotted series average the view's rows per mode and model version
    series = mean_curves(view)
    by_mode = {m: part["success_rate"].to_list() for (m,), part in series.group_by("mode", maintain_order=True)}
    assert by_mode == {"react": [0.0, 0.0, 0.0], "reflexion": [0.0, 0.5, 0.5], "retroformer": [0.0, 1.0, 1.0]}


def test_training_series_reads_the_per_step_history(filled):  # noqa: F811
    curves, accuracies = training_series(read_report_data(filled).models)
    assert curves == {"reward": {"ppo-001 (ppo)": ([1, 2, 3], [0.1, 0.4, 0.7])},
                      "KL to the reference": {"ppo-001 (ppo)": ([1, 2, 3], [0.0, 0.02, 0.05])}}
    assert accuracies == {}  # sft-001 logged no step, and there is no reward model


def test_the_training_figure_draws_a_line_per_model_version_and_stage(tmp_path):
    """SFT and reward-model loss, PPO reward and KL, GRPO reward: one line each, a point per logged step."""
    import polars as pl

    from retro.eval.report import plot_training

    def history(**series):
        return [{"step": i + 1, **{k.replace("__", "/"): v[i] for k, v in series.items()}}
                for i in range(len(next(iter(series.values()))))]

    models = pl.DataFrame({"model_id": ["sft-a", "rm-b", "ppo-c", "grpo-d", "sft-old"],
                           "stage": ["sft", "rm", "ppo", "grpo", "sft"],
                           "metrics": [json.dumps(m) for m in (
                               {"history": history(loss=[2.0, 1.5, 1.2])},
                               {"history": history(loss=[0.7, 0.6]), "eval/pairwise_accuracy": 0.75},
                               {"history": history(objective__scores=[0.1, 0.3], objective__kl=[0.0, 0.01],
                                                   loss__policy_avg=[0.2, 0.1])},
                               {"history": history(reward=[0.5, 0.6, 0.9], kl=[0.0, 0.1, 0.2], loss=[0.0, 0.0, 0.0])},
                               {"train/loss": 1.0})]})  # stored before histories were: nothing to draw
    drawn = plot_training(models, tmp_path / "training.png")
    assert (tmp_path / "training.png").read_bytes().startswith(PNG_MAGIC)
    assert drawn == {
        "loss": {"sft-a (sft)": 3, "rm-b (rm)": 2, "ppo-c (ppo)": 2, "grpo-d (grpo)": 3},
        "reward": {"ppo-c (ppo)": 2, "grpo-d (grpo)": 3},
        "KL to the reference": {"ppo-c (ppo)": 2, "grpo-d (grpo)": 3},
        "reward model held-out accuracy": {"rm-b": 1},
    }


def test_retro_report_on_an_empty_lake_says_no_runs_yet(lake, tmp_path):
    from retro.cli import app

    result = CliRunner().invoke(app, ["report", "--out", str(tmp_path / "empty")])
    assert result.exit_code == 0, result.output
    index = tmp_path / "empty" / "index.html"
    assert "No runs yet" in index.read_text() and "No trained adapters yet" in index.read_text()
    assert not list(index.parent.glob("*.png"))
    assert json.loads((index.parent / "curves.json").read_text()) == []


def test_curves_keep_the_splits_apart():
    import polars as pl

    view = pl.DataFrame({"run_id": ["a", "a", "b", "b"], "mode": ["reflexion"] * 4, "env": ["hotpotqa"] * 4,
                         "split": ["train", "train", "eval", "eval"], "retro_model_version": ["base"] * 4,
                         "trial": [0, 1, 0, 1], "success_rate": [0.0, 0.0, 0.0, 0.25]})
    series = mean_curves(view)
    by_split = {s: part["success_rate"].to_list() for (s,), part in series.group_by("split", maintain_order=True)}
    assert by_split == {"eval": [0.0, 0.25], "train": [0.0, 0.0]}  # not averaged into 0.125


def test_figure_labels_are_text_never_math(tmp_path):
    """A run or model id is drawn as written: `$\\foo$` in one is no formula (mathtext would refuse it)."""
    from retro.eval.report import _pyplot

    plt = _pyplot()
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1], label="ppo-$\\notacommand{$ [/INST]")
    ax.set_title("run $x^$")
    ax.legend()
    fig.savefig(tmp_path / "f.png")
    plt.close(fig)
    assert (tmp_path / "f.png").stat().st_size > 0
