-- trial_outcomes: one row per trial (episode) with its run's mode, env, split and models. `sample` is 0 on a
-- task's main line; a branch trial (rollout.reflections_per_failure > 1) tried reflection `sample` of trial - 1.
CREATE OR REPLACE VIEW trial_outcomes AS
WITH trial AS (
    SELECT run_id, task_id, trial, sample, episode_return, success, score, n_steps, n_invalid, stop_reason,
           error, context_truncated, prompt_tokens, completion_tokens, seconds, created_at
    FROM lake.trials
),
run AS (
    SELECT run_id, mode, env, split, actor_model, retro_model, retro_model_version, n_tasks, n_trials,
           started_at
    FROM lake.runs
)
SELECT run.run_id, run.mode, run.env, run.split, run.actor_model, run.retro_model,
       run.retro_model_version, run.n_tasks, run.n_trials,
       trial.task_id, trial.trial, trial.sample, trial.episode_return, trial.success, trial.score, trial.n_steps,
       trial.n_invalid, trial.stop_reason, trial.error, trial.context_truncated,
       trial.prompt_tokens, trial.completion_tokens, trial.seconds, trial.created_at
FROM trial
JOIN run USING (run_id);
