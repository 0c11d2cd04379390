-- ppo: the distinct reflection prompts of failed trials, the queries PPO samples reflections for.
--
-- Inputs:     lake.trials, lake.reflections, lake.runs, lake.tasks (to leave out held-out splits)
-- Output:     one row per distinct (env, prompt) written after a failed trial, ordered by env, prompt:
--               env      the environment the prompt came from
--               prompt   the text the retrospective model read (task, failed trajectory, return)
-- Parameters: $env         keep one environment, or NULL to pool every environment (settings dataset.env)
--             $held_out    "env/split" of every held-out split (Environment.held_out_split, settings eval.split)
WITH held_out AS (  -- runs on a held-out split: each environment's own, as known now or as recorded with its tasks
    SELECT run_id FROM lake.runs WHERE list_contains($held_out, env || '/' || split)
    UNION
    SELECT r.run_id FROM lake.runs r JOIN lake.tasks t ON t.env = r.env AND t.split = r.split WHERE t.held_out
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
