-- Q: How much does each retrospective model version gain from the first to the last trial?
WITH curve AS (
    SELECT run_id, mode, retro_model_version, trial, success_rate,
           max(trial) OVER (PARTITION BY run_id) AS last_trial
    FROM lake.success_by_trial
)
SELECT mode, coalesce(retro_model_version, '-') AS model_version,
       round(avg(success_rate) FILTER (WHERE trial = 0), 3) AS first_trial,
       round(avg(success_rate) FILTER (WHERE trial = last_trial), 3) AS last_trial,
       round(avg(success_rate) FILTER (WHERE trial = last_trial)
             - avg(success_rate) FILTER (WHERE trial = 0), 3) AS gain
FROM curve
GROUP BY ALL
ORDER BY gain DESC, mode;
