"""The environment protocol: tasks of a split, its own action syntax, and episodes that take actions.

An environment knows nothing of LLMs: it reads an action out of the actor's line of text (HotPotQA's
`Search[x]`, ALFWorld's `go to desk 1`), answers an action with an observation, a reward and whether the
episode is over, and says how many steps a trial gets. Malformed actions are observations
("Invalid action ..."), never exceptions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class Task:
    """One task of a split; `question` is what the actor is asked, `answer` the gold (path) for scoring."""

    env: str
    split: str
    task_id: str
    question: str
    answer: str
    metadata: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


@dataclass
class StepResult:
    observation: str
    reward: float  # on the terminal step: the episode return G
    done: bool
    info: dict[str, Any] = field(default_factory=dict)  # "success": bool, "score": float, "invalid": bool


@dataclass(frozen=True)
class ActionSpace:
    """The actions that exist at one step, in the environment's own syntax, knowing nothing of LLMs.

    `choices` are whole actions (ALFWorld's `go to desk 1`, WebShop's `click[buy now]`); `forms` are actions
    with free text inside, as (prefix, suffix) pairs: `("Search[", "]")` is `Search[` + text + `]`, the text
    being one line with at least one letter or digit and none of the suffix's characters or `text_excludes`
    (a bracket syntax reads no bracket inside its argument). An empty space (no choice, no form) means no
    action is possible now.
    """

    choices: tuple[str, ...] = ()
    forms: tuple[tuple[str, str], ...] = ()
    text_excludes: str = ""  # characters no form's text may hold, besides a newline and its suffix's

    @property
    def empty(self) -> bool:
        return not self.choices and not self.forms


class Episode(Protocol):
    """One trial of one task: its own state, so many can run side by side in a batched runner.

    An episode may also have `actions() -> ActionSpace | None`: the actions that exist at this step (None,
    or no such method: any text is tried, nothing is constrained)."""

    def reset(self) -> str:
        """Start (or restart) the task and return the first observation (the task statement)."""

    def step(self, action: str) -> StepResult: ...

    def close(self) -> None: ...


DEFAULT_HELD_OUT_SPLIT = "eval"  # of an environment that declares none
DEFAULT_REFLECTION_TOKENS = 96  # the reflection budget of an environment that declares none


def own_held_out_split(env: object) -> str:
    """The held-out split an environment (class or instance) declares, else DEFAULT_HELD_OUT_SPLIT: one rule
    for where evaluations run, which tasks are recorded as held out, and what data sets leave out."""
    return getattr(env, "held_out_split", DEFAULT_HELD_OUT_SPLIT)


def own_reflection_tokens(env: object) -> int:
    """The reflection budget an environment (class or instance) declares, else DEFAULT_REFLECTION_TOKENS."""
    return getattr(env, "reflection_tokens", DEFAULT_REFLECTION_TOKENS)


def reflection_tokens(settings_value: int | None, envs: list[object]) -> int:
    """New tokens a reflection may have: the setting (retrospective.max_new_tokens) when set, else the largest
    budget of these environments (training pools several)."""
    return settings_value or max((own_reflection_tokens(env) for env in envs), default=DEFAULT_REFLECTION_TOKENS)


class Environment(Protocol):
    name: str
    action_help: str  # the actor's instruction: what actions exist and what they do
    invalid_action: str  # the observation for a line that holds no action: names the real action forms
    max_steps: int  # actor steps per trial unless settings rollout.max_steps says otherwise
    held_out_split: str  # for evaluation only, never training data (recorded as tasks.held_out)
    reflection_tokens: int  # how long a reflection may be unless settings retrospective.max_new_tokens says

    def parse_action(self, text: str) -> str | None:
        """The action in one line the actor wrote, normalised as `step` takes it; None when it holds none."""

    def splits(self) -> dict[str, int]:
        """Split name -> number of tasks."""

    def load_tasks(self, split: str) -> list[Task]:
        """Every task of a split, sorted by task_id (raises UnknownEnvError for an unknown split)."""

    def few_shot(self, task: Task | None = None) -> str:
        """Worked examples for the actor prompt, written by the program (not copied); `task` lets an
        environment pick examples like the task (ALFWorld: the same task type)."""

    def start(self, task: Task) -> Episode: ...
