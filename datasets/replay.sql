-- replay: the failed trials a sampled reflection can be tried against, for policy gradient with the
-- environment's reward (settings train.reward = environment): the actor replays the task with the
-- trial's memory plus the new reflection, and the reward is that trial's return minus this one's.
--
-- Inputs:     lake.trials, lake.reflections, lake.runs (for the split, and to leave out the held-out one)
-- Output:     one row per failed main-line trial with a reflection, ordered by key:
--               run_id, task_id, trial   the failed trial
--               env, split               where its task lives (the replay loads it from there)
--               prompt                   the text the retrospective model read after it
--               memory                   JSON list of the reflections the failed trial started with
--               return_before            its return G(trial)
-- Parameters: $env         keep one environment, or NULL to pool every environment (settings dataset.env)
--             $eval_split  runs on this split are evaluation, never training data (settings eval.split)
WITH run AS (
    SELECT run_id, split FROM lake.runs WHERE split <> $eval_split
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
