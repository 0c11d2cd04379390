-- sft: the best positively rated reflection of each failed trial, for supervised fine-tuning of the
-- retrospective model.
--
-- Inputs:     lake.reflections, lake.ratings, lake.runs, lake.tasks (to leave out held-out splits)
-- Output:     one row per failed trial (run_id, task_id, trial) whose best reflection was rated above the
--             threshold, ordered by key. With one reflection per failure that is the reflection itself;
--             with G (rollout.reflections_per_failure) it is the highest rated of the G (ties: lowest sample).
--               run_id, task_id, trial   the failed trial the reflection followed
--               sample                   which of its G reflections (0 = the one the main line kept)
--               env                      the environment it came from (one adapter serves them all)
--               prompt                   the text the retrospective model read (the user turn)
--               completion               the reflection it wrote (the assistant turn, trained on)
--               rating                   G(trial + 1 of branch `sample`) - G(trial)
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
best AS (
    SELECT w.run_id, w.task_id, w.trial, w.sample, w.env, w.prompt, w.text AS completion, r.rating
    FROM written w
    JOIN rated r USING (run_id, task_id, trial, sample)
    QUALIFY row_number() OVER (PARTITION BY w.run_id, w.task_id, w.trial ORDER BY r.rating DESC, w.sample) = 1
)
SELECT run_id, task_id, trial, sample, env, prompt, completion, rating
FROM best
WHERE rating > $threshold
ORDER BY run_id, task_id, trial
