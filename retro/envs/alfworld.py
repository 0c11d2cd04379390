"""ALFWorld (TextWorld household games) through the real `alfworld` package, on the shipped game files.

The games ship as `datasets/alfworld/SPLIT.tar.xz`; each split is unpacked on first use into
`$RETRO_HOME/cache/alfworld/json_2.1.1/SPLIT/<task>/<trial>/game.tw-pddl` (into a temporary folder, then
renamed, with a stamp of the archive's hash so a changed archive is unpacked again). Listing tasks reads
only the JSON of each game (goal and walkthrough); loading a playable game costs about a second, so it
happens in `Episode.reset`, once per episode. valid_unseen (134 games) is the held-out split the papers
report on; train (3,553) is for training rollouts and few-shot examples. More splits come from settings:
`rollout.alfworld_splits = {name: folder}`, a folder of `<task>/<trial>/game.tw-pddl` (as ALFWorld's own
download lays out json_2.1.1/<split>/), played where it is.

Actions are the games' plain commands (`go to desk 1`, `take apple 1 from countertop 2`), read out of
the actor's line by the command grammar of ALFWorld's games (alfworld/data/alfred.twl2).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import re
import shutil
import sys
import tarfile
from pathlib import Path
from typing import Any

from retro.config import DATASETS_DIR, Settings
from retro.envs.base import ActionSpace, StepResult, Task
from retro.envs.fewshot import (
    alfworld_plan,
    detour_places,
    empty_handed,
    example_candidates,
    first_target,
    play,
    render,
    varied,
)
from retro.errors import DataError, UnknownEnvError

DATA_DIR = DATASETS_DIR / "alfworld"
SHIPPED_SPLITS = ("valid_unseen", "valid_train", "train")  # datasets/alfworld/<split>.tar.xz
GAME_FILE = "game.tw-pddl"
# ALFWorld's six task types, by the prefix of a task folder's name.
TASK_TYPES = {
    "pick_and_place_simple": "pick_and_place",
    "pick_clean_then_place_in_recep": "pick_clean_then_place",
    "pick_heat_then_place_in_recep": "pick_heat_then_place",
    "pick_cool_then_place_in_recep": "pick_cool_then_place",
    "look_at_obj_in_light": "look_at_obj_in_light",
    "pick_two_obj_and_place": "pick_two_obj_and_place",
}
MAX_STEPS = 50  # ReAct's and Reflexion's ALFWorld agents stopped after 50 steps
FEW_SHOT_VERSION = "v2"  # bump when the example templates change: it keys the cached text
FEW_SHOT_GAMES = 2  # examples per prompt, all of the current task's type (ReAct used two)
FEW_SHOT_MAX_STEPS = 10  # prefer short walkthroughs: examples must fit a small model's context
FEW_SHOT_SEED = 0  # which train games become the examples
TRANSLATIONS_KEPT = 64  # PDDL->SAS translations cached per process (2 per game, about 2.3 MB each)

WELCOME = "-= Welcome to TextWorld, ALFRED! =-"
OVER = "The episode is over: reset it to play again."
INSTALL_HINT = "run `just setup` (or pip install 'retroformer[alfworld]')"
ACTION_HELP = """\
Interact with a household to solve a task, by interleaving Thought, Action and Observation steps. A
Thought reasons about where things may be and what to do next. An Action is one text command:
go to {recep}, open {recep}, close {recep}, take {obj} from {recep}, move {obj} to {recep},
examine {something}, use {obj}, heat {obj} with {recep}, cool {obj} with {recep},
clean {obj} with {recep}, look, inventory.
Objects and receptacles are named with a number, as the observations show them (e.g. "apple 1",
"countertop 2"). A command that does not apply gives "Nothing happens." Finish by doing what the task says."""
NO_COMMAND = (  # placeholders, not examples: a small actor copies any concrete command it is shown
    "Invalid action: write one command: go to <place>, open <place>, close <place>, take <object> from <place>, "
    "move <object> to <place>, heat/cool/clean <object> with <place>, use <object>, examine <object>, look, "
    "inventory; every object and place is named with its number, as the observations show them."
)

_GOAL = re.compile(r"Your task is to: ([^\"\\]*)")
_LABEL = re.compile(r"^\s*(?:action\s*\d*\s*:|>)\s*", re.IGNORECASE)
_ARTICLE = re.compile(r"\b(?:the|a|an) (?=[a-z]+ \d)")  # "take the apple 1": names never hold an article
_PUT = re.compile(r"^put (.+?) (?:in|on|in/on|into|onto) (.+)$")  # ReAct's wording of "move X to Y"
# The command templates of alfred.twl2; every object and receptacle is a type and a number ("desk 1").
_NAME = r"[a-z]+ \d+"
_COMMAND = re.compile(
    rf"\b(?:go to {_NAME}|(?:open|close|examine|use) {_NAME}|take {_NAME} from {_NAME}"
    rf"|move {_NAME} to {_NAME}|put {_NAME} (?:in/on|into|in|onto|on) {_NAME}"
    rf"|(?:heat|cool|clean|slice) {_NAME} with {_NAME})(?!\w)"
)
_BARE_COMMANDS = ("look", "inventory", "help")  # only as the whole line: "look" in a sentence is no command


def require_alfworld() -> None:
    """Fail early, in one line, when the optional `alfworld` package is missing."""
    for module in ("alfworld", "textworld"):
        if importlib.util.find_spec(module) is None:
            raise UnknownEnvError(f"environment 'alfworld' needs the {module} package: {INSTALL_HINT}")


def file_key(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def unpack_split(archive: Path, root: Path, split: str) -> Path:
    """Unpack one split's archive under `root` unless already there for this archive; return its folder."""
    final = root / "json_2.1.1" / split
    stamp = final / ".source"
    key = file_key(archive)
    if stamp.exists() and stamp.read_text() == key:
        return final
    tmp = root / f".unpack-{split}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    with tarfile.open(archive) as tar:
        tar.extractall(tmp, filter="data")
    unpacked = tmp / "json_2.1.1" / split
    if not unpacked.is_dir():
        shutil.rmtree(tmp, ignore_errors=True)
        raise DataError(f"{archive} holds no json_2.1.1/{split}/ folder: restore the shipped archive")
    (unpacked / ".source").write_text(key)
    if final.exists():  # an older archive's games: move aside, then drop
        old = root / f".old-{split}-{os.getpid()}"
        final.rename(old)
        shutil.rmtree(old, ignore_errors=True)
    final.parent.mkdir(parents=True, exist_ok=True)
    try:
        unpacked.rename(final)
    except OSError:  # another process won the race; its copy is as good as ours
        if not (stamp.exists() and stamp.read_text() == key):
            raise
    shutil.rmtree(tmp, ignore_errors=True)
    return final


def read_game(path: Path) -> tuple[str, list[str]]:
    """(goal, walkthrough) of a game file, without loading the game."""
    try:
        game = json.loads(path.read_text())
        goal = _GOAL.search(game["grammar"])
        walkthrough = list(game["walkthrough"])
    except (OSError, json.JSONDecodeError, KeyError, TypeError):
        goal = None
    if goal is None:
        raise DataError(f"{path} is not an ALFWorld game with a goal: delete it to unpack the split again")
    return goal.group(1).strip(), walkthrough


def task_type(task_dir: str) -> str:
    return next((short for prefix, short in TASK_TYPES.items() if task_dir.startswith(prefix)), "unknown")


def normalize_command(action: str) -> str:
    """The game's spelling of an actor's line: first line, no label or article, lower case, no full stop."""
    line = next((ln for ln in action.splitlines() if ln.strip()), "")
    command = " ".join(_LABEL.sub("", line).split()).lower().rstrip(".")
    return _ARTICLE.sub("", command)


def parse_command(text: str) -> str | None:
    """The first command of the games' grammar in the actor's line (`I go to desk 1 now` -> `go to desk 1`);
    `look`, `inventory` and `help` only as the whole line; None when the line holds no command."""
    command = normalize_command(text)
    if command in _BARE_COMMANDS:
        return command
    match = _COMMAND.search(command)
    return match.group(0) if match else None


def admissible_spelling(command: str, admissible: list[str]) -> str:
    """`put X in/on Y` (ReAct's wording) as the game's `move X to Y` when only that one is admissible."""
    put = _PUT.match(command)
    if command in admissible or put is None:
        return command
    return f"move {put.group(1)} to {put.group(2)}"


def _cache_translations() -> None:
    """Memoise Fast Downward's PDDL->SAS translation, most of a game's load time.

    TextWorld translates the game's PDDL again on every reset (twice: plain and optimised), although the
    result depends only on the domain and problem text and is only read afterwards; keeping recent
    results makes a reset, or the next trial's load of the same game, cheap. The translation also
    overwrites sys.argv (a hack inside fast_downward), which the wrapper puts back.
    """
    import fast_downward

    if getattr(fast_downward.pddl2sas, "retro_cached", False):
        return
    translate = fast_downward.pddl2sas

    @functools.lru_cache(maxsize=TRANSLATIONS_KEPT)
    def cached(domain: str, problem: str, verbose: bool = False, optimize: bool = False) -> Any:
        argv = sys.argv
        try:
            return translate(domain, problem, verbose=verbose, optimize=optimize)
        finally:
            sys.argv = argv

    cached.retro_cached = True
    fast_downward.pddl2sas = cached


def load_game(gamefile: Path) -> Any:
    """A playable TextWorld env for one game, wrapped as the alfworld package does for its TW agents."""
    require_alfworld()
    _cache_translations()
    import textworld
    import textworld.gym
    from alfworld.agents.environment.alfred_tw_env import AlfredDemangler, AlfredInfos

    infos = textworld.EnvInfos(won=True, admissible_commands=True, extras=["walkthrough"])
    env_id = textworld.gym.register_games(
        [str(gamefile)], request_infos=infos, wrappers=[AlfredDemangler(shuffle=False), AlfredInfos]
    )
    return textworld.gym.make(env_id)


class ALFWorldEpisode:
    """One trial of one game; the game is loaded by the first reset and reused by later ones."""

    def __init__(self, task: Task, gamefile: Path):
        self.task, self.gamefile = task, gamefile
        self.env: Any = None
        self.admissible: list[str] = []
        self.done = False

    def reset(self) -> str:
        if self.env is None:
            self.env = load_game(self.gamefile)
        observation, info = self.env.reset()
        self.admissible, self.done = list(info["admissible_commands"]), False
        return observation.replace(WELCOME, "").strip()

    def step(self, action: str) -> StepResult:
        if self.env is None:
            self.reset()
        if self.done:
            return StepResult(OVER, 0.0, True, {"invalid": True, "success": False})
        command = admissible_spelling(normalize_command(action), self.admissible)
        invalid = command not in self.admissible
        observation, _score, done, info = self.env.step(command)
        won = bool(info["won"])
        self.admissible, self.done = list(info["admissible_commands"]), won or bool(done)
        info = {"invalid": invalid, "success": won, "score": float(won),
                "admissible_commands": self.admissible}
        return StepResult(observation, 1.0 if won else 0.0, self.done, info)

    def actions(self) -> ActionSpace:
        """The game's admissible commands at this step, those the environment's parser reads back as written."""
        return ActionSpace(choices=tuple(c for c in dict.fromkeys(self.admissible) if parse_command(c) == c))

    def close(self) -> None:
        if self.env is not None:
            self.env.close()
            self.env = None


class ALFWorld:
    """The environment: tasks from unpacked game files; each episode loads its own game."""

    name = "alfworld"
    action_help = ACTION_HELP
    invalid_action = NO_COMMAND
    max_steps = MAX_STEPS
    held_out_split = "valid_unseen"
    reflection_tokens = 128  # room for the places and objects a plan names

    def __init__(self, settings: Settings, data_dir: Path | None = None):
        require_alfworld()
        self.settings = settings
        self.data_dir = Path(data_dir or DATA_DIR)
        self.root = settings.cache_dir / "alfworld"
        # Without it, importing alfworld creates ~/.cache/alfworld: keep everything under RETRO_HOME.
        os.environ.setdefault("ALFWORLD_DATA", str(self.root))
        self.custom = {split: Path(folder) for split, folder in settings.rollout.alfworld_splits.items()}
        self.split_names = list(dict.fromkeys([*SHIPPED_SPLITS, *self.custom]))
        self._tasks: dict[str, list[Task]] = {}
        self._few_shot: dict[str, str] = {}

    def parse_action(self, text: str) -> str | None:
        return parse_command(text)

    def splits(self) -> dict[str, int]:
        return {split: len(self.load_tasks(split)) for split in self.split_names}

    def split_dir(self, split: str) -> Path:
        """The folder of a split's games: one added by settings, or a shipped one unpacked on first use."""
        if split in self.custom:
            folder = self.custom[split]
            if not folder.is_dir():
                raise DataError(f"ALFWorld split '{split}' is no folder: {folder}; fix the setting "
                                "rollout.alfworld_splits (a folder of <task>/<trial>/game.tw-pddl)")
            return folder
        if split not in SHIPPED_SPLITS:
            choices = ", ".join(self.split_names)
            raise UnknownEnvError(f"alfworld has no split '{split}': choose one of {choices}, "
                                  "or add one with the setting rollout.alfworld_splits")
        archive = self.data_dir / f"{split}.tar.xz"
        if not archive.exists():
            raise DataError(f"ALFWorld archive missing: {archive}; restore datasets/alfworld/ from git")
        return unpack_split(archive, self.root, split)

    def load_tasks(self, split: str) -> list[Task]:
        if split not in self._tasks:
            folder = self.split_dir(split)
            tasks = []
            for path in sorted(folder.glob(f"*/*/{GAME_FILE}")):
                task_id = f"{path.parent.parent.name}/{path.parent.name}"
                goal, walkthrough = read_game(path)
                metadata = {
                    "task_type": task_type(task_id),
                    "variant_of": path.parent.parent.name,  # trial folders of one task: same goal and room
                    "gamefile": str(path.relative_to(self.root) if path.is_relative_to(self.root) else path),
                    "walkthrough": walkthrough,
                }
                tasks.append(Task("alfworld", split, task_id, goal, " | ".join(walkthrough), metadata))
            if not tasks:
                raise DataError(f"ALFWorld split '{split}' has no games: {folder} holds no */*/{GAME_FILE}")
            self._tasks[split] = tasks
        return self._tasks[split]

    def gamefile(self, task: Task) -> Path:
        return self.split_dir(task.split) / task.task_id / GAME_FILE

    def start(self, task: Task) -> ALFWorldEpisode:
        return ALFWorldEpisode(task, self.gamefile(task))

    def few_shot(self, task: Task | None = None) -> str:
        """Examples of the task's type from train walkthroughs, played for real; cached on disk."""
        kind = task.metadata.get("task_type", "pick_and_place") if task is not None else "pick_and_place"
        if kind not in self._few_shot:
            key = hashlib.sha256(f"{FEW_SHOT_VERSION}:{file_key(self.data_dir / 'train.tar.xz')}".encode())
            cached = self.root / "fewshot" / f"{kind}-{key.hexdigest()[:16]}.txt"
            if not cached.exists():
                cached.parent.mkdir(parents=True, exist_ok=True)
                tmp = cached.with_name(f"{cached.name}.tmp-{os.getpid()}")
                tmp.write_text(self._write_examples(kind))
                os.replace(tmp, cached)
            self._few_shot[kind] = cached.read_text()
        return self._few_shot[kind]

    def _write_examples(self, kind: str) -> str:
        """FEW_SHOT_GAMES won games of the type, each with another object, room, goal and destination."""
        kept = [t for t in self.load_tasks("train") if t.metadata["task_type"] == kind]
        candidates = example_candidates(kept, FEW_SHOT_MAX_STEPS, FEW_SHOT_SEED)
        examples, chosen = [], []
        for strict in (True, False):  # another destination too, where the type has more than one
            for task in candidates:
                if len(examples) == FEW_SHOT_GAMES:
                    break
                if task in chosen or not varied(task, chosen, strict):
                    continue
                text = self._play_example(task)
                if text is not None:
                    examples.append(text)
                    chosen.append(task)
        return "\n\n".join(examples)

    def _play_example(self, task: Task) -> str | None:
        """The walkthrough played with a first stop that finds nothing (else without one); None if lost."""
        walkthrough = task.metadata["walkthrough"]
        target = first_target(walkthrough)
        episode = self.start(task)
        try:
            opening = episode.reset()
            for detour in [*(detour_places(opening, walkthrough) if target else []), None]:
                steps, won = play(episode.step, alfworld_plan(task.question, walkthrough, detour))
                if won and (detour is None or empty_handed(steps[0][2], target)):
                    return render(opening, steps)
                episode.reset()
        finally:
            episode.close()
        return None

    def close(self) -> None:
        """Nothing shared to release: each episode closes its own game."""
