-- The lake's tables. Append-only facts: nothing is updated in place; later facts supersede earlier
-- ones in their own tables (run_ends, promotions). Keys are in the comment above each table and are
-- enforced by retro.store.lake.KEYS on every write (DuckLake has no primary keys).
-- Run against the attached catalog `lake` with `USE lake` in effect.

-- [env, split, task_id]: one task of an environment split (question/goal, gold answer or game path)
CREATE TABLE IF NOT EXISTS tasks (
    env VARCHAR, split VARCHAR, task_id VARCHAR,
    question VARCHAR, answer VARCHAR, metadata VARCHAR,  -- metadata: JSON
    created_at TIMESTAMPTZ
);

-- [run_id]: one rollout of N tasks x K trials in one mode
CREATE TABLE IF NOT EXISTS runs (
    run_id VARCHAR, flow_run_id VARCHAR, mode VARCHAR, env VARCHAR, split VARCHAR,
    actor_model VARCHAR, retro_model VARCHAR, retro_model_version VARCHAR,
    n_tasks INTEGER, n_trials INTEGER, config VARCHAR, config_hash VARCHAR, code_version VARCHAR,
    seed BIGINT, started_at TIMESTAMPTZ
);

-- [run_id]: how a run ended (a run without a row here is in flight or crashed)
CREATE TABLE IF NOT EXISTS run_ends (
    run_id VARCHAR, status VARCHAR, finished_at TIMESTAMPTZ, summary VARCHAR  -- summary: JSON
);

-- [run_id, task_id, trial]: one episode
CREATE TABLE IF NOT EXISTS trials (
    run_id VARCHAR, task_id VARCHAR, trial INTEGER, env VARCHAR,
    episode_return DOUBLE, success BOOLEAN, score DOUBLE,  -- score: F1 (hotpotqa), shop score (webshop)
    n_steps INTEGER, n_invalid INTEGER, stop_reason VARCHAR, error VARCHAR,
    memory VARCHAR,  -- JSON list of the reflections this trial started with, oldest first
    context_truncated INTEGER,  -- trajectory steps dropped to fit the actor's context window
    prompt_tokens BIGINT, completion_tokens BIGINT, seconds DOUBLE,
    created_at TIMESTAMPTZ
);

-- [run_id, task_id, trial, step]: one thought/action/observation
CREATE TABLE IF NOT EXISTS steps (
    run_id VARCHAR, task_id VARCHAR, trial INTEGER, step INTEGER,
    thought VARCHAR, action VARCHAR, observation VARCHAR, reward DOUBLE, valid BOOLEAN
);

-- [run_id, task_id, trial]: the reflection written after failed trial `trial`, used by trial+1
CREATE TABLE IF NOT EXISTS reflections (
    run_id VARCHAR, task_id VARCHAR, trial INTEGER, env VARCHAR,
    prompt VARCHAR, text VARCHAR, model_version VARCHAR,
    gen_params VARCHAR,  -- JSON
    prompt_tokens BIGINT, completion_tokens BIGINT, created_at TIMESTAMPTZ
);

-- [run_id, task_id, trial, label_version]: rating = G(trial+1) - G(trial)
CREATE TABLE IF NOT EXISTS ratings (
    run_id VARCHAR, task_id VARCHAR, trial INTEGER, label_version VARCHAR,
    return_before DOUBLE, return_after DOUBLE, rating DOUBLE, labelled_at TIMESTAMPTZ
);

-- [dataset, version]: a training set built by datasets/<dataset>.sql at one lake snapshot; path is relative
-- to $RETRO_HOME (absolute in lakes written before; retro.store.artifacts resolves both)
CREATE TABLE IF NOT EXISTS dataset_versions (
    dataset VARCHAR, version VARCHAR, sql_hash VARCHAR, snapshot_id BIGINT,
    row_count BIGINT, path VARCHAR, params VARCHAR, created_at TIMESTAMPTZ
);

-- [model_id]: a trained adapter (stage sft | rm | ppo | grpo | rloo) and where it came from; adapter_path is
-- relative to $RETRO_HOME (absolute in lakes written before; retro.store.artifacts resolves both)
CREATE TABLE IF NOT EXISTS model_versions (
    model_id VARCHAR, stage VARCHAR, base_model VARCHAR, parent_model_id VARCHAR,
    adapter_path VARCHAR, dataset VARCHAR, dataset_version VARCHAR,
    config VARCHAR, metrics VARCHAR,  -- JSON
    created_at TIMESTAMPTZ
);

-- [model_id, run_id]: an evaluation of a model version (a rollout on a held-out split)
CREATE TABLE IF NOT EXISTS model_evaluations (
    model_id VARCHAR, run_id VARCHAR, env VARCHAR, split VARCHAR,
    final_success DOUBLE, metrics VARCHAR, evaluated_at TIMESTAMPTZ
);

-- [model_id, promoted_at]: the newest row names the promoted retrospective adapter
CREATE TABLE IF NOT EXISTS promotions (
    model_id VARCHAR, promoted_at TIMESTAMPTZ, previous_model_id VARCHAR, reason VARCHAR
);

-- Branches (rollout.reflections_per_failure = G > 1): after a failed trial the retrospective model writes
-- G reflections, sample 0..G-1, and each is tried by its own branch of the next trial. `sample` is part of
-- the keys of trials, steps, reflections and ratings: a trial's sample is the reflection it tried (0 = the
-- task's main line, which every later trial continues), a reflection's is its index among the G. Added by
-- ALTER so that lakes made before branches existed read 0 for every old row.
ALTER TABLE trials ADD COLUMN IF NOT EXISTS sample INTEGER DEFAULT 0;
ALTER TABLE steps ADD COLUMN IF NOT EXISTS sample INTEGER DEFAULT 0;
ALTER TABLE reflections ADD COLUMN IF NOT EXISTS sample INTEGER DEFAULT 0;
ALTER TABLE ratings ADD COLUMN IF NOT EXISTS sample INTEGER DEFAULT 0;

-- The tag that makes a run of an otherwise identical spec (e.g. the nightly date, a benchmark's name), so
-- the runs compared side by side can be found again (NULL in lakes made before it was recorded).
ALTER TABLE runs ADD COLUMN IF NOT EXISTS tag VARCHAR;

-- Whether the task is on its environment's held-out split (Environment.held_out_split): evaluation only,
-- never training data, whatever environments a data set pools (NULL in lakes made before it was recorded).
ALTER TABLE tasks ADD COLUMN IF NOT EXISTS held_out BOOLEAN;

-- [model_id, recorded_at]: a trained adapter seen answering on a server (`retro models check --adapter`):
-- vLLM serves it as a model named by its model_id, llama-server as its GGUF's index `lora_id` among its
-- --lora files. Appended, like promotions: the newest row per adapter is where it was last seen served.
CREATE TABLE IF NOT EXISTS model_servings (
    model_id VARCHAR, server VARCHAR, base_url VARCHAR, lora_id INTEGER, recorded_at TIMESTAMPTZ
);
