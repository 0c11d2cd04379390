-- Q: Where did each adapter come from: which dataset version, lake snapshot and runs, and which is promoted?
SELECT model_id, stage, parent_model_id, dataset, dataset_version, snapshot_id, row_count,
       n_runs, run_ids, promoted
FROM lake.model_lineage
ORDER BY created_at, model_id;
