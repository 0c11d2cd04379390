"""Training the retrospective model offline: versioned data sets (datasets/*.sql), SFT, reward model,
PPO / GRPO / RLOO (trl, LoRA only). Import the stage modules themselves: this package imports nothing, so
building a data set does not load torch."""

import os

# PPO lives in trl.experimental, which warns on import unless told we know; every trl import is under here
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
