-- model_lineage: adapter -> dataset version -> lake snapshot -> the runs that snapshot could see
-- (runs started at or before the snapshot was taken), plus whether the adapter is the promoted one.
CREATE OR REPLACE VIEW model_lineage AS
WITH model AS (
    SELECT model_id, stage, base_model, parent_model_id, adapter_path, dataset, dataset_version,
           created_at
    FROM lake.model_versions
),
dataset AS (
    SELECT dataset, version AS dataset_version, snapshot_id, sql_hash, row_count
    FROM lake.dataset_versions
),
snapshot AS (
    SELECT snapshot_id, snapshot_time FROM lake.snapshots()
),
visible_run AS (
    SELECT s.snapshot_id, list(r.run_id ORDER BY r.run_id) AS run_ids, count(*) AS n_runs
    FROM snapshot s
    JOIN lake.runs r ON r.started_at <= s.snapshot_time
    GROUP BY s.snapshot_id
),
promoted AS (
    SELECT model_id FROM lake.promotions ORDER BY promoted_at DESC LIMIT 1
)
SELECT m.model_id, m.stage, m.base_model, m.parent_model_id, m.adapter_path,
       m.dataset, m.dataset_version, d.snapshot_id, d.sql_hash, d.row_count,
       s.snapshot_time,
       coalesce(v.run_ids, []::VARCHAR[]) AS run_ids, coalesce(v.n_runs, 0) AS n_runs,
       m.model_id IN (SELECT model_id FROM promoted) AS promoted,
       m.created_at
FROM model m
LEFT JOIN dataset d USING (dataset, dataset_version)
LEFT JOIN snapshot s USING (snapshot_id)
LEFT JOIN visible_run v USING (snapshot_id);
