-- reward_pairs: (chosen, rejected) reflections of the same prompt, for a pairwise (Bradley-Terry) reward
-- model: within a prompt, every reflection rated higher than another is chosen over it.
--
-- Pairs come from the G reflections written after one failed trial (rollout.reflections_per_failure),
-- each tried by its own branch, and from any reflections of the same prompt text (a trial failed the same
-- way in two runs). Equal ratings make no pair: the environment did not tell them apart.
--
-- Inputs:     lake.reflections, lake.ratings, lake.runs, lake.tasks (to leave out held-out splits)
-- Output:     one row per ordered pair, ordered by env, prompt, chosen key, rejected key:
--               env                  the environment of the prompt
--               prompt               the text the retrospective model read
--               chosen, rejected     the better and the worse reflection
--               chosen_rating, rejected_rating
--               margin               chosen_rating - rejected_rating (> 0)
--               chosen_key, rejected_key   run_id/task_id/trial/sample of each reflection
-- Parameters: $label_version  ratings of this labelling rule only (settings label.version)
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
scored AS (
    SELECT w.env, w.prompt, w.text, r.rating,
           concat_ws('/', w.run_id, w.task_id, w.trial, w.sample) AS key
    FROM written w
    JOIN rated r USING (run_id, task_id, trial, sample)
),
pairs AS (
    SELECT c.env, c.prompt, c.text AS chosen, r.text AS rejected,
           c.rating AS chosen_rating, r.rating AS rejected_rating, c.rating - r.rating AS margin,
           c.key AS chosen_key, r.key AS rejected_key
    FROM scored c
    JOIN scored r ON r.env = c.env AND r.prompt = c.prompt AND c.rating > r.rating AND c.text <> r.text
)
SELECT env, prompt, chosen, rejected, chosen_rating, rejected_rating, margin, chosen_key, rejected_key
FROM pairs
ORDER BY env, prompt, chosen_key, rejected_key
