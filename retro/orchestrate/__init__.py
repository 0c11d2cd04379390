"""Running requests: one rollout in this process or over shards, an evaluation that may promote, the
modes side by side. Above agent/, train/ and eval/; below the CLI and the flows, which build the requests."""
