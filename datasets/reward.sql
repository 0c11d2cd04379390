-- reward: every rated reflection with a binary label, for a pointwise reward model (a classifier on
-- prompt + reflection); the reward model uses it when reward_pairs.sql has no pairs.
--
-- Inputs:     lake.reflections, lake.ratings, lake.runs, lake.tasks (to leave out held-out splits)
-- Output:     one row per rated reflection, ordered by key:
--               run_id, task_id, trial   the failed trial the reflection followed
--               sample                   which of the G reflections written after it (0 with one per failure)
--               env                      the environment it came from
--               prompt                   the text the retrospective model read
--               reflection               the reflection it wrote
--               rating                   G(trial + 1 of branch `sample`) - G(trial)
--               label                    rating > threshold (the class the reward model learns)
-- Parameters: $label_version  ratings of this labelling rule only (settings label.version)
--             $threshold      a rating above this is positive (settings dataset.positive_threshold)
--             $env            keep one environment, or NULL to pool every environment (settings dataset.env)
--             $held_out       "env/split" of every held-out split (Environment.held_out_split, settings eval.split)
WITH held_out AS (  -- runs on a held-out split: each environment's own, as known now or as recorded with its tasks
    SELECT run_id FROM lake.runs WHERE list_contains($held_out, env || '/' || split)
    UNION
    SELECT r.run_id FROM lake.runs r JOIN lake.tasks t ON t.env = r.env AND t.split = r.split WHERE t.held_out
),
rated AS (
    SELECT run_id, task_id, trial, sample, rating
    FROM lake.ratings
    WHERE label_version = $label_version AND rating IS NOT NULL
),
written AS (
    SELECT run_id, task_id, trial, sample, env, prompt, text
    FROM lake.reflections
    WHERE run_id NOT IN (SELECT run_id FROM held_out)
      AND ($env IS NULL OR env = $env) AND trim(coalesce(text, '')) <> '' AND trim(coalesce(prompt, '')) <> ''
),
labelled AS (
    SELECT w.run_id, w.task_id, w.trial, w.sample, w.env, w.prompt, w.text AS reflection, r.rating,
           r.rating > $threshold AS label
    FROM written w
    JOIN rated r USING (run_id, task_id, trial, sample)
)
SELECT run_id, task_id, trial, sample, env, prompt, reflection, rating, label
FROM labelled
ORDER BY run_id, task_id, trial, sample
