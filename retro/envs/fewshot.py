"""Few-shot examples the program writes itself, from gold paths it actually plays.

The ReAct prompts of the original papers are hand-written; here every example is a train task's gold path
(HotPotQA: its supporting titles; ALFWorld: its walkthrough) run through the real environment, so each
observation is what the actor would see. Thoughts are short templates around the actions: enough to show
the Thought / Action / Observation rhythm without pretending to reasoning nobody did.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence

from retro.envs.base import StepResult, Task
from retro.envs.text import normalize_answer

OBSERVATION_CHARS = 300  # long paragraphs and room descriptions are cut: examples must fit a small context
Step = tuple[str, str, str]  # (thought, action, observation)
_STOPWORDS = frozenset((
    "about", "after", "also", "which", "where", "their", "there", "these", "those", "other", "what", "when",
    "with", "from", "that", "this", "have", "were", "been", "into", "than", "they", "them", "then", "while",
))


def shorten(text: str, limit: int = OBSERVATION_CHARS) -> str:
    """Cut at a word boundary and mark the cut."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0] + " ..."


def render(opening: str, steps: Sequence[Step]) -> str:
    """`opening` then numbered Thought / Action / Observation lines for (thought, action, observation)."""
    lines = [opening]
    for n, (thought, action, observation) in enumerate(steps, start=1):
        lines += [f"Thought {n}: {thought}", f"Action {n}: {action}",
                  f"Observation {n}: {shorten(observation)}"]
    return "\n".join(lines)


def play(step: Callable[[str], StepResult], plan: Sequence[tuple[str, str]]) -> tuple[list[Step], bool]:
    """Run (thought, action) pairs through an episode's step: the steps seen, and whether the last won."""
    steps, result = [], StepResult("", 0.0, False)
    for thought, action in plan:
        result = step(action)
        steps.append((thought, action, result.observation))
    return steps, bool(result.info.get("success"))


# -- HotPotQA ------------------------------------------------------------------------------------------
def _supporting(task: Task) -> list[tuple[str, list[int]]]:
    """Supporting titles in their given order, each with its supporting sentence numbers."""
    found: dict[str, list[int]] = {}
    for title, sentence in task.metadata["supporting_facts"]:
        found.setdefault(title, []).append(sentence)
    return list(found.items())


def _lookup_keyword(question: str, sentence: str) -> str | None:
    """A content word of the question that the supporting sentence contains, for a Lookup step."""
    for word in re.findall(r"[A-Za-z]{5,}", question):
        if word.lower() not in _STOPWORDS and word.lower() in sentence.lower():
            return word
    return None


def _bridge_plan(env, task: Task) -> list[tuple[str, str]] | None:
    """Search the first title, follow it to the second, Lookup the answer sentence, Finish."""
    facts = _supporting(task)
    if len(facts) != 2:
        return None
    (first, _), (second, sentences) = facts
    page_1, page_2 = env.wiki.page(first), env.wiki.page(second)
    answer = normalize_answer(task.answer)
    if page_1 is None or page_2 is None or second.lower() not in page_1.text.lower():
        return None  # not a clean bridge: the first paragraph must name the second title
    if not answer or answer not in normalize_answer(page_2.text) or answer in normalize_answer(page_1.text):
        return None
    last = sentences[-1]  # a Lookup earns its place only when the answer is not the opening sentence
    if not 0 < last < len(page_2.sentences):
        return None
    keyword = _lookup_keyword(task.question, page_2.sentences[last])
    if keyword is None:
        return None
    return [
        (f"I need to search {first}, see what it says, then follow it to what the question asks.",
         f"Search[{first}]"),
        (f"{first} points to {second}. I need to search {second}.", f"Search[{second}]"),
        (f"I look up \"{keyword}\" in {second} to find the sentence that answers the question.",
         f"Lookup[{keyword}]"),
        (f"So the answer is {task.answer}.", f"Finish[{task.answer}]"),
    ]


def _comparison_plan(env, task: Task) -> list[tuple[str, str]] | None:
    """Search both titles, then Finish with the comparison's answer."""
    facts = _supporting(task)
    if len(facts) != 2 or any(env.wiki.page(title) is None for title, _ in facts):
        return None
    (first, _), (second, _) = facts
    return [
        (f"I need to search {first} and {second}, then compare them.", f"Search[{first}]"),
        (f"Now I need to search {second}.", f"Search[{second}]"),
        (f"Comparing the two paragraphs, the answer is {task.answer}.", f"Finish[{task.answer}]"),
    ]


def hotpotqa_examples(env, tasks: Sequence[Task]) -> str:
    """One comparison and one bridge example: the last train tasks (by id) whose gold path fits.

    The bridge example comes last because a small actor copies the nearest example: ending on a
    comparison's "Finish[no]" made SmolLM2-135M answer "no" to every question. Taking them from the
    end of the split keeps them out of a train rollout of the first N tasks (no answer in the prompt).
    """
    examples = []
    for kind, make_plan in (("comparison", _comparison_plan), ("bridge", _bridge_plan)):
        for task in reversed(tasks):
            plan = make_plan(env, task) if task.metadata["type"] == kind else None
            if plan is None:
                continue
            episode = env.start(task)
            opening = episode.reset()
            steps, success = play(episode.step, plan)
            episode.close()
            if success:
                examples.append(render(opening, steps))
                break
    return "\n\n".join(examples)


# -- ALFWorld ------------------------------------------------------------------------------------------
_VERB = re.compile(r"^(go to|open|close|take|move|clean|heat|cool|use|examine|slice)\s+(.*)$")
_PLACE = re.compile(r"\ban? ([a-z]+ \d+)")  # "you see a cabinet 1, a desk 2, and a sofa 1"
DETOURS_TRIED = 4  # receptacles tried as the first, empty-handed stop of an example
CLOSED_KINDS = ("cabinet", "drawer", "fridge", "microwave", "safe")  # start closed: tried last as a detour


def _parts(action: str) -> tuple[str, str, str]:
    """("take", "apple 1", "countertop 2") from "take apple 1 from countertop 2"; receptacle may be ''."""
    match = _VERB.match(action)
    if match is None:
        return "", action, ""
    verb, rest = match.groups()
    pieces = re.split(r"\s+(?:from|to|with|in|on)\s+", rest, maxsplit=1)
    if verb in ("go to", "open", "close", "use", "examine") or len(pieces) == 1:
        return verb, rest, ""
    return verb, pieces[0], pieces[1]


def _kind(name: str) -> str:
    """"apple" of "apple 1"."""
    return name.rsplit(" ", 1)[0]


def _go_thought(place: str, following: Sequence[str]) -> str:
    """Why the agent goes to `place`, from what it does there (the actions after, an `open` skipped):
    looking is phrased as trying a place, never as knowing what is there."""
    nxt, obj, _ = _parts(next((a for a in following if not a.startswith("open ")), ""))
    if nxt in ("take", ""):
        return f"I look for a {_kind(obj) if obj else 'thing I need'} at {place}."
    if nxt == "use":
        return f"Now I need a {_kind(obj)} to see by. I try {place}."
    purpose = {"clean": "clean", "heat": "heat", "cool": "cool", "move": "put"}.get(nxt, nxt)
    return f"Now I take the {obj} to {place} to {purpose} it there."


def _alfworld_thought(action: str, following: Sequence[str]) -> str:
    """A one-line reason for `action`, looking at the actions after it (where the agent is heading)."""
    verb, obj, place = _parts(action)
    if verb == "go to":
        return _go_thought(obj, following)
    return {
        "open": f"The {obj} is closed; I open it to see inside.",
        "take": f"I found {obj}. I take it.",
        "clean": f"I clean {obj} with {place}.",
        "heat": f"I heat {obj} with {place}.",
        "cool": f"I cool {obj} with {place}.",
        "move": f"I put {obj} in/on {place}.",
        "use": f"I turn on {obj} to see by its light.",
    }.get(verb, f"Next, {action}.")


def coherent(walkthrough: Sequence[str]) -> bool:
    """True when every step acts where the agent stands (some PDDL plans take things from afar)."""
    here = None
    for action in walkthrough:
        verb, obj, place = _parts(action)
        if verb == "go to":
            here = obj
        elif (verb in ("open", "close") and obj != here) or (place and place != here):
            return False
    return True


def first_target(walkthrough: Sequence[str]) -> str | None:
    """The object the walkthrough takes first ("apple 1") where it first goes, if it does."""
    first = _parts(walkthrough[0])[1] if walkthrough else None
    takes = (obj for verb, obj, place in map(_parts, walkthrough) if verb == "take" and place == first)
    return next(takes, None)


def detour_places(opening: str, walkthrough: Sequence[str]) -> list[str]:
    """Receptacles of the room (as the opening lists them) that the walkthrough never visits: a first stop
    that finds nothing shows the actor looking before it knows."""
    visited = {obj for verb, obj, _ in map(_parts, walkthrough) if verb == "go to"}
    room = opening.split("\n\n", 1)[0]
    places = [place for place in dict.fromkeys(_PLACE.findall(room)) if place not in visited]
    return sorted(places, key=lambda place: _kind(place) in CLOSED_KINDS)[:DETOURS_TRIED]


def empty_handed(observation: str, target: str) -> bool:
    """A detour's observation that shows an open place without anything like the target on it."""
    return (observation.startswith("You arrive at") and " is closed" not in observation
            and re.search(rf"\b{re.escape(_kind(target))} \d", observation) is None)


def alfworld_plan(goal: str, walkthrough: Sequence[str], detour: str | None = None) -> list[tuple[str, str]]:
    """(thought, action) for each walkthrough step; the first thought restates the goal. With `detour`,
    the agent first looks for the object at that place and, not finding it, goes on to the walkthrough."""
    plan = [(_alfworld_thought(action, walkthrough[i + 1:]), action) for i, action in enumerate(walkthrough)]
    target = first_target(walkthrough)
    first = _parts(walkthrough[0])[1] if walkthrough and walkthrough[0].startswith("go to ") else None
    if detour is not None and target is not None and first is not None:
        plan[0] = (f"There is no {_kind(target)} at {detour}. I try {first} next.", walkthrough[0])
        look = (f"First I need to find a {_kind(target)}. I check the places one by one, starting with "
                f"{detour}.")
        plan.insert(0, (look, f"go to {detour}"))
    thought, action = plan[0]
    return [(f"My task is to {goal.rstrip('.')}. {thought}", action), *plan[1:]]


def scene_parts(task: Task) -> tuple[str, str, str]:
    """(object, destination, room number) of an ALFWorld task, from its folder name
    (type-Object-Container-Destination-Room: "pick_heat_then_place_in_recep-Egg-None-Fridge-13")."""
    fields = task.task_id.split("/")[0].split("-")
    return fields[1].lower(), fields[-2].lower(), fields[-1]


def varied(task: Task, chosen: Sequence[Task], strict: bool = True) -> bool:
    """True when `task` shows another object, room and goal than every example chosen so far, and when
    `strict` another destination too (look_at_obj_in_light has only one: the desklamp)."""
    obj, destination, room = scene_parts(task)
    for other in chosen:
        other_obj, other_destination, other_room = scene_parts(other)
        if obj == other_obj or room == other_room or task.question == other.question:
            return False
        if strict and destination == other_destination:
            return False
    return True


def example_candidates(tasks: Sequence[Task], max_steps: int, seed: int) -> list[Task]:
    """Train games worth showing, in a seeded order: coherent walkthroughs, the short ones first (the
    alphabetical order would show the same object, alarmclock or apple, in every prompt)."""
    kept = sorted([t for t in tasks if coherent(t.metadata["walkthrough"])] or tasks, key=lambda t: t.task_id)
    random.Random(seed).shuffle(kept)
    return sorted(kept, key=lambda t: len(t.metadata["walkthrough"]) > max_steps)
