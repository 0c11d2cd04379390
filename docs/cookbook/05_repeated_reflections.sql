-- Q: Which reflections merely repeat the previous reflection on the same task (a sign of a stuck model)?
WITH reflection AS (
    SELECT run_id, task_id, trial, mode, model_version, text,
           lag(text) OVER (PARTITION BY run_id, task_id ORDER BY trial) AS previous_text
    FROM lake.reflection_quality
)
SELECT mode, model_version, task_id, trial, text
FROM reflection
WHERE text = previous_text
ORDER BY mode, model_version, task_id, trial;
