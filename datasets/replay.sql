-- replay: the failed trials a sampled reflection can be tried against, for policy gradient with the
-- environment's reward (settings train.reward = environment): the actor replays the task with the
-- trial's memory plus the new reflection, and the reward is that trial's return minus this one's.
--
-- Inputs:     lake.trials, lake.reflections, lake.runs (for the split), lake.tasks (to leave out held-out splits)
-- Output:     one row per failed main-line trial with a reflection, ordered by key:
--               run_id, task_id, trial   the failed trial
--               env, split               where its task lives (the replay loads it from there)
--               prompt                   the text the retrospective model read after it
--               memory                   JSON list of the reflections the failed trial started with
--               return_before            its return G(trial)
-- Parameters: $env         keep one environment, or NULL to pool every environment (settings dataset.env)
--             $held_out    "env/split" of every held-out split (Environment.held_out_split, settings eval.split)
WITH held_out AS (  -- runs on a held-out split: each environment's own, as known now or as recorded with its tasks
    SELECT run_id FROM lake.runs WHERE list_contains($held_out, env || '/' || split)
    UNION
    SELECT r.run_id FROM lake.runs r JOIN lake.tasks t ON t.env = r.env AND t.split = r.split WHERE t.held_out
),
run AS (
    SELECT run_id, split FROM lake.runs WHERE run_id NOT IN (SELECT run_id FROM held_out)
),
failed AS (
    SELECT run_id, task_id, trial, memory, episode_return AS return_before
    FROM lake.trials
    WHERE sample = 0 AND success IS DISTINCT FROM TRUE
),
written AS (
    SELECT run_id, task_id, trial, env, prompt
    FROM lake.reflections
    WHERE sample = 0 AND ($env IS NULL OR env = $env) AND trim(coalesce(prompt, '')) <> ''
)
SELECT w.run_id, w.task_id, w.trial, w.env, run.split, w.prompt, coalesce(f.memory, '[]') AS memory,
       coalesce(f.return_before, 0.0) AS return_before
FROM written w
JOIN failed f USING (run_id, task_id, trial)
JOIN run USING (run_id)
ORDER BY w.run_id, w.task_id, w.trial
