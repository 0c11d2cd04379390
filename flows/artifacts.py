"""What a flow run publishes as Prefect artifacts, where people watching it in Prefect's UI look (a run's
Artifacts tab; the Artifacts page keeps each key's latest): the rollout's success by trial, the ratings'
spread and pairs, data set versions and row counts, training per stage, the evaluation with its CIs and the
promotion, and the report.

Artifacts are markdown, and everything put into them is text: model output (reflections), ids, reasons and
numbers alike go through `text`, so a reflection holding `[/INST]`, `<b>` or `|` shows as written.
"""

from __future__ import annotations

import re
import string
from pathlib import Path
from typing import Any

from prefect.artifacts import create_link_artifact, create_markdown_artifact

from retro.train.result import NEXT_STEP

PUNCTUATION = frozenset(string.punctuation)
EXAMPLE_PAIRS = 3  # reward pairs shown in the data sets' artifact
EXAMPLE_CHARS = 240  # of each reflection shown there


def text(value: Any) -> str:
    """Any value as literal markdown on one line: every ASCII punctuation character backslash-escaped
    (CommonMark then never reads it as emphasis, a link, HTML, an entity or a table's `|`), line breaks as ⏎."""
    one_line = re.sub(r"\r\n|\r|\n", " ⏎ ", "" if value is None else str(value))
    return "".join(f"\\{c}" if c in PUNCTUATION else c for c in one_line)


def table(rows: list[dict[str, Any]]) -> str:
    """A markdown table of `rows` (one dict per row, the first row's keys as columns), every cell text."""
    if not rows:
        return "(none)"
    columns = list(rows[0])
    lines = ["| " + " | ".join(text(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(text(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def rounded(value: Any) -> Any:
    return round(value, 4) if isinstance(value, float) else value


def publish_rollout(summary: dict[str, Any]) -> None:
    curve = [{"trial": i, "success rate": rounded(rate)} for i, rate in enumerate(summary["success_by_trial"])]
    written = ", ".join(f"{n} {name}" for name, n in summary["written"].items())
    create_markdown_artifact(
        f"## Rollout {text(summary['run_id'])}\n\nSuccess after each trial (main line):\n\n{table(curve)}\n\n"
        f"New rows: {text(written)}; {text(round(summary.get('tokens_per_second', 0.0), 1))} generated tok/s\n",
        key="rollout", description="success by trial")


def publish_ratings(spread: dict[str, Any], run_id: str, new_ratings: int) -> None:
    rows = [{"": name.replace("_", " "), "value": rounded(value)} for name, value in spread.items()]
    create_markdown_artifact(
        f"## Ratings of run {text(run_id)}\n\n{text(new_ratings)} new ratings tonight. Rating = return of the "
        "trial that tried the reflection minus the failed one's; a failure's branches rated apart give reward "
        f"pairs.\n\n{table(rows)}\n", key="ratings", description="spread and pairs")


def publish_datasets(trained: dict[str, Any], pairs: list[dict[str, Any]]) -> None:
    rows = [{"data set": name, "version": version, "rows": trained["rows"].get(name)}
            for name, version in trained["datasets"].items()]
    examples = [{"chosen (rating)": f"{p['chosen'][:EXAMPLE_CHARS]} ({rounded(p['chosen_rating'])})",
                 "rejected (rating)": f"{p['rejected'][:EXAMPLE_CHARS]} ({rounded(p['rejected_rating'])})"}
                for p in pairs[:EXAMPLE_PAIRS]]
    create_markdown_artifact(
        f"## Data sets at lake snapshot {text(trained['snapshot'])}\n\n{table(rows)}\n\n"
        f"### Reward pairs (first {EXAMPLE_PAIRS})\n\n{table(examples)}\n", key="datasets",
        description="versions and row counts")


def publish_training(trained: dict[str, Any], metrics: dict[str, dict[str, Any]]) -> None:
    """Per stage: the model trained and its final metrics, or why it skipped and what to change."""
    parts = ["## Training"]
    for stage in ("sft", "rm", trained["trainer"]):
        if trained.get(stage):
            values = [{"metric": k, "value": rounded(v)} for k, v in metrics.get(stage, {}).items() if k != "history"]
            parts.append(f"### {text(stage)}: {text(trained[stage])}\n\n{table(values)}")
        else:
            why = trained["skipped"].get(stage, "not trained")
            parts.append(f"### {text(stage)}: skipped\n\n{text(why)}\n\n**What to change:** "
                         f"{text(NEXT_STEP.get(stage, NEXT_STEP['policy']))}")
    parts.append(f"**Candidate tonight:** {text(trained.get('candidate') or 'none, so nothing is evaluated')}")
    create_markdown_artifact("\n\n".join(parts) + "\n", key="training", description="metrics per stage")


def publish_evaluation(comparison: dict[str, Any], table_rows: list[dict[str, Any]]) -> None:
    verdict = "promoted" if comparison["promoted"] else "kept the incumbent"
    create_markdown_artifact(
        f"## Evaluation: {text(verdict)}\n\n{text(comparison['reason'])}\n\nCandidate {text(comparison['candidate'])} "
        f"vs incumbent {text(comparison['incumbent'])} on the same held-out tasks, one reflection per failure; "
        f"95% bootstrap CIs over tasks, differences paired by task:\n\n{table(table_rows)}\n",
        key="evaluation", description="comparison and promotion")


def publish_report(index: Path) -> None:
    create_link_artifact(index.resolve().as_uri(), link_text=str(index), key="report",
                         description="retro report: figures and tables of the whole lake")
