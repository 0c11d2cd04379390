"""One batched interface for every model backend: a list of prompts in, a list of completions out.

A prompt is either raw text (completion style) or a chat: a list of {"role", "content"} messages.
When a chat's last message has role "assistant", the model continues that message (a prefilled
answer such as "Thought 1:"), so the actor can steer an instruct model with a ReAct scaffold.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from retro.errors import BackendRefusedError, BackendUnreachableError

Message = dict[str, str]
Prompt = str | list[Message]


@dataclass(frozen=True)
class GenParams:
    """Decoding parameters of one batched call (recorded with every reflection)."""

    max_new_tokens: int = 64
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    stop: tuple[str, ...] = ()  # cut the completion at the first of these (the stop string is dropped)
    seed: int = 0
    # When sampling: one seed per prompt, so a prompt's text depends on its own seed only, not on the batch
    # it shares (a rerun after a crash batches differently); empty = `seed` for the whole call.
    seeds: tuple[int, ...] = ()
    # Per prompt: a GBNF grammar (llama.cpp's notation) the completion must match, or None for free text;
    # empty = no prompt is constrained. The engine decodes within it (llama.cpp grammar, vLLM structured outputs).
    grammars: tuple[str | None, ...] = ()

    def row_seed(self, i: int) -> int:
        """The seed of prompt i: its own, else the call's seed offset by its position."""
        return self.seeds[i] if self.seeds else self.seed + i

    def row_grammar(self, i: int) -> str | None:
        """The grammar of prompt i, or None when it is free text."""
        return self.grammars[i] if self.grammars else None


@dataclass
class Generation:
    """The completions of one batched call, with the token accounting the lake stores."""

    texts: list[str]
    prompt_tokens: list[int]
    completion_tokens: list[int]
    seconds: float
    errors: list[str | None] = field(default_factory=list)  # per prompt: None, or why it failed after retries
    refused: list[bool] = field(default_factory=list)  # per prompt: the server refused it (no retry helps)

    def __post_init__(self) -> None:
        if not self.errors:
            self.errors = [None] * len(self.texts)
        if not self.refused:
            self.refused = [False] * len(self.texts)

    def raise_for_errors(self) -> None:
        """End the run on a batch with a prompt that got no answer after its retries: a server outage is never
        a trial outcome. A refusal outranks an outage (no retry helps it); the message already names the fix."""
        refusal = next((error for error, no in zip(self.errors, self.refused) if error and no), None)
        if refusal is not None:
            raise BackendRefusedError(refusal)
        failed = next((error for error in self.errors if error), None)
        if failed is not None:
            raise BackendUnreachableError(failed)

    @property
    def total_completion_tokens(self) -> int:
        return sum(self.completion_tokens)


@runtime_checkable
class LLM(Protocol):
    """What the agent needs of a model. Implementations: hf (local), openai (HTTP), scripted (tests)."""

    name: str  # recorded in the lake as the model identity
    context_window: int  # prompt tokens the model accepts

    def generate(self, prompts: list[Prompt], params: GenParams) -> Generation: ...

    def count_tokens(self, prompt: Prompt) -> int: ...


def cut_at_stop(text: str, stop: tuple[str, ...]) -> str:
    """Cut `text` at the earliest stop string (servers and local decoding agree on this rule)."""
    cut = len(text)
    for s in stop:
        i = text.find(s)
        if i != -1:
            cut = min(cut, i)
    return text[:cut]


def same_base_model(trained_on: str, configured: str) -> bool:
    """Whether an adapter trained on `trained_on` fits the base model `configured`: the same string, the
    same folder, or the same folder name (the same model under another RETRO_HOME, or its hub id)."""
    a, b = Path(trained_on).expanduser(), Path(configured).expanduser()
    return trained_on == configured or a.resolve() == b.resolve() or a.name.lower() == b.name.lower()



WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")


def read_adapter_config(folder: Path, label: str) -> dict:
    """A peft adapter folder's config, after checking that its weights are there; `label` names the adapter
    in the one-line error ("model version ppo-x"), which says what is damaged instead of failing later."""
    from retro.errors import ModelNotFoundError

    config_file = folder / "adapter_config.json"
    if not config_file.is_file():
        raise ModelNotFoundError(f"adapter of {label} is missing at {folder} (no adapter_config.json): restore that "
                                 "folder (e.g. from the backup of $RETRO_HOME/models) or pick another with --adapter "
                                 "(`retro models list`)")
    try:
        config = json.loads(config_file.read_text())
    except (ValueError, UnicodeDecodeError):
        raise ModelNotFoundError(f"adapter_config.json of {label} is not valid JSON ({config_file}): restore the "
                                 "adapter folder from a backup or retrain it") from None
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        raise ModelNotFoundError(f"adapter weights of {label} are missing ({folder} has no "
                                 f"{' or '.join(WEIGHT_FILES)}): restore the adapter folder from a backup or retrain it")
    return config if isinstance(config, dict) else {}
