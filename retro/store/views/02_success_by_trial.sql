-- success_by_trial: the success rate after each trial 0..n_trials-1 of every run (the paper's curve).
-- Cumulative: a task first solved at trial j counts as solved at every trial >= j (solved tasks
-- stop); the denominator is the run's n_tasks, so unfinished or crashed runs are not inflated. Main line
-- only (sample 0): a branch trial tried another reflection and never continues its task.
CREATE OR REPLACE VIEW success_by_trial AS
WITH run AS (
    SELECT run_id, mode, env, split, retro_model_version, n_tasks, n_trials
    FROM lake.runs
),
trial_index AS (
    SELECT run.*, t.i::INTEGER AS trial
    FROM run, range(run.n_trials) AS t(i)
),
first_success AS (
    SELECT run_id, task_id, min(trial) AS first_trial
    FROM lake.trials
    WHERE success AND sample = 0
    GROUP BY run_id, task_id
)
SELECT ti.run_id, ti.mode, ti.env, ti.split, ti.retro_model_version, ti.trial,
       count(fs.task_id)::INTEGER AS n_solved, ti.n_tasks,
       CASE WHEN ti.n_tasks > 0 THEN count(fs.task_id) / ti.n_tasks ELSE 0.0 END AS success_rate
FROM trial_index ti
LEFT JOIN first_success fs ON fs.run_id = ti.run_id AND fs.first_trial <= ti.trial
GROUP BY ti.run_id, ti.mode, ti.env, ti.split, ti.retro_model_version, ti.trial, ti.n_tasks;
