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
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from retro.agent.actor import Step, Trajectory, fit_prompt, instruction_for, long_term_memory
from retro.agent.parse import clean_line, parse_action
from retro.agent.prompts import ACTION_PREFIX, THOUGHT_PREFIX
from retro.agent.retrospect import clean_reflection, reflection_input, reflection_prompt
from retro.envs.base import Environment, Episode, Task
from retro.eval.metrics import success_by_trial
from retro.llm.base import LLM, GenParams
from retro.store import queries
from retro.store.lake import Lake

log = logging.getLogger(__name__)

INVALID_ACTION = "Invalid action: write exactly one action of the form Name[argument]."


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

    @property
    def run_id(self) -> str:
        fields = asdict(self)
        if not fields["scoring"]:  # absent when default, so the run ids of default specs stay what they were
            del fields["scoring"]
        digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]
        return f"{self.mode}-{self.env}-{self.split}-{digest}"

    @property
    def reflects(self) -> bool:
        return self.mode != "react"


@dataclass
class Live:
    """One episode in flight, with what its trial row needs."""

    task: Task
    trial: int
    episode: Episode
    instruction: str
    memory: list[str]
    trajectory: Trajectory
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

    @property
    def tokens_per_second(self) -> float:
        return self.completion_tokens / self.seconds if self.seconds else 0.0


ProgressFn = Callable[[dict[str, Any]], None]


class Runner:
    """Runs one RolloutSpec against one environment with an actor (and a retrospective model).

    `shard`: run only these of the spec's tasks, under the spec's run id, and leave the run's end to
    whoever commits the shards (retro.agent.shards).
    """

    def __init__(self, lake: Lake, env: Environment, actor: LLM, retro: LLM | None, spec: RolloutSpec,
                 flow_run_id: str | None = None, config_json: str = "{}", config_hash: str = "",
                 code_version: str = "", progress: ProgressFn | None = None, shard: Sequence[str] | None = None):
        if spec.reflects and retro is None:
            raise ValueError(f"mode {spec.mode} needs a retrospective model")
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
             "n_tasks": len(s.task_ids), "n_trials": s.trials, "config": self.config_json,
             "config_hash": self.config_hash, "code_version": self.code_version, "seed": s.seed},
            [{"env": t.env, "split": t.split, "task_id": t.task_id, "question": t.question, "answer": t.answer,
              "metadata": json.dumps(t.metadata, sort_keys=True, default=str)} for t in self.tasks.values()],
        )

    def _resume_state(self) -> dict[str, tuple[int, list[str]]]:
        """task_id -> (next trial, reflections so far) for every task that still has work."""
        trials = queries.committed_trials(self.lake, self.spec.run_id)
        reflections = queries.committed_reflections(self.lake, self.spec.run_id)
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
        return todo

    def _start(self, task_id: str, trial: int, reflections: list[str]) -> Live:
        task = self.tasks[task_id]
        memory = long_term_memory(reflections, self.spec.memory_size) if self.spec.reflects else []
        episode = self.env.start(task)
        first = episode.reset()
        few_shot = self.env.few_shot(task)
        return Live(task=task, trial=trial, episode=episode, memory=memory,
                    instruction=instruction_for(self.env.action_help, few_shot, memory, first),
                    trajectory=Trajectory(question=first))

    # -- the loop ---------------------------------------------------------------------------------------------
    def run(self) -> RunResult:
        started = time.perf_counter()
        self._record_start()
        todo = self._resume_state()
        self._log_rounds()
        if self.episodes_done:
            log.info("run %s: resuming, %d trials already committed", self.spec.run_id, self.episodes_done)
        reflections = {task_id: list(texts) for task_id, (_, texts) in todo.items()}
        acting = [self._start(task_id, trial, texts) for task_id, (trial, texts) in todo.items()]
        self._report(started)
        while acting:
            self._think(acting)
            self._act(acting)
            finished = [live for live in acting if live.done]
            acting = [live for live in acting if not live.done]
            if not finished:
                continue
            for live in finished:
                live.episode.close()
            reflected = self._reflect([live for live in finished if self._needs_reflection(live)])
            self._commit(finished, reflected)
            for live in finished:
                if live.success or live.trial + 1 >= self.spec.trials:
                    continue
                texts = reflections.setdefault(live.task.task_id, [])
                if live.task.task_id in reflected:
                    texts.append(reflected[live.task.task_id]["text"])
                acting.append(self._start(live.task.task_id, live.trial + 1, texts))
            self._report(started)
        for llm in {id(m): m for m in (self.actor, self.retro) if m is not None}.values():
            free = getattr(llm, "free_caches", None)  # a local backend's kept keys/values: no episode continues
            if free is not None:
                free()
        return self._finish(started)

    def _needs_reflection(self, live: Live) -> bool:
        return self.spec.reflects and not live.success and live.trial + 1 < self.spec.trials

    def _generate(self, llm: LLM, lives: list[Live], tails: list[str], max_new_tokens: int, seed: int) -> list[str | None]:
        """One batched actor call; a failed prompt ends its episode with the reason."""
        prompts = []
        for live, tail in zip(lives, tails):
            prompt, dropped = fit_prompt(llm, live.instruction, live.trajectory, tail, max_new_tokens)
            live.dropped = max(live.dropped, dropped)
            prompts.append(prompt)
        params = GenParams(max_new_tokens=max_new_tokens, stop=("\n",), seed=seed)
        gen = llm.generate(prompts, params)
        out: list[str | None] = []
        for live, text, pt, ct, err in zip(lives, gen.texts, gen.prompt_tokens, gen.completion_tokens, gen.errors):
            live.prompt_tokens += pt
            live.completion_tokens += ct
            self.tokens[0] += pt
            self.tokens[1] += ct
            if err:
                live.done, live.stop_reason, live.error = True, "llm_error", err
                out.append(None)
            else:
                out.append(text)
        return out

    def _think(self, acting: list[Live]) -> None:
        tails = [THOUGHT_PREFIX.format(n=len(live.trajectory.steps) + 1) for live in acting]
        texts = self._generate(self.actor, acting, tails, self.spec.actor_max_new_tokens, self.spec.seed)
        for live, text in zip(acting, texts):
            live.pending_thought = clean_line(text) if text is not None else ""

    def _act(self, acting: list[Live]) -> None:
        lives = [live for live in acting if not live.done]
        tails = []
        for live in lives:
            n = len(live.trajectory.steps) + 1
            tails.append(f"{THOUGHT_PREFIX.format(n=n)} {live.pending_thought}\n{ACTION_PREFIX.format(n=n)}")
        texts = self._generate(self.actor, lives, tails, self.spec.actor_max_new_tokens, self.spec.seed)
        for live, text in zip(lives, texts):
            if text is not None:
                self._step(live, text)

    def _step(self, live: Live, text: str) -> None:
        action = parse_action(text)
        if action is None:
            live.trajectory.steps.append(Step(live.pending_thought, clean_line(text), INVALID_ACTION, 0.0, False))
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

    def _reflect(self, failed: list[Live]) -> dict[str, dict[str, Any]]:
        """One batched call to the retrospective model for every failed trial with a next trial."""
        if not failed:
            return {}
        inputs = [reflection_input(live.task.question, live.trajectory, live.episode_return, live.stop_reason,
                                   live.error) for live in failed]
        params = GenParams(max_new_tokens=self.spec.retro_max_new_tokens, temperature=self.spec.retro_temperature,
                           seed=self.spec.seed)
        gen = self.retro.generate([reflection_prompt(text) for text in inputs], params)
        out = {}
        for live, prompt, text, pt, ct, err in zip(failed, inputs, gen.texts, gen.prompt_tokens,
                                                   gen.completion_tokens, gen.errors):
            if err:
                log.warning("no reflection for %s trial %d: %s", live.task.task_id, live.trial, err)
                continue
            out[live.task.task_id] = {
                "run_id": self.spec.run_id, "task_id": live.task.task_id, "trial": live.trial, "env": self.spec.env,
                "prompt": prompt, "text": clean_reflection(text), "model_version": self.spec.retro_model_version,
                "gen_params": json.dumps(asdict(params), sort_keys=True), "prompt_tokens": pt,
                "completion_tokens": ct, "created_at": queries.now(),
            }
        return out

    def _commit(self, finished: list[Live], reflected: dict[str, dict[str, Any]]) -> None:
        run_id = self.spec.run_id
        trials, steps = [], []
        for live in finished:
            trials.append({
                "run_id": run_id, "task_id": live.task.task_id, "trial": live.trial, "env": self.spec.env,
                "episode_return": live.episode_return, "success": live.success,
                "score": live.score if live.score is not None else live.episode_return,
                "n_steps": len(live.trajectory.steps),
                "n_invalid": sum(not s.valid for s in live.trajectory.steps),
                "stop_reason": live.stop_reason, "error": live.error, "memory": json.dumps(live.memory),
                "context_truncated": live.dropped, "prompt_tokens": live.prompt_tokens,
                "completion_tokens": live.completion_tokens, "seconds": time.perf_counter() - live.started,
                "created_at": queries.now(),
            })
            steps += [{"run_id": run_id, "task_id": live.task.task_id, "trial": live.trial, "step": i + 1,
                       "thought": s.thought, "action": s.action, "observation": s.observation, "reward": s.reward,
                       "valid": s.valid} for i, s in enumerate(live.trajectory.steps)]
            self.episodes_done += 1
            self.last_trial[live.task.task_id] = live.trial
            if live.success:
                self.solved.add(live.task.task_id)
        written = queries.append_trials(self.lake, trials, steps, list(reflected.values()))
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
        self.progress({"episodes_done": self.episodes_done, "successes": len(self.solved),
                       "n_tasks": len(self.task_ids), "max_episodes": len(self.task_ids) * self.spec.trials,
                       "completion_tokens": self.tokens[1],
                       "tokens_per_second": self.tokens[1] / elapsed if elapsed else 0.0})

    def _finish(self, started: float) -> RunResult:
        trials = queries.committed_trials(self.lake, self.spec.run_id)
        curve = success_by_trial(trials, len(self.task_ids), self.spec.trials)
        seconds = time.perf_counter() - started
        result = RunResult(self.spec.run_id, len(self.task_ids), self.spec.trials, curve, dict(self.written),
                           self.tokens[0], self.tokens[1], seconds)
        if self.shard is None:
            queries.record_run_end(self.lake, self.spec.run_id, "completed",
                                   {"success_by_trial": curve, "written": result.written})
        log.info("run %s: success by trial %s (%d new trials, %.1f tok/s)", self.spec.run_id,
                 " ".join(f"{x:.2f}" for x in curve), self.written["trials"], result.tokens_per_second)
        return result

