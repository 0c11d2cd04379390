"""Settings: presets, env vars, retro.toml, and one-line errors naming the setting."""

from __future__ import annotations

import pytest

from retro.config import load_settings
from retro.errors import ConfigError


def test_defaults_and_presets(retro_home):
    assert load_settings().rollout.memory_size == 3
    tiny = load_settings(preset="tiny")
    assert tiny.rollout.tasks == 4
    # an explicit value beats the preset
    assert load_settings(preset="tiny", rollout={"tasks": 7}).rollout.tasks == 7


def test_env_vars_and_toml(retro_home, monkeypatch, tmp_path):
    monkeypatch.setenv("RETRO_ROLLOUT__TRIALS", "5")
    (tmp_path / "retro.toml").write_text('[actor]\nmax_new_tokens = 99\n')
    s = load_settings()
    assert s.rollout.trials == 5
    assert s.actor.max_new_tokens == 99


def test_bad_value_names_the_setting(retro_home, monkeypatch):
    monkeypatch.setenv("RETRO_ROLLOUT__TRIALS", "0")
    with pytest.raises(ConfigError, match=r"rollout\.trials.*RETRO_ROLLOUT__TRIALS") as info:
        load_settings()
    assert "\n" not in str(info.value)


def test_unknown_key_is_an_error(retro_home, tmp_path):
    (tmp_path / "retro.toml").write_text('[rollout]\ntrails = 3\n')
    with pytest.raises(ConfigError, match="unknown setting 'rollout.trails'"):
        load_settings()


def test_home_that_is_a_file(retro_home, tmp_path):
    bad = tmp_path / "afile"
    bad.write_text("x")
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        load_settings(home=bad)


def test_config_hash_is_stable_and_sensitive(retro_home):
    a, b = load_settings(), load_settings()
    assert a.config_hash() == b.config_hash()
    assert load_settings(rollout={"seed": 1}).config_hash() != a.config_hash()
