"""Prefect flows: thin wiring over retro/. Importing this package points Prefect at the settings' home
(RETRO_HOME or retro.toml; PREFECT_HOME inside it, analytics off, a generous ephemeral-server start-up)
unless already set."""

import os

from retro.config import load_settings

os.environ.setdefault("PREFECT_HOME", str(load_settings().home.resolve() / "prefect"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")
# retro's own log lines reach the run log through flows/logs.py (whatever the import order and root level)
