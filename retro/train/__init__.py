"""Training the retrospective model offline: versioned data sets (retro/datasets/*.sql), SFT, reward model,
PPO / GRPO / RLOO (trl, LoRA only). Import the stage modules themselves: this package imports nothing, so
building a data set does not load torch."""
