"""Model backends behind one batched interface (retro.llm.base.LLM)."""

from retro.llm.base import LLM, Generation, GenParams, Prompt
from retro.llm.embedded import ensure_embedded, resolve_model_path
from retro.llm.scripted import ScriptedLLM

__all__ = ["LLM", "GenParams", "Generation", "Prompt", "ScriptedLLM", "ensure_embedded", "resolve_model_path"]
