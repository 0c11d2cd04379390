"""Training the retrospective model offline: versioned data sets (datasets/*.sql), SFT, reward model,
PPO / GRPO / RLOO (trl, LoRA only). Import the stage modules themselves: this package imports nothing, so
building a data set does not load torch."""

import os

# PPO lives in trl.experimental, which warns on import unless told we know; every trl import is under here
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
# Trainers never phone home: trl's trainers send telemetry when built (trl/trainer/base_trainer.py, through
# huggingface_hub's send_telemetry), which these turn off; training reads local folders only, so the hub is
# offline too. huggingface_hub reads them once, when first imported: every trl import is under here.
# A variable the user set wins.
for _name in ("HF_HUB_DISABLE_TELEMETRY", "HF_HUB_OFFLINE"):
    os.environ.setdefault(_name, "1")
