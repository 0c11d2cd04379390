-- Q: Which reflections flipped a failed trial into a success on the next trial?
SELECT mode, model_version, task_id, trial, rating, text
FROM lake.reflection_quality
WHERE flipped
ORDER BY mode, model_version, task_id, trial;
