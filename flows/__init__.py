"""Prefect flows: thin wiring over retro/. Importing this package points Prefect at $RETRO_HOME
(PREFECT_HOME inside it, analytics off, a generous ephemeral-server start-up) unless already set."""

import os
from pathlib import Path

_home = Path(os.environ.get("RETRO_HOME", ".retro")).resolve()
os.environ.setdefault("PREFECT_HOME", str(_home / "prefect"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "retro")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")
# retro's loggers also log outside flows (e.g. `retro demo`'s comparison after the nightly flow)
os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
