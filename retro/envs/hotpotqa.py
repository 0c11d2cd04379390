"""HotPotQA as ReAct plays it (Search / Lookup / Finish), on a closed corpus with no network.

Splits: `eval` is the 100 hard questions Reflexion and Retroformer report on (held out: never train on
it); `train` is 98 further dev questions for training rollouts. Search answers from the local Wikipedia
(`retro.envs.wiki`); Finish scores the answer by exact match after SQuAD normalisation (the paper's
return), or by token F1 when `rollout.hotpotqa_return = "f1"` gives a small actor a denser signal.
More splits come from settings: `rollout.hotpotqa_splits = {name: file.jsonl}`, each a file in HotPotQA's
format whose own `context` paragraphs are its corpus (so adding one leaves the shipped splits' as it was).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from retro.config import DATASETS_DIR, Settings
from retro.envs.actions import BracketActions, bracket_forms
from retro.envs.base import ActionSpace, StepResult, Task
from retro.envs.text import exact_match, f1_score
from retro.envs.wiki import Page, Wiki
from retro.errors import DataError, UnknownEnvError

DATA_DIR = DATASETS_DIR / "hotpotqa"
SPLIT_FILES = {"eval": "eval_reflexion100.jsonl", "train": "train_dev_first100.jsonl"}
TASK_FIELDS = ("id", "question", "answer", "context")  # required in every line
METADATA_FIELDS = ("type", "level", "supporting_facts")  # kept where present
MAX_STEPS = 7  # ReAct's HotPotQA agent stopped after 7 steps

ACTION_HELP = """\
Answer a question by interleaving Thought, Action and Observation steps. A Thought reasons about what is
known so far and what to find next. An Action is one of three:
(1) Search[entity]: look the entity up in the encyclopaedia. If a page has exactly that title you get its
paragraph; if not, you get a few similar titles that you can search next.
(2) Lookup[keyword]: show the next sentence containing keyword in the paragraph found by the last Search.
(3) Finish[answer]: give the final answer (a short phrase, a name, a date, yes or no) and end the task.
Search the entities the question names, follow what their paragraphs point to, and finish with the answer
only once the paragraphs support it."""

INVALID = (
    "Invalid action: {action!r}. Valid actions are Search[<topic>], Lookup[<keyword>], Finish[<answer>]."
)
NO_ACTION = "Invalid action: write one action: Search[<topic>], Lookup[<keyword>] or Finish[<answer>]."
OVER = "The episode is over: reset it to try again."
NO_PAGE = "There is no paragraph to look in yet: Search[<topic>] first."
ACTIONS = bracket_forms("Search", "Lookup", "Finish")  # at every step (a Lookup before any Search is answered)

# "Action 2: search[ X ]." -> ("search", "X"): small models add labels, odd case and a full stop.
_ACTION = re.compile(
    r"^\s*(?:action\s*\d*\s*:)?\s*(search|lookup|finish)\s*\[(.*)\]\s*\.?\s*$", re.IGNORECASE | re.DOTALL
)


def parse_action(text: str) -> tuple[str, str] | None:
    """(verb, argument) of a well-formed action, verb lower-cased; None when malformed."""
    match = _ACTION.match(text)
    if match is None:
        return None
    verb, arg = match.group(1).lower(), " ".join(match.group(2).split())
    if not arg and verb != "finish":
        return None
    return verb, arg


class HotpotQAEpisode:
    """One trial: the page last found and the Lookup cursor are the only state besides `done`."""

    def __init__(self, task: Task, wiki: Wiki, return_metric: str):
        self.task, self.wiki, self.return_metric = task, wiki, return_metric
        self.reset()

    def reset(self) -> str:
        self.page: Page | None = None
        self.keyword: str | None = None
        self.hits: list[str] = []
        self.cursor = 0
        self.done = False
        return f"Question: {self.task.question}"

    def step(self, action: str) -> StepResult:
        if self.done:
            return StepResult(OVER, 0.0, True, {"invalid": True})
        parsed = parse_action(action)
        if parsed is None:
            return StepResult(INVALID.format(action=action.strip()), 0.0, False, {"invalid": True})
        verb, arg = parsed
        if verb == "finish":
            return self._finish(arg)
        observation = self._search(arg) if verb == "search" else self._lookup(arg)
        return StepResult(observation, 0.0, False, {"invalid": False})

    def actions(self) -> ActionSpace:
        """The three verbs, each with free text: the same at every step."""
        return ACTIONS

    def _search(self, entity: str) -> str:
        self.page, self.keyword, self.hits, self.cursor = self.wiki.page(entity), None, [], 0
        if self.page is None:
            return f"Could not find {entity}. Similar: {self.wiki.similar(entity)}."
        return self.page.text

    def _lookup(self, keyword: str) -> str:
        if self.page is None:
            return NO_PAGE
        if keyword.lower() != self.keyword:
            self.keyword, self.cursor = keyword.lower(), 0
            self.hits = [s for s in self.page.sentences if self.keyword in s.lower()]
        if self.cursor >= len(self.hits):
            return "No more results."
        self.cursor += 1
        return f"(Result {self.cursor} / {len(self.hits)}) {self.hits[self.cursor - 1]}"

    def _finish(self, answer: str) -> StepResult:
        self.done = True
        em, f1 = exact_match(answer, self.task.answer), f1_score(answer, self.task.answer)
        reward = f1 if self.return_metric == "f1" else em
        observation = "Answer is CORRECT" if em == 1.0 else "Answer is INCORRECT"
        info = {"invalid": False, "success": em == 1.0, "em": em, "f1": f1, "score": f1, "answer": answer}
        return StepResult(observation, reward, True, info)

    def close(self) -> None:
        """Nothing to release: the corpus connection belongs to the environment."""


class HotpotQA(BracketActions):
    """The environment: tasks from JSONL files; the shipped splits share one read-only corpus, and each
    split added by settings has its own."""

    name = "hotpotqa"
    action_help = ACTION_HELP
    invalid_action = NO_ACTION
    max_steps = MAX_STEPS
    held_out_split = "eval"
    reflection_tokens = 96  # a root cause and a plan in two or three sentences

    def __init__(self, settings: Settings, data_dir: Path | None = None):
        self.settings = settings
        self.data_dir = Path(data_dir or DATA_DIR)
        shipped = {split: self.data_dir / name for split, name in SPLIT_FILES.items()}
        self.custom = {split: Path(path) for split, path in settings.rollout.hotpotqa_splits.items()}
        self.wiki = Wiki(list(shipped.values()), settings.cache_dir / "hotpotqa")
        self.files = {**shipped, **self.custom}
        self.wikis = {split: self.wiki for split in shipped if split not in self.custom}
        self._tasks: dict[str, list[Task]] = {}
        self._few_shot: str | None = None

    def splits(self) -> dict[str, int]:
        return {split: len(self.load_tasks(split)) for split in self.files}

    def load_tasks(self, split: str) -> list[Task]:
        if split not in self.files:
            raise UnknownEnvError(f"hotpotqa has no split '{split}': choose one of {', '.join(self.files)}, "
                                  "or add one with the setting rollout.hotpotqa_splits")
        if split not in self._tasks:
            self._tasks[split] = _read_tasks(self.files[split], split, split not in self.custom)
        return self._tasks[split]

    def wiki_for(self, split: str) -> Wiki:
        """The corpus a split's questions search: the shipped one, or the split file's own paragraphs."""
        if split not in self.wikis:  # a folder per corpus: a Wiki removes other corpora from its folder
            self.load_tasks(split)
            folder = self.settings.cache_dir / "hotpotqa" / f"split-{split}"
            self.wikis[split] = Wiki([self.files[split]], folder)
        return self.wikis[split]

    def few_shot(self, task: Task | None = None) -> str:
        """Worked examples from train questions' gold paths, played for real (the same for every task)."""
        if self._few_shot is None:
            from retro.envs.fewshot import hotpotqa_examples

            self._few_shot = hotpotqa_examples(self, self.load_tasks("train"))
        return self._few_shot

    def start(self, task: Task) -> HotpotQAEpisode:
        return HotpotQAEpisode(task, self.wiki_for(task.split), self.settings.rollout.hotpotqa_return)

    def close(self) -> None:
        for wiki in {id(w): w for w in self.wikis.values()}.values():
            wiki.close()


def _read_tasks(path: Path, split: str, shipped: bool) -> list[Task]:
    fix = "restore the shipped file" if shipped else "fix the file or the setting rollout.hotpotqa_splits"
    if not path.exists():
        where = "restore datasets/hotpotqa/ from the repository" if shipped else fix
        raise DataError(f"HotPotQA data file missing: {path}; {where}")
    tasks = []
    for n, raw in enumerate(path.read_bytes().splitlines(), start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise DataError(f"{path}:{n} is not UTF-8: {fix}") from None
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        if not isinstance(row, dict):
            raise DataError(f"{path}:{n} is not a HotPotQA record: {fix}")
        absent = next((key for key in TASK_FIELDS if key not in row), None)
        if absent is not None:  # name the field: "not a record" alone leaves the user guessing
            needed = ", ".join(TASK_FIELDS)
            raise DataError(f"{path}:{n} has no field '{absent}': {fix} (each line needs {needed})")
        if not isinstance(row["answer"], str | int | float) or not str(row["answer"]).strip():
            raise DataError(f"{path}:{n} has no answer (got {row['answer']!r}): {fix}")
        metadata = {key: row[key] for key in METADATA_FIELDS if key in row}
        tasks.append(Task("hotpotqa", split, str(row["id"]), row["question"], str(row["answer"]), metadata))
    return sorted(tasks, key=lambda t: t.task_id)


__all__ = ["ACTION_HELP", "HotpotQA", "HotpotQAEpisode", "parse_action"]
