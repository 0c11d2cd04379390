-- sft: the positively rated reflections, for supervised fine-tuning of the retrospective model.
--
-- Inputs:     lake.reflections, lake.ratings, lake.runs (to leave out the held-out split)
-- Output:     one row per reflection rated above the threshold, ordered by key:
--               run_id, task_id, trial   the reflection's key (it followed failed trial `trial`)
--               env                      the environment it came from (one adapter serves them all)
--               prompt                   the text the retrospective model read (the user turn)
--               completion               the reflection it wrote (the assistant turn, trained on)
--               rating                   G(trial + 1) - G(trial)
-- Parameters: $label_version  ratings of this labelling rule only (settings label.version)
--             $threshold      a rating above this is positive (settings dataset.positive_threshold)
--             $env            keep one environment, or NULL to pool every environment (settings dataset.env)
--             $eval_split     runs on this split are evaluation, never training data (settings eval.split)
WITH held_out AS (
    SELECT run_id FROM lake.runs WHERE split = $eval_split
),
rated AS (
    SELECT run_id, task_id, trial, rating
    FROM lake.ratings
    WHERE label_version = $label_version
),
written AS (
    SELECT run_id, task_id, trial, env, prompt, text
    FROM lake.reflections
    WHERE run_id NOT IN (SELECT run_id FROM held_out)
      AND ($env IS NULL OR env = $env) AND trim(coalesce(text, '')) <> '' AND trim(coalesce(prompt, '')) <> ''
),
positive AS (
    SELECT w.run_id, w.task_id, w.trial, w.env, w.prompt, w.text AS completion, r.rating
    FROM written w
    JOIN rated r USING (run_id, task_id, trial)
    WHERE r.rating > $threshold
)
SELECT run_id, task_id, trial, env, prompt, completion, rating
FROM positive
ORDER BY run_id, task_id, trial
