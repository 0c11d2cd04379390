"""Every prompt the agent sends, as module-level templates (pinned by golden-string tests).

The actor is a ReAct agent: the instruction, worked examples and long-term memory (reflections)
go in the user turn; the trajectory is the assistant turn, continued one line at a time: first
`Thought n:` (stop at newline), then `Action n:` (stop at newline), as Reflexion's agent does.
"""

from __future__ import annotations

ACTOR_INSTRUCTION = """Solve the task by interleaving Thought, Action and Observation steps.
{action_help}

Here are some examples:
{few_shot}
(END OF EXAMPLES)
{memory}
{question}"""

MEMORY_HEADER = """
You have attempted this task before and failed. The reflections below say why and what to do instead.
Use them to improve your strategy this time.
"""

MEMORY_ITEM = "Reflection {i}: {text}"

THOUGHT_PREFIX = "Thought {n}:"
ACTION_PREFIX = "Action {n}:"
OBSERVATION_LINE = "Observation {n}: {observation}"

REFLECTION_INSTRUCTION = """You are an advanced reasoning agent that improves by reflecting on its own attempts.
Below is a previous attempt at a task. The attempt failed (its return was {episode_return:.2f} out of 1).
In two or three sentences, first state the root cause of the failure, then give a new, concise, concrete \
plan that avoids the same mistake. Do not repeat the trajectory. Use complete sentences.

Task: {question}
Previous attempt:
{trajectory}
{outcome}"""

REFLECTION_PREFIX = "Reflection:"
OMITTED_STEPS = "(the first {n} steps are omitted to fit the context)"

OUTCOME_WRONG_ANSWER = "The attempt ended with an answer that was judged incorrect."
OUTCOME_NO_ANSWER = "The attempt ran out of steps before finishing."
OUTCOME_NO_ACTIONS = "The attempt reached a state where no action was possible, before finishing."
OUTCOME_ERROR = "The attempt was stopped by an error: {error}."


def format_memory(reflections: list[str]) -> str:
    """The long-term memory block (empty when there is nothing to remember), oldest first."""
    if not reflections:
        return ""
    items = "\n".join(MEMORY_ITEM.format(i=i + 1, text=text.strip()) for i, text in enumerate(reflections))
    return MEMORY_HEADER + items + "\n"


def format_step(n: int, thought: str, action: str, observation: str | None) -> str:
    """One trajectory step as the actor sees it."""
    lines = [f"{THOUGHT_PREFIX.format(n=n)} {thought}".rstrip(), f"{ACTION_PREFIX.format(n=n)} {action}".rstrip()]
    if observation is not None:
        lines.append(OBSERVATION_LINE.format(n=n, observation=observation))
    return "\n".join(lines)
