"""`retro report`: one HTML page with PNG figures, drawn from the lake's views (retro/store/views/*.sql).

Figures: success rate after each trial per mode and model version (the paper's main figure, from
`success_by_trial`), arms compared on the same held-out tasks (mean F1 and success per trial with 95%
bootstrap bands, and the paired difference to reflexion: retro/eval/paired.py), rating histograms per
model version (`reflection_quality`), training curves (per-step loss, reward and KL from the history in `model_versions.metrics`), and
the lineage table (`model_lineage`). The curve data is written beside the page as curves.json (the
view's rows) and the comparisons as comparisons.json, so they can be checked and re-plotted.
"""

from __future__ import annotations

import html
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from retro.eval.paired import comparable_groups, compare_arms
from retro.store.lake import Lake

log = logging.getLogger(__name__)

# The training figure's panels: per stage, the key trl logs it under at each step (retro/train/steps.py)
PANELS: dict[str, dict[str, str]] = {
    "loss": {"sft": "loss", "rm": "loss", "ppo": "loss/policy_avg", "grpo": "loss", "rloo": "loss"},
    "reward": {"ppo": "objective/scores", "grpo": "reward", "rloo": "reward"},
    "KL to the reference": {"ppo": "objective/kl", "grpo": "kl", "rloo": "kl"},
}
ACCURACY_KEYS = ("eval/pairwise_accuracy", "eval/accuracy")  # a reward model's held-out accuracy
Series = tuple[list[int], list[float]]  # (steps, values)

CURVES_SQL = """
SELECT run_id, mode, env, split, retro_model_version, trial, n_solved, n_tasks, success_rate
FROM lake.success_by_trial
ORDER BY run_id, trial
"""
RATINGS_SQL = """
SELECT coalesce(model_version, '-') AS model_version, rating
FROM lake.reflection_quality
WHERE rating IS NOT NULL
ORDER BY model_version
"""
MODELS_SQL = "SELECT model_id, stage, metrics FROM lake.model_versions ORDER BY created_at, model_id"
BRANCHES_SQL = """
SELECT run_id, mode, env, max(n_samples) AS reflections_per_failure, count(*) AS failures,
       count(*) FILTER (WHERE NOT all_equal) AS rated_apart, count(*) FILTER (WHERE best_beats_greedy) AS best_beat_sample_0,
       round(avg(spread), 3) AS mean_spread, round(max(spread), 3) AS max_spread
FROM lake.reflection_groups
WHERE n_samples > 1
GROUP BY run_id, mode, env
ORDER BY run_id
"""
LINEAGE_SQL = """
SELECT model_id, stage, parent_model_id, dataset, dataset_version, snapshot_id, row_count, n_runs, promoted
FROM lake.model_lineage
ORDER BY created_at, model_id
"""


@dataclass
class ReportData:
    """Everything the page shows, read from the lake in one connection."""

    curves: pl.DataFrame  # the success_by_trial view's rows, one per run and trial
    ratings: pl.DataFrame
    models: pl.DataFrame
    branches: pl.DataFrame  # per run with several reflections per failure: how far their ratings spread
    lineage: pl.DataFrame
    snapshot: int | None = None  # the lake snapshot these rows were read at
    figures: list[tuple[str, str]] = field(default_factory=list)  # (title, png file name)

    @property
    def empty(self) -> bool:
        return self.curves.is_empty()


def read_report_data(lake: Lake) -> ReportData:
    with lake.connect() as con:
        curves, ratings, models, branches, lineage = (
            con.execute(sql).pl() for sql in (CURVES_SQL, RATINGS_SQL, MODELS_SQL, BRANCHES_SQL, LINEAGE_SQL))
        snapshot = con.execute("SELECT max(snapshot_id) FROM lake.snapshots()").fetchone()[0]
    return ReportData(curves, ratings, models, branches, lineage, snapshot=snapshot)


def mean_curves(curves: pl.DataFrame) -> pl.DataFrame:
    """The plotted series: success rate per trial averaged over the runs of one (env, split, mode, model
    version); splits stay apart, since training-split runs say nothing about held-out success."""
    return (
        curves.with_columns(pl.col("retro_model_version").fill_null("-"))
        .group_by("env", "split", "mode", "retro_model_version", "trial")
        .agg(pl.col("success_rate").mean(), pl.len().alias("n_runs"))
        .sort("env", "split", "mode", "retro_model_version", "trial")
    )


# -- figures -------------------------------------------------------------------------------------------------
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["text.parse_math"] = False  # ids and labels are text: a `$` in one is no formula
    import matplotlib.pyplot as plt

    return plt


def plot_success_curves(curves: pl.DataFrame, path: Path) -> None:
    plt = _pyplot()
    series = mean_curves(curves)
    panels = series.select("env", "split").unique(maintain_order=True).rows()
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
    for ax, (env, split) in zip(axes[0], panels, strict=True):
        for (mode, version), part in series.filter((pl.col("env") == env) & (pl.col("split") == split)).group_by(
                "mode", "retro_model_version", maintain_order=True):
            n_runs = int(part["n_runs"].max())
            ax.plot(part["trial"].to_list(), part["success_rate"].to_list(), marker="o",
                    label=f"{mode} / {version} ({n_runs} run{'s' if n_runs > 1 else ''})")
        ax.set(title=f"{env} / {split}: success rate after each trial", xlabel="trial", ylabel="success rate",
               ylim=(-0.02, 1.02))
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_rating_histograms(ratings: pl.DataFrame, path: Path) -> None:
    plt = _pyplot()
    versions = ratings["model_version"].unique(maintain_order=True).to_list()
    fig, axes = plt.subplots(1, len(versions), figsize=(4 * len(versions), 3.5), squeeze=False, sharey=True)
    low, high = float(ratings["rating"].min()), float(ratings["rating"].max())
    bins = 10 if high > low else 1
    for ax, version in zip(axes[0], versions, strict=True):
        values = ratings.filter(pl.col("model_version") == version)["rating"].to_list()
        ax.hist(values, bins=bins, range=(low - 0.5, high + 0.5) if high == low else (low, high), edgecolor="black")
        ax.set(title=f"{version} ({len(values)} reflections)", xlabel="rating G(k+1) - G(k)")
    axes[0][0].set_ylabel("reflections")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def training_series(models: pl.DataFrame) -> tuple[dict[str, dict[str, Series]], dict[str, float]]:
    """(curves, accuracies): per panel of PANELS, "model_id (stage)" -> (steps, values) from the per-step
    `history` the trainers store in their metrics; and per reward model its held-out accuracy, which is
    measured once, after training."""
    curves: dict[str, dict[str, Series]] = {panel: {} for panel in PANELS}
    accuracies: dict[str, float] = {}
    for model_id, stage, metrics_json in models.select("model_id", "stage", "metrics").iter_rows():
        try:
            metrics: dict[str, Any] = json.loads(metrics_json or "{}")
        except json.JSONDecodeError:
            log.warning("model %s: metrics are not JSON; left out of the training curves", model_id)
            continue
        history = [h for h in metrics.get("history") or [] if isinstance(h, dict)]
        for panel, keys in PANELS.items():
            key = keys.get(stage)
            points = [(h.get("step", i + 1), h[key]) for i, h in enumerate(history)
                      if isinstance(h.get(key), int | float)]
            if points:
                curves[panel][f"{model_id} ({stage})"] = ([int(x) for x, _ in points], [float(y) for _, y in points])
        accuracy = next((metrics[k] for k in ACCURACY_KEYS if isinstance(metrics.get(k), int | float)), None)
        if stage == "rm" and accuracy is not None:
            accuracies[model_id] = float(accuracy)
    return {panel: lines for panel, lines in curves.items() if lines}, accuracies


def plot_training(models: pl.DataFrame, path: Path) -> dict[str, dict[str, int]]:
    """Per-step curves per model version: loss, reward, KL, and the reward models' held-out accuracy. Returns
    what was drawn (panel -> line label -> points); empty (nothing drawn) when no model logged a step."""
    curves, accuracies = training_series(models)
    if not curves and not accuracies:
        return {}
    plt = _pyplot()
    panels = [*curves, *(["reward model held-out accuracy"] if accuracies else [])]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.8), squeeze=False)
    drawn: dict[str, dict[str, int]] = {}
    for ax, panel in zip(axes[0], panels, strict=True):
        if panel in curves:
            for label, (steps, values) in curves[panel].items():
                ax.plot(steps, values, marker=".", label=label)
            ax.set(title=panel, xlabel="step (optimizer update)")
            ax.xaxis.get_major_locator().set_params(integer=True)
        else:
            ax.bar(list(accuracies), list(accuracies.values()), alpha=0.7, label="after training")
            ax.set(title=panel, ylim=(0, 1.02))
            ax.tick_params(axis="x", labelrotation=30)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        drawn[panel] = {line.get_label(): len(line.get_xdata()) for line in ax.get_lines()}
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    if accuracies:
        drawn["reward model held-out accuracy"] = {m: 1 for m in accuracies}
    return drawn


def plot_comparison(table: pl.DataFrame, title: str, path: Path) -> None:
    """Mean F1 and success per trial per arm, each with its 95% bootstrap band over tasks."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for ax, metric, label in ((axes[0], "f1", "mean F1"), (axes[1], "success", "success rate")):
        for arm, part in table.group_by("arm", maintain_order=True):
            x = part["trial"].to_list()
            ax.plot(x, part[metric].to_list(), marker="o", label=arm[0])
            ax.fill_between(x, part[f"{metric}_lo"].to_list(), part[f"{metric}_hi"].to_list(), alpha=0.15)
        ax.set(title=f"{title}: {label}", xlabel="trial", ylabel=label)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def comparison_table(table: pl.DataFrame, baseline: str = "reflexion") -> pl.DataFrame:
    """The pasteable table: per arm and trial, F1 and success with CIs, and the difference to the baseline arm."""
    def ci(metric: str) -> pl.Expr:
        return pl.format("{} [{}, {}]", *(pl.col(c).round(3) for c in (metric, f"{metric}_lo", f"{metric}_hi")))

    columns = [pl.col("arm"), pl.col("trial"), ci("f1").alias("F1 [95% CI]"), ci("success").alias("success [95% CI]")]
    if "d_f1" in table.columns:
        columns += [ci("d_f1").alias(f"F1 - {baseline}"), ci("d_success").alias(f"success - {baseline}")]
    return table.select(columns)


# -- page ------------------------------------------------------------------------------------------------------
def frame_html(df: pl.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in df.columns)
    rows = "".join(
        "<tr>" + "".join(f"<td>{'' if v is None else html.escape(str(v))}</td>" for v in row) + "</tr>"
        for row in df.iter_rows()
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>retroformer report</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}img{{max-width:100%}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:2px 8px;font-size:90%}}</style>
</head><body>
<h1>retroformer report</h1>
<p>Lake: {lake} &middot; snapshot {snapshot}</p>
{body}
</body></html>
"""


def write_report(lake: Lake, out_dir: Path | str) -> Path:
    """Write index.html, the PNGs and curves.json into `out_dir`; returns the path of index.html."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = read_report_data(lake)
    (out / "curves.json").write_text(json.dumps(data.curves.to_dicts(), indent=1, default=str))
    sections: list[str] = []

    def figure(title: str, name: str) -> None:
        data.figures.append((title, name))
        sections.append(f"<h2>{html.escape(title)}</h2><img src='{name}' alt='{html.escape(title)}'>")

    if data.empty:
        sections.append("<p><b>No runs yet.</b> Start one with <code>retro rollout</code>, then rerun <code>retro report</code>.</p>")
    else:
        plot_success_curves(data.curves, out / "success_by_trial.png")
        figure("Success rate after each trial, per mode and model version", "success_by_trial.png")
        sections.append(frame_html(mean_curves(data.curves)))
    comparisons = {}
    for n, (name, arms) in enumerate(comparable_groups(lake).items()):
        table = compare_arms(lake, arms)
        comparisons[name] = table.to_dicts()
        plot_comparison(table, name, out / f"comparison_{n}.png")
        figure(f"Arms on the same held-out tasks: {name}", f"comparison_{n}.png")
        sections.append(frame_html(comparison_table(table)))
    (out / "comparisons.json").write_text(json.dumps(comparisons, indent=1, default=str))
    if not data.ratings.is_empty():
        plot_rating_histograms(data.ratings, out / "ratings.png")
        figure("Reflection ratings per model version", "ratings.png")
    if not data.branches.is_empty():
        sections.append("<h2>Branches: several reflections per failure, each tried by its own trial</h2>"
                        "<p>rated_apart: failures whose reflections got different ratings (pairs for the reward model); "
                        "best_beat_sample_0: the best of them beat the retrospective model's own (sample 0).</p>")
        sections.append(frame_html(data.branches))
    if plot_training(data.models, out / "training.png"):
        figure("Training per step: loss, reward and KL per model version; reward models' held-out accuracy",
               "training.png")
    sections.append("<h2>Model lineage</h2>")
    sections.append(frame_html(data.lineage) if not data.lineage.is_empty() else "<p>No trained adapters yet.</p>")
    index = out / "index.html"
    index.write_text(PAGE.format(lake=html.escape(lake.catalog), snapshot=data.snapshot, body="\n".join(sections)))
    log.info("report: %s (%d figures)", index, len(data.figures))
    return index
