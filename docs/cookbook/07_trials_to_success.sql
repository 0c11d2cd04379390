-- Q: On average, at which trial are tasks first solved, and how many tasks are never solved, per mode?
WITH per_task AS (
    SELECT run_id, mode, task_id, min(trial) FILTER (WHERE success) AS first_success
    FROM lake.trial_outcomes
    GROUP BY ALL
)
SELECT mode, count(*) AS n_tasks, count(first_success) AS n_solved,
       count(*) - count(first_success) AS n_never_solved,
       round(avg(first_success), 2) AS avg_first_success_trial
FROM per_task
GROUP BY mode
ORDER BY mode;
