-- Q: What is the success rate after each trial, per mode and retrospective model version?
-- (The paper's main figure as a table: averaged over the runs of each mode/version.)
SELECT mode, coalesce(retro_model_version, '-') AS model_version, trial,
       round(avg(success_rate), 3) AS success_rate, count(*) AS n_runs
FROM lake.success_by_trial
GROUP BY ALL
ORDER BY mode, model_version, trial;
