"""CLI command groups, one module each; retro/cli.py assembles them. Commands stay thin:
load Settings, call one retro function, render the result (rich table, or JSON with --json)."""
