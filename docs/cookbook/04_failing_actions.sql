-- Q: Which final actions do failed trials end with most often (per env)?
WITH last_step AS (
    SELECT run_id, task_id, trial, action
    FROM lake.steps
    QUALIFY row_number() OVER (PARTITION BY run_id, task_id, trial ORDER BY step DESC) = 1
),
failed AS (
    SELECT run_id, task_id, trial, env FROM lake.trial_outcomes WHERE NOT success
)
SELECT failed.env, last_step.action, count(*) AS n_failed_trials
FROM failed
JOIN last_step USING (run_id, task_id, trial)
GROUP BY ALL
ORDER BY n_failed_trials DESC, action
LIMIT 10;
