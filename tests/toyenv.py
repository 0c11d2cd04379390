"""A toy environment and scripted models where a reflection carries the fix (agent and flow tests).

Task k asks for a secret word; the actor answers `Finish[<word>]` only when its memory holds a
reflection naming the word, else it guesses wrong. The scripted retrospective model reads the code
in the question and names the word. So success rises across trials exactly when reflections work.
"""

from __future__ import annotations

import re

from retro.envs.actions import BracketActions
from retro.envs.base import StepResult, Task
from retro.llm.scripted import ScriptedLLM

N_TASKS = 12


def secret(k: int) -> str:
    return f"word{k * 7 % 13}"


class ToyEpisode:
    def __init__(self, task: Task):
        self.task = task

    def reset(self) -> str:
        return self.task.question

    def step(self, action: str) -> StepResult:
        m = re.fullmatch(r"(\w+)\[(.*)\]", action)
        if not m or m.group(1).lower() not in {"finish", "look"}:
            return StepResult("Invalid action: use Look[] or Finish[answer].", 0.0, False, {"invalid": True})
        if m.group(1).lower() == "look":
            return StepResult("You see nothing useful.", 0.0, False, {})
        ok = m.group(2).strip() == self.task.answer
        return StepResult("Correct." if ok else "Wrong.", float(ok), True, {"success": ok, "score": float(ok)})

    def close(self) -> None:
        pass


class ToyEnv(BracketActions):
    name = "toy"
    action_help = "Actions: Look[] looks around; Finish[answer] answers."
    max_steps = 4

    def __init__(self, settings=None):
        self.settings = settings

    def splits(self) -> dict[str, int]:
        return {"train": N_TASKS, "eval": N_TASKS}

    def load_tasks(self, split: str) -> list[Task]:
        return [Task("toy", split, f"{split}-{k:02d}", f"Say the secret word for code {k}.", secret(k))
                for k in range(N_TASKS)]

    def few_shot(self, task: Task | None = None) -> str:
        return "Thought 1: I know it.\nAction 1: Finish[word0]\nObservation 1: Correct."

    def start(self, task: Task) -> ToyEpisode:
        return ToyEpisode(task)


def actor_policy(prompt: str) -> str:
    """Looks once, then answers; uses the newest remembered word if there is one."""
    if re.search(r"Thought \d+:$", prompt):
        return " I should answer.\n"
    remembered = re.findall(r"Reflection \d+: .*?use the word (\w+)", prompt)
    return f" Finish[{remembered[-1] if remembered else 'nothing'}]\n"


def retro_policy(prompt: str) -> str:
    """Names the right word for the code in the task (a perfect retrospective model)."""
    k = int(re.search(r"code (\d+)", prompt).group(1))
    return f"I guessed instead of recalling. Next time use the word {secret(k)}.\n\nextra"


def models(retro_respond=retro_policy):
    from retro.agent.spec import Models

    return Models(ScriptedLLM(actor_policy, name="scripted-actor"),
                  ScriptedLLM(retro_respond, name="scripted-retro"), "base")
