"""Which tasks of a split a rollout plays: the ids asked for, a seeded sample spread over task types, or the
first N (sorted by id).

ALFWorld ships several trial folders of one task (the same goal in the same room, the objects placed
elsewhere); by name, the first games of a split are mostly trials of one task, so a run takes one trial
folder per task unless `rollout.all_variants` asks for every one.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from retro.envs.base import Task
from retro.errors import UnknownEnvError

TYPE_FIELDS = ("task_type", "type")  # ALFWorld's six task types; HotPotQA's bridge / comparison


def task_kind(task: Task) -> str:
    """The task's type, for stratified sampling; "" for an environment without types (sampled uniformly)."""
    return next((str(task.metadata[key]) for key in TYPE_FIELDS if task.metadata.get(key)), "")


def one_per_task(tasks: Sequence[Task]) -> list[Task]:
    """The first variant (by id) of each task; tasks without `variant_of` are tasks of their own."""
    seen: set[str] = set()
    kept = []
    for task in sorted(tasks, key=lambda t: t.task_id):
        group = task.metadata.get("variant_of", task.task_id)
        if group not in seen:
            seen.add(group)
            kept.append(task)
    return kept


def stratified_sample(tasks: Sequence[Task], n: int, seed: int) -> list[Task]:
    """n tasks drawn with `seed`, taken in turn from each task type (in a seeded order of types), so the
    types are as even as the split allows; sorted by id."""
    rng = random.Random(seed)
    by_kind: dict[str, list[Task]] = {}
    for task in sorted(tasks, key=lambda t: t.task_id):
        by_kind.setdefault(task_kind(task), []).append(task)
    queues = [rng.sample(group, len(group)) for _, group in sorted(by_kind.items())]
    rng.shuffle(queues)  # which types get one more when n is not a multiple of their number
    picked: list[Task] = []
    while len(picked) < n and any(queues):
        for queue in queues:
            if queue and len(picked) < n:
                picked.append(queue.pop())
    return sorted(picked, key=lambda t: t.task_id)


def select_tasks(tasks: Sequence[Task], count: int, *, task_ids: Sequence[str] | None = None,
                 sample: int | None = None, seed: int = 0, all_variants: bool = False) -> list[str]:
    """The task ids a run plays: `task_ids` as given, else a sample of `sample` drawn with `seed`, else the
    first `count`; one variant per task unless `all_variants`."""
    if task_ids:
        known = {t.task_id for t in tasks}
        missing = [task_id for task_id in task_ids if task_id not in known]
        if missing:
            where = f"{tasks[0].env} split '{tasks[0].split}'" if tasks else "this split"
            raise UnknownEnvError(f"no task {missing[0]!r} in {where} ({len(missing)} unknown): list the ids "
                                  "with `retro envs tasks ENV --split SPLIT`")
        return list(dict.fromkeys(task_ids))
    pool = list(tasks) if all_variants else one_per_task(tasks)
    if sample is not None:
        return [t.task_id for t in stratified_sample(pool, sample, seed)]
    return [t.task_id for t in sorted(pool, key=lambda t: t.task_id)[:count]]
