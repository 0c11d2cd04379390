"""The batched multi-trial runner: N tasks x up to K trials, every live episode stepping together.

One loop iteration:
  1. reflect   - one batched call writes the reflections of every failed trial that has a next trial
  2. commit    - the finished trials, their steps and reflections go to the lake in one transaction
  3. restart   - tasks that failed and have trials left start their next trial with the new memory
  4. think     - one batched call: `Thought n:` for every acting episode (stop at newline)
  5. act       - one batched call: `Action n:` for every acting episode (stop at newline)
  6. step      - each environment answers its action; finished episodes leave the acting set
A crash loses only the trials in flight: a rerun with the same run id reads what was committed and
resumes (a task that succeeded is done; otherwise its next trial starts with its stored reflections).

Branches (`reflections_per_failure` = G > 1): after a failed main-line trial i the retrospective model
writes G reflections: sample 0 as it always would (greedy by default), samples 1..G-1 drawn at
`branch_temperature`, each seeded by (seed, task, trial, sample) so a rerun draws the same text. Each is
tried by its own branch of trial i + 1 (the same memory plus that reflection); all branches step in the
same batches as everything else. The main line continues from sample 0 (no peeking at which branch did
best), so it is the Reflexion protocol itself; the other branches end after their one trial. Every branch
trial is stored under its sample, and each reflection is rated by its own branch's return.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import polars as pl

from retro.agent.actor import Step, Trajectory, fit_prompt, instruction_for, long_term_memory
from retro.agent.constrain import ConstraintIgnoredError, action_grammar, allows
from retro.agent.guard import ActionGuard
from retro.agent.parse import clean_line
from retro.agent.prompts import ACTION_PREFIX, THOUGHT_PREFIX
from retro.agent.retrospect import clean_reflection, fit_reflection_input, reflection_prompt
from retro.envs.base import ActionSpace, Environment, Episode, Task, own_held_out_split
from retro.eval.metrics import success_by_trial
from retro.llm.base import LLM, Generation, GenParams
from retro.store import queries
from retro.store.lake import Lake

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RolloutSpec:
    """What a run is; its hash is the run id, so the same spec resumes the same run."""

    env: str
    split: str
    mode: str  # react | reflexion | retroformer
    task_ids: tuple[str, ...]
    trials: int
    max_steps: int
    memory_size: int
    seed: int
    actor_model: str
    retro_model: str | None = None
    retro_model_version: str | None = None  # "base" or the adapter's model_id
    actor_max_new_tokens: int = 64
    retro_max_new_tokens: int = 96
    retro_temperature: float = 0.0
    tag: str = ""  # e.g. the nightly date: same spec + new tag = a new run
    scoring: str = ""  # a non-default return, e.g. "hotpotqa_return=f1": other returns, so another run
    reflections_per_failure: int = 1  # G: reflections (and branches of the next trial) per failed trial
    branch_temperature: float = 0.0  # sampling temperature of reflections 1..G-1 (0 when G = 1)
    actor_temperature: float = 0.0  # 0: the actor decodes greedily
    actor_top_p: float = 1.0
    retro_top_p: float = 1.0
    constrain_actions: bool = False  # the action line is decoded within the episode's actions (actor setting)

    @property
    def run_id(self) -> str:
        fields = asdict(self)
        for name, default in LATER_FIELDS.items():  # absent when default: the run ids of older specs stay
            if fields[name] == default:
                del fields[name]
        digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]
        return f"{self.mode}-{self.env}-{self.split}-{digest}"

    @property
    def reflects(self) -> bool:
        return self.mode != "react"

    @property
    def branches(self) -> int:
        """Reflections per failed trial (G); 1 in react mode, which writes none."""
        return self.reflections_per_failure if self.reflects else 1


# Spec fields added after run ids were first published, with the value that leaves them out of the hash.
LATER_FIELDS: dict[str, Any] = {"scoring": "", "reflections_per_failure": 1, "branch_temperature": 0.0,
                                "actor_temperature": 0.0, "actor_top_p": 1.0, "retro_top_p": 1.0,
                                "constrain_actions": False}


def seed_for(seed: int, *parts: object) -> int:
    """The sampling seed of one generation (e.g. task, trial, sample): the same whatever else shares its
    batch, so a rerun after a crash samples the same text."""
    return int(hashlib.sha256("/".join(map(str, (seed, *parts))).encode()).hexdigest()[:8], 16)


@dataclass
class Live:
    """One episode in flight, with what its trial row needs."""

    task: Task
    trial: int
    episode: Episode
    instruction: str
    memory: list[str]
    trajectory: Trajectory
    sample: int = 0  # 0: the task's main line; g > 0: the branch trying reflection g of the previous trial
    started: float = field(default_factory=time.perf_counter)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    dropped: int = 0
    done: bool = False
    episode_return: float = 0.0
    success: bool = False
    score: float | None = None
    stop_reason: str = "max_steps"
    error: str | None = None
    pending_thought: str = ""
    space: ActionSpace | None = None  # the actions that exist at this step, when the run constrains them


@dataclass
class RunResult:
    run_id: str
    n_tasks: int
    trials: int
    success_by_trial: list[float]
    written: dict[str, int]
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    retried: int = 0  # model calls a served backend had to retry (timeouts, 5xx) during this run

    @property
    def tokens_per_second(self) -> float:
        return self.completion_tokens / self.seconds if self.seconds else 0.0


ProgressFn = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class Branch:
    """One branch trial to play: a trial of a task that starts with these reflections in its memory (a
    reflection tried after a crash, whose trial was not committed; or a sampled one during training)."""

    task_id: str
    trial: int
    sample: int
    reflections: list[str]


class Runner:
    """Runs one RolloutSpec against one environment with an actor (and a retrospective model).

    `shard`: run only these of the spec's tasks, under the spec's run id, and leave the run's end to
    whoever commits the shards (retro.orchestrate.shards).
    """

    def __init__(self, lake: Lake, env: Environment, actor: LLM, retro: LLM | None, spec: RolloutSpec,
                 flow_run_id: str | None = None, config_json: str = "{}", config_hash: str = "",
                 code_version: str = "", progress: ProgressFn | None = None, shard: Sequence[str] | None = None):
        self.lake, self.env, self.actor, self.retro, self.spec = lake, env, actor, retro, spec
        self.shard = tuple(shard) if shard is not None else None
        self.task_ids = self.shard if self.shard is not None else spec.task_ids
        self.flow_run_id, self.config_json, self.config_hash = flow_run_id, config_json, config_hash
        self.code_version = code_version
        self.progress = progress or (lambda event: None)
        self.tasks = self._tasks()
        self.written = {"trials": 0, "steps": 0, "reflections": 0}
        self.tokens = [0, 0]
        self.episodes_done = 0
        self.last_trial: dict[str, int] = {}  # task_id -> highest trial finished (committed or resumed)
        self.solved: set[str] = set()
        self.rounds_logged = 0  # trials 0..rounds_logged-1 have had their success rate logged
        # a served actor whose first actions are all invalid stops the run, uncommitted (retro/agent/guard.py)
        self.action_guard = ActionGuard.for_run(len(self.task_ids), actor.name) if getattr(actor, "served", False) \
            else None
        self.retried_before = self._retried()

    # -- setup -------------------------------------------------------------------------------------------
    def _tasks(self) -> dict[str, Task]:
        by_id = {t.task_id: t for t in self.env.load_tasks(self.spec.split)}
        missing = [t for t in self.task_ids if t not in by_id or t not in self.spec.task_ids]
        if missing:
            from retro.errors import UnknownEnvError

            raise UnknownEnvError(f"unknown {self.spec.env} task ids in split {self.spec.split}: {missing[:3]}")
        return {t: by_id[t] for t in self.task_ids}

    def _record_start(self) -> None:
        s = self.spec
        queries.record_run(
            self.lake,
            {"run_id": s.run_id, "flow_run_id": self.flow_run_id, "mode": s.mode, "env": s.env, "split": s.split,
             "actor_model": s.actor_model, "retro_model": s.retro_model, "retro_model_version": s.retro_model_version,
             "n_tasks": len(s.task_ids), "n_trials": s.trials, "config": self._config(),
             "config_hash": self.config_hash, "code_version": self.code_version, "seed": s.seed, "tag": s.tag},
            [{"env": t.env, "split": t.split, "task_id": t.task_id, "question": t.question, "answer": t.answer,
              "metadata": json.dumps(t.metadata, sort_keys=True, default=str),
              "held_out": t.split == own_held_out_split(self.env)} for t in self.tasks.values()],
        )

    def _config(self) -> str:
        """The settings as recorded with the run, the actor's constrain_actions as this run resolved it (its
        auto, None, depends on the backend): what the run did is read from the row, not re-derived."""
        config = json.loads(self.config_json)
        actor = config.get("actor") if isinstance(config.get("actor"), dict) else {}
        config["actor"] = {**actor, "constrain_actions": self.spec.constrain_actions}
        return json.dumps(config, sort_keys=True)

    def _resume_state(self) -> tuple[dict[str, tuple[int, list[str]]], list[Branch]]:
        """(task_id -> (next main-line trial, its reflections so far) for every task that still has work,
        the branch trials whose reflection is committed but whose trial is not)."""
        trials = queries.committed_trials(self.lake, self.spec.run_id)
        reflections = queries.committed_reflections(self.lake, self.spec.run_id)
        self.episodes_done += trials.filter(pl.col("sample") > 0).height
        branches = self._pending_branches(trials, reflections)
        trials, reflections = trials.filter(pl.col("sample") == 0), reflections.filter(pl.col("sample") == 0)
        todo: dict[str, tuple[int, list[str]]] = {}
        for task_id in self.task_ids:
            mine = trials.filter(trials["task_id"] == task_id)
            if mine.height:
                self.last_trial[task_id] = int(mine["trial"].max())
            if mine.height and mine["success"].any():
                self.solved.add(task_id)
                self.episodes_done += mine.height
                continue
            next_trial = int(mine["trial"].max()) + 1 if mine.height else 0
            self.episodes_done += mine.height
            if next_trial >= self.spec.trials:
                continue
            texts = reflections.filter(reflections["task_id"] == task_id).sort("trial")["text"].to_list()
            todo[task_id] = (next_trial, texts)
        return todo, branches

    def _pending_branches(self, trials: pl.DataFrame, reflections: pl.DataFrame) -> list[Branch]:
        """Branch trials to (re)run: reflection (i, g > 0) is stored, trial (i + 1, g) is not. A branch's
        memory is the main line's reflections before trial i, then reflection g."""
        tried = set(zip(trials["task_id"], trials["trial"], trials["sample"]))
        main = reflections.filter(pl.col("sample") == 0)
        pending = []
        for task_id, trial, sample, text in reflections.filter(pl.col("sample") > 0).iter_rows():
            if task_id not in self.tasks or (task_id, trial + 1, sample) in tried or trial + 1 >= self.spec.trials:
                continue
            earlier = main.filter((pl.col("task_id") == task_id) & (pl.col("trial") < trial)).sort("trial")
            pending.append(Branch(task_id, trial + 1, sample, [*earlier["text"].to_list(), text]))
        return pending

    def _start(self, task_id: str, trial: int, reflections: list[str], sample: int = 0) -> Live:
        task = self.tasks[task_id]
        memory = long_term_memory(reflections, self.spec.memory_size) if self.spec.reflects else []
        episode = self.env.start(task)
        first = episode.reset()
        few_shot = self.env.few_shot(task)
        return Live(task=task, trial=trial, episode=episode, memory=memory, sample=sample,
                    instruction=instruction_for(self.env.action_help, few_shot, memory, first),
                    trajectory=Trajectory(question=first))

    # -- the loop ---------------------------------------------------------------------------------------------
    def run(self) -> RunResult:
        if self.spec.reflects and self.retro is None:
            raise ValueError(f"mode {self.spec.mode} needs a retrospective model")
        started = time.perf_counter()
        self._record_start()
        todo, branches = self._resume_state()
        self._log_rounds()
        if self.episodes_done:
            log.info("run %s: resuming, %d trials already committed", self.spec.run_id, self.episodes_done)
        reflections = {task_id: list(texts) for task_id, (_, texts) in todo.items()}  # each main line's memory
        acting = [self._start(task_id, trial, texts) for task_id, (trial, texts) in todo.items()]
        acting += [self._start(b.task_id, b.trial, b.reflections, b.sample) for b in branches]
        self._report(started)
        while acting:
            self._turn(acting)
            finished = [live for live in acting if live.done]
            acting = [live for live in acting if not live.done]
            if not finished:
                continue
            for live in finished:
                live.episode.close()
            reflected = self._reflect([live for live in finished if self._needs_reflection(live)])
            self._commit(finished, [row for rows in reflected.values() for row in rows])
            for live in finished:
                if live.sample or live.success or live.trial + 1 >= self.spec.trials:
                    continue  # a branch ends after its one trial; a solved or finished task stops
                task_id, texts = live.task.task_id, reflections.setdefault(live.task.task_id, [])
                by_sample = {row["sample"]: row["text"] for row in reflected.get(task_id, [])}
                acting += [self._start(task_id, live.trial + 1, [*texts, text], sample)
                           for sample, text in by_sample.items() if sample > 0]
                if 0 in by_sample:
                    texts.append(by_sample[0])
                acting.append(self._start(task_id, live.trial + 1, texts))
            self._report(started)
        return self._finish(started)

    def play(self, branches: Sequence[Branch]) -> list[float]:
        """Play one trial per branch, all stepping in the same batches, commit each as a branch trial of this
        run (sample >= 1, so no main line is touched) and return their returns, in order. The environment's
        reward for policy gradient (retro/train/env_reward.py) is computed this way."""
        if any(b.sample < 1 for b in branches):
            raise ValueError("played branches have sample >= 1 (sample 0 is a task's main line)")
        self._record_start()
        lives = [self._start(b.task_id, b.trial, b.reflections, b.sample) for b in branches]
        acting = list(lives)
        while acting:
            self._turn(acting)
            finished = [live for live in acting if live.done]
            acting = [live for live in acting if not live.done]
            for live in finished:
                live.episode.close()
            if finished:
                self._commit(finished, [])
        return [live.episode_return for live in lives]

    def _needs_reflection(self, live: Live) -> bool:
        return self.spec.reflects and live.sample == 0 and not live.success and live.trial + 1 < self.spec.trials

    def _generate(self, llm: LLM, lives: list[Live], tails: list[str], max_new_tokens: int, kind: str,
                  grammars: tuple[str | None, ...] = ()) -> Generation:
        """One batched actor call; a prompt the server never answered ends the run, not its episode."""
        prompts = []
        for live, tail in zip(lives, tails):
            prompt, dropped = fit_prompt(llm, live.instruction, live.trajectory, tail, max_new_tokens)
            live.dropped = max(live.dropped, dropped)
            prompts.append(prompt)
        s = self.spec
        seeds = tuple(seed_for(s.seed, live.task.task_id, live.trial, live.sample, len(live.trajectory.steps), kind)
                      for live in lives) if s.actor_temperature > 0 else ()
        params = GenParams(max_new_tokens=max_new_tokens, temperature=s.actor_temperature, top_p=s.actor_top_p,
                           stop=("\n",), seed=s.seed, seeds=seeds, grammars=grammars)
        gen = llm.generate(prompts, params)
        gen.raise_for_errors()  # an outage is no trial outcome: this batch's trials are not committed
        for live, pt, ct in zip(lives, gen.prompt_tokens, gen.completion_tokens):
            live.prompt_tokens += pt
            live.completion_tokens += ct
            self.tokens[0] += pt
            self.tokens[1] += ct
        return gen

    def _turn(self, acting: list[Live]) -> None:
        """One step of every acting episode: the actions that exist, a thought, an action, the answer."""
        self._look(acting)
        lives = [live for live in acting if not live.done]
        if lives:
            self._think(lives)
            self._act(lives)

    def _look(self, acting: list[Live]) -> None:
        """With constrain_actions: each episode's actions at this step (None: it declares none, so its action is
        free); an episode where no action exists ends its trial here, before any request."""
        if not self.spec.constrain_actions:
            return
        for live in acting:
            actions = getattr(live.episode, "actions", None)
            try:
                live.space = actions() if actions is not None else None
            except Exception as err:  # noqa: BLE001 (an environment bug ends this episode, not the run)
                log.warning("environment %s failed listing its actions: %s", self.spec.env, err)
                live.done, live.stop_reason, live.error = True, "env_error", f"{type(err).__name__}: {err}"
                continue
            if live.space is not None and live.space.empty:
                live.done, live.stop_reason = True, "no_actions"

    def _think(self, lives: list[Live]) -> None:
        tails = [THOUGHT_PREFIX.format(n=len(live.trajectory.steps) + 1) for live in lives]
        gen = self._generate(self.actor, lives, tails, self.spec.actor_max_new_tokens, "thought")
        for live, text in zip(lives, gen.texts):
            live.pending_thought = clean_line(text)

    def _act(self, lives: list[Live]) -> None:
        tails = []
        for live in lives:
            n = len(live.trajectory.steps) + 1
            tails.append(f"{THOUGHT_PREFIX.format(n=n)} {live.pending_thought}\n{ACTION_PREFIX.format(n=n)}")
        grammars = tuple(action_grammar(live.space) if live.space else None for live in lives)
        limit = self.spec.actor_max_new_tokens
        gen = self._generate(self.actor, lives, tails, limit, "action", grammars if any(grammars) else ())
        for live, text, used in zip(lives, gen.texts, gen.completion_tokens):
            if live.space is not None and used < limit and not allows(live.space, text):
                raise self._ignored(text)  # before any step: this batch's trials are rerun on resume
        for live, text in zip(lives, gen.texts):
            self._step(live, text)
        self._guard(lives)

    def _ignored(self, text: str) -> ConstraintIgnoredError:
        """A constrained action line outside its actions, not cut by the token limit: the grammar was ignored."""
        where = f" at {self.actor.base_url}" if hasattr(self.actor, "base_url") else ""
        return ConstraintIgnoredError(
            f"stopped: the actor {self.actor.name}{where} answered {text[:60]!r}, none of the actions its request "
            "allowed: it ignores grammars (vLLM and llama.cpp's server honour them); serve the actor with one of "
            "those, or set RETRO_ACTOR__CONSTRAIN_ACTIONS=false for the unconstrained ReAct")

    def _guard(self, lives: list[Live]) -> None:
        if self.action_guard is not None:
            for live in lives:
                self.action_guard.observe(live.trajectory.steps)

    def _step(self, live: Live, text: str) -> None:
        action = self.env.parse_action(clean_line(text))  # the environment's own syntax: Search[x], go to desk 1
        if action is None:
            live.trajectory.steps.append(Step(live.pending_thought, clean_line(text), self.env.invalid_action, 0.0,
                                              False))
        else:
            try:
                result = live.episode.step(action)
            except Exception as err:  # noqa: BLE001 (an environment bug ends this episode, not the run)
                log.warning("environment %s failed on %r: %s", self.spec.env, action, err)
                live.done, live.stop_reason, live.error = True, "env_error", f"{type(err).__name__}: {err}"
                return
            valid = not result.info.get("invalid", False)
            live.trajectory.steps.append(Step(live.pending_thought, action, result.observation, result.reward, valid))
            if result.done:
                live.done, live.stop_reason = True, "finished"
                live.episode_return = float(result.reward)
                live.success = bool(result.info.get("success", result.reward >= 1.0))
                live.score = result.info.get("score")
        if not live.done and len(live.trajectory.steps) >= self.spec.max_steps:
            live.done, live.stop_reason = True, "max_steps"

    def _reflect(self, failed: list[Live]) -> dict[str, list[dict[str, Any]]]:
        """task_id -> its reflection rows (samples 0..G-1) for every failed trial with a next trial: one
        batched call for sample 0 (the retrospective model's own settings), one for the sampled others."""
        if not failed:
            return {}
        s = self.spec
        # the task as the actor first saw it: ALFWorld's opening lists the room's places, WebShop's the page
        inputs = [fit_reflection_input(self.retro, live.trajectory, live.episode_return, live.stop_reason,
                                       live.error, s.retro_max_new_tokens) for live in failed]
        out: dict[str, list[dict[str, Any]]] = {}
        own = GenParams(max_new_tokens=s.retro_max_new_tokens, temperature=s.retro_temperature, top_p=s.retro_top_p,
                        seed=s.seed)
        self._reflect_call(failed, inputs, [0] * len(failed), own, out)
        if s.branches > 1:
            rows = [(live, text, g) for live, text in zip(failed, inputs) for g in range(1, s.branches)]
            lives, texts, samples = (list(x) for x in zip(*rows))
            seeds = tuple(seed_for(s.seed, live.task.task_id, live.trial, g) for live, g in zip(lives, samples))
            sampled = GenParams(max_new_tokens=s.retro_max_new_tokens, temperature=s.branch_temperature,
                                top_p=s.retro_top_p, seed=s.seed, seeds=seeds)
            self._reflect_call(lives, texts, samples, sampled, out)
        return out

    def _reflect_call(self, lives: list[Live], inputs: list[str], samples: list[int], params: GenParams,
                      out: dict[str, list[dict[str, Any]]]) -> None:
        gen = self.retro.generate([reflection_prompt(text) for text in inputs], params)
        gen.raise_for_errors()  # before the commit: the failed trials are rerun on resume
        for i, (live, prompt, sample, text) in enumerate(zip(lives, inputs, samples, gen.texts)):
            used = replace(params, seed=params.row_seed(i), seeds=()) if params.seeds else params
            out.setdefault(live.task.task_id, []).append({
                "run_id": self.spec.run_id, "task_id": live.task.task_id, "trial": live.trial, "sample": sample,
                "env": self.spec.env, "prompt": prompt, "text": clean_reflection(text),
                "model_version": self.spec.retro_model_version, "gen_params": json.dumps(asdict(used), sort_keys=True),
                "prompt_tokens": gen.prompt_tokens[i], "completion_tokens": gen.completion_tokens[i],
                "created_at": queries.now(),
            })

    def _commit(self, finished: list[Live], reflected: list[dict[str, Any]]) -> None:
        run_id = self.spec.run_id
        trials, steps = [], []
        for live in finished:
            trials.append({
                "run_id": run_id, "task_id": live.task.task_id, "trial": live.trial, "sample": live.sample,
                "env": self.spec.env, "episode_return": live.episode_return, "success": live.success,
                "score": live.score if live.score is not None else live.episode_return,
                "n_steps": len(live.trajectory.steps),
                "n_invalid": sum(not s.valid for s in live.trajectory.steps),
                "stop_reason": live.stop_reason, "error": live.error, "memory": json.dumps(live.memory),
                "context_truncated": live.dropped, "prompt_tokens": live.prompt_tokens,
                "completion_tokens": live.completion_tokens, "seconds": time.perf_counter() - live.started,
                "created_at": queries.now(),
            })
            steps += [{"run_id": run_id, "task_id": live.task.task_id, "trial": live.trial, "sample": live.sample,
                       "step": i + 1,
                       "thought": s.thought, "action": s.action, "observation": s.observation, "reward": s.reward,
                       "valid": s.valid} for i, s in enumerate(live.trajectory.steps)]
            self.episodes_done += 1
            if live.sample:
                continue  # a branch is not the task's line: its success does not stop the task
            self.last_trial[live.task.task_id] = live.trial
            if live.success:
                self.solved.add(live.task.task_id)
        written = queries.append_trials(self.lake, trials, steps, reflected)
        for name, n in written.items():
            self.written[name] += n
        self._log_rounds()

    def _log_rounds(self) -> None:
        """Log the success rate after trial i as soon as every task is past it (solved, or trial i done)."""
        n = len(self.task_ids)
        while self.rounds_logged < self.spec.trials:
            i = self.rounds_logged
            if not all(t in self.solved or self.last_trial.get(t, -1) >= i for t in self.task_ids):
                return
            log.info("run %s: success after trial %d: %d/%d", self.spec.run_id, i, len(self.solved_by(i)), n)
            self.rounds_logged += 1

    def solved_by(self, trial: int) -> set[str]:
        """Tasks solved at or before `trial` (a task stops at its first success, so its last trial)."""
        return {t for t in self.solved if self.last_trial[t] <= trial}

    def _report(self, started: float) -> None:
        elapsed = time.perf_counter() - started
        n, k, g = len(self.task_ids), self.spec.trials, self.spec.branches
        self.progress({"episodes_done": self.episodes_done, "successes": len(self.solved),
                       "n_tasks": n, "max_episodes": n * k + n * (k - 1) * (g - 1),  # every branch, at most
                       "completion_tokens": self.tokens[1],
                       "tokens_per_second": self.tokens[1] / elapsed if elapsed else 0.0})

    def _retried(self) -> int:
        """Calls the served backends retried so far (OpenAIBackend.retried; local backends never retry)."""
        return sum(getattr(llm, "retried", 0) for llm in {id(m): m for m in (self.actor, self.retro) if m}.values())

    def _finish(self, started: float) -> RunResult:
        trials = queries.committed_trials(self.lake, self.spec.run_id).filter(pl.col("sample") == 0)
        curve = success_by_trial(trials, len(self.task_ids), self.spec.trials)
        seconds = time.perf_counter() - started
        result = RunResult(self.spec.run_id, len(self.task_ids), self.spec.trials, curve, dict(self.written),
                           self.tokens[0], self.tokens[1], seconds, self._retried() - self.retried_before)
        if self.shard is None:
            queries.record_run_end(self.lake, self.spec.run_id, "completed",
                                   {"success_by_trial": curve, "written": result.written, "retried": result.retried})
        log.info("run %s: success by trial %s (%d new trials, %.1f tok/s, %d calls retried)", self.spec.run_id,
                 " ".join(f"{x:.2f}" for x in curve), self.written["trials"], result.tokens_per_second, result.retried)
        return result

