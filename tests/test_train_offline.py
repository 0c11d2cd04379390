"""Trainers never phone home (issue 29, point 8): trl's trainers send telemetry through huggingface_hub
when built, unless its documented variables say no; importing retro.train sets them, before trl loads."""

from __future__ import annotations

import os
import subprocess
import sys

PROBE = """
import retro.train.sft  # the trainers' start: trl and huggingface_hub load under retro.train
from huggingface_hub import constants
from huggingface_hub.utils import _telemetry, send_telemetry

send_telemetry(topic="trl/SFTTrainer", library_name="trl", library_version="0")  # what trl's trainers call
print(constants.HF_HUB_DISABLE_TELEMETRY, constants.is_offline_mode(), _telemetry._TELEMETRY_THREAD is None)
"""


def _probe(**env: str) -> str:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("HF_", "TRANSFORMERS_")) and k not in ("CI", "DISABLE_TELEMETRY")}
    done = subprocess.run([sys.executable, "-c", PROBE], env={**clean, **env}, capture_output=True, text=True,
                          timeout=300, check=True)
    return done.stdout.split()[-3:]


def test_training_turns_telemetry_off_and_the_hub_offline():
    assert _probe() == ["True", "True", "True"]


def test_a_variable_the_user_set_wins():
    assert _probe(HF_HUB_OFFLINE="0") == ["True", "False", "True"]
