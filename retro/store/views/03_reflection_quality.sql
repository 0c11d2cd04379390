-- reflection_quality: each reflection with its rating under the newest label version, its length,
-- whether the trial that tried it succeeded, the model version that wrote it and the run's mode and env.
-- A reflection (trial i, sample g) was tried by trial i + 1 of branch g, after main-line trial i.
CREATE OR REPLACE VIEW reflection_quality AS
WITH latest_rating AS (
    SELECT run_id, task_id, trial, sample, label_version, rating, return_before, return_after
    FROM lake.ratings
    QUALIFY row_number() OVER (PARTITION BY run_id, task_id, trial, sample
                               ORDER BY labelled_at DESC, label_version DESC) = 1
),
next_trial AS (
    SELECT run_id, task_id, trial - 1 AS trial, sample, success AS next_success, episode_return AS next_return
    FROM lake.trials
),
this_trial AS (
    SELECT run_id, task_id, trial, episode_return, success
    FROM lake.trials
    WHERE sample = 0
)
SELECT f.run_id, f.task_id, f.trial, f.sample, r.mode, f.env, f.model_version, f.text,
       length(f.text) AS length_chars,
       lr.rating, lr.label_version,
       tt.episode_return AS return_before, nt.next_return AS return_after,
       nt.next_success,
       coalesce(NOT tt.success AND nt.next_success, false) AS flipped,
       f.created_at
FROM lake.reflections f
JOIN lake.runs r USING (run_id)
LEFT JOIN this_trial tt USING (run_id, task_id, trial)
LEFT JOIN next_trial nt USING (run_id, task_id, trial, sample)
LEFT JOIN latest_rating lr USING (run_id, task_id, trial, sample);
