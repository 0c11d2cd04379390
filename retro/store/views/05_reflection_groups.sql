-- reflection_groups: the G reflections written after one failed trial (rollout.reflections_per_failure),
-- each tried by its own branch: how far their ratings spread, and whether the best of them beat
-- sample 0 (the retrospective model's own reflection, greedy by default, which the main line kept).
-- A group whose ratings are all equal taught nothing: no pair, no contrast.
CREATE OR REPLACE VIEW reflection_groups AS
WITH rated AS (
    SELECT run_id, task_id, trial, sample, rating, mode, env
    FROM reflection_quality
    WHERE rating IS NOT NULL
)
SELECT run_id, task_id, trial, any_value(mode) AS mode, any_value(env) AS env,
       count(*)::INTEGER AS n_samples,
       min(rating) AS min_rating, max(rating) AS max_rating, max(rating) - min(rating) AS spread,
       avg(rating) AS mean_rating,
       max(rating) FILTER (WHERE sample = 0) AS greedy_rating,
       max(rating) > max(rating) FILTER (WHERE sample = 0) AS best_beats_greedy,
       count(DISTINCT rating) = 1 AS all_equal
FROM rated
GROUP BY run_id, task_id, trial;
