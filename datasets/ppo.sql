-- ppo: the distinct reflection prompts of failed trials, the queries PPO samples reflections for.
--
-- Inputs:     lake.trials, lake.reflections, lake.runs (to leave out the held-out split)
-- Output:     one row per distinct (env, prompt) written after a failed trial, ordered by env, prompt:
--               env      the environment the prompt came from
--               prompt   the text the retrospective model read (task, failed trajectory, return)
-- Parameters: $env         keep one environment, or NULL to pool every environment (settings dataset.env)
--             $eval_split  runs on this split are evaluation, never training data (settings eval.split)
WITH held_out AS (
    SELECT run_id FROM lake.runs WHERE split = $eval_split
),
failed AS (
    SELECT run_id, task_id, trial
    FROM lake.trials
    WHERE success IS DISTINCT FROM TRUE
),
written AS (
    SELECT run_id, task_id, trial, env, prompt
    FROM lake.reflections
    WHERE run_id NOT IN (SELECT run_id FROM held_out)
      AND ($env IS NULL OR env = $env) AND trim(coalesce(prompt, '')) <> ''
),
prompts AS (
    SELECT DISTINCT w.env, w.prompt
    FROM written w
    JOIN failed f USING (run_id, task_id, trial)
)
SELECT env, prompt
FROM prompts
ORDER BY env, prompt
