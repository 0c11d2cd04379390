"""A local Hugging Face causal LM behind the batched LLM interface: plain batched `transformers` generate,
with optional LoRA adapters and per-prompt grammars (retro.llm.grammar).

For any HF folder a user names, and for tests; the embedded models run on llama.cpp. Bases are loaded once
per (folder, dtype, device) and shared: the actor and the retrospective model are usually the same model,
and the retrospective one only adds a LoRA adapter. peft injects the adapter into the shared base, so a
backend without an adapter generates inside `disable_adapter()` and one with an adapter switches to its
own by name; a per-base lock keeps the two from interleaving.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import (
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    StoppingCriteria,
    StoppingCriteriaList,
    TemperatureLogitsWarper,
    TopPLogitsWarper,
)

from retro.config import ModelSettings
from retro.errors import ModelNotFoundError
from retro.llm.base import Generation, GenParams, Prompt, cut_at_stop, read_adapter_config, same_base_model

log = logging.getLogger(__name__)


# One pad rule for generation and training. Base tokenizers often pad with their end-of-turn token, but trl's
# PPO treats every pad id as padding (even inside the chat-templated prompt) and a sequence classifier scores
# the last token that is not the pad: so every model here pads with a token the chat template never writes.
PAD_TOKEN = "<|endoftext|>"


# -- small helpers ------------------------------------------------------------------------------------
def use_pad_token(tokenizer: Any) -> None:
    """Pad on the left (new tokens follow the prompt) with PAD_TOKEN, or with a new `<|pad|>` when the
    vocabulary has no PAD_TOKEN other than its end of sequence and no pad of its own apart from it."""
    if PAD_TOKEN in tokenizer.get_vocab() and PAD_TOKEN != tokenizer.eos_token:
        tokenizer.pad_token = PAD_TOKEN
    elif tokenizer.pad_token is None or tokenizer.pad_token == tokenizer.eos_token:
        tokenizer.add_special_tokens({"pad_token": "<|pad|>"})
    tokenizer.padding_side = "left"


def fit_pad(model: Any, tokenizer: Any) -> None:
    """The model knows the tokenizer's pad (as its config's pad id; an added pad token gets an embedding)."""
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id


def end_ids(model: Any, tokenizer: Any) -> set[int]:
    """The token ids that end a completion: the pad token and every end-of-sequence id (the generation config
    may list several)."""
    eos = getattr(model.generation_config, "eos_token_id", None)
    ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids | {tokenizer.pad_token_id}


def resolve_device(device: str) -> str:
    """"auto" -> cuda when a GPU is visible, else cpu; anything else is passed to torch as given."""
    if device != "auto":
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def cpu_supports_bf16() -> bool:
    """Native bf16 arithmetic (AVX512-BF16, AMX, or Arm's BF16 extension).

    Without it oneDNN emulates bf16: on a 2-core AVX512 Xeon, SmolLM2 greedy decoding in bf16 ran at
    the fp32 speed at batch 1 and at about half of it at batch 8, so fp32 is the better default there.
    """
    try:
        caps = torch.cpu.get_capabilities()
    except AttributeError:  # older torch
        return False
    return any(caps.get(flag) for flag in ("avx512_bf16", "amx_bf16", "bf16", "sve_bf16"))


def resolve_dtype(dtype: str, device: str) -> torch.dtype:
    """"auto" -> bf16 on CUDA and on CPUs with native bf16, else fp32."""
    if dtype == "bfloat16":
        return torch.bfloat16
    if dtype == "float32":
        return torch.float32
    if device.startswith("cuda") or (device == "cpu" and cpu_supports_bf16()):
        return torch.bfloat16
    return torch.float32


def render(tokenizer: Any, prompt: Prompt) -> tuple[str, bool]:
    """Prompt -> (text, whether the tokenizer should add its special tokens).

    Raw strings go in as-is; chats go through the model's chat template, which already holds the
    special tokens. A trailing assistant message is continued rather than closed.
    """
    if isinstance(prompt, str):
        return prompt, True
    if tokenizer.chat_template is None:
        raise ModelNotFoundError(
            f"the tokenizer in {tokenizer.name_or_path} has no chat template: use an instruct model folder"
        )
    prefilled = bool(prompt) and prompt[-1]["role"] == "assistant"
    text = tokenizer.apply_chat_template(
        prompt, tokenize=False, add_generation_prompt=not prefilled, continue_final_message=prefilled
    )
    return text, False


def _adapter_name(adapter_path: Path) -> str:
    return "adapter_" + hashlib.sha1(str(adapter_path.resolve()).encode()).hexdigest()[:12]


# -- the shared bases ---------------------------------------------------------------------------------
@dataclass
class SharedBase:
    """One loaded base model with its tokenizer and the adapters injected into it so far."""

    model: Any  # a PreTrainedModel, or a peft PeftModel wrapping it once an adapter is loaded
    tokenizer: Any
    path: Path
    ends: set[int]  # the token ids that end a completion (end_ids)
    adapters: dict[str, str] = field(default_factory=dict)  # adapter folder -> peft adapter name
    lock: threading.Lock = field(default_factory=threading.Lock)
    grammar_tokenizer: Any = None  # llguidance's view of the tokenizer, made on the first constrained call

    @property
    def base_model(self) -> Any:
        """The underlying transformers model, whether or not peft wraps it."""
        return self.model.get_base_model() if self.adapters else self.model


_BASES: dict[tuple[str, str, str], SharedBase] = {}
_BASES_LOCK = threading.Lock()


def load_base(path: Path, dtype: torch.dtype, device: str) -> SharedBase:
    """The base at `path`, loaded once per process for each (folder, dtype, device)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    key = (str(path.resolve()), str(dtype), device)
    with _BASES_LOCK:
        if key not in _BASES:
            start = time.perf_counter()
            tokenizer = AutoTokenizer.from_pretrained(path)
            use_pad_token(tokenizer)
            model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
            fit_pad(model, tokenizer)
            ends = end_ids(model, tokenizer)
            # Decoding is GenParams and nothing else: a folder's own sampling defaults or repetition penalty would
            # change the text without showing in the parameters recorded with it.
            model.generation_config = GenerationConfig(eos_token_id=sorted(ends), pad_token_id=tokenizer.pad_token_id)
            model = model.to(device).eval()
            _BASES[key] = SharedBase(model=model, tokenizer=tokenizer, path=path, ends=ends)
            log.info("loaded %s (%s, %s) in %.1f s", path, dtype, device, time.perf_counter() - start)
        return _BASES[key]


def release_bases() -> None:
    """Forget every cached base (tests; a long process switching models)."""
    with _BASES_LOCK:
        _BASES.clear()


def _check_adapter(adapter_path: Path, base_path: Path) -> None:
    """Refuse an adapter that is missing or was trained on another base, before peft half-loads it."""
    trained_on = read_adapter_config(adapter_path, f"adapter {adapter_path}").get("base_model_name_or_path") or ""
    if trained_on and not same_base_model(trained_on, str(base_path)):
        raise ModelNotFoundError(
            f"adapter {adapter_path} was trained on {trained_on}, not on {base_path}: "
            "use that base model or an adapter trained on this one"
        )


def attach_adapter(shared: SharedBase, adapter_path: Path) -> str:
    """Inject the LoRA adapter at `adapter_path` into the shared base (once); return its peft name.

    A misfit is rolled back before the error: peft injects layers before it loads weights, and a
    half-loaded adapter must not stay active in the base other backends generate with.
    """
    from peft import PeftConfig, PeftModelForCausalLM

    key = str(adapter_path.resolve())
    with shared.lock:
        if key in shared.adapters:
            return shared.adapters[key]
        _check_adapter(adapter_path, shared.path)
        name = _adapter_name(adapter_path)
        first = not shared.adapters
        wrapped = shared.model
        try:
            if first:
                config = PeftConfig.from_pretrained(str(adapter_path))
                config.inference_mode = True
                wrapped = PeftModelForCausalLM(shared.model, config, adapter_name=name)
            result = wrapped.load_adapter(str(adapter_path), adapter_name=name)
            if result.missing_keys:
                missing = result.missing_keys
                raise ValueError(f"{len(missing)} adapter weights missing, e.g. {missing[0]}")
        except (ValueError, RuntimeError, KeyError) as err:  # shape mismatch, unknown target modules
            _roll_back(wrapped, name, first)
            raise ModelNotFoundError(
                f"adapter {adapter_path} does not fit base {shared.path} ({_one_line(err)}): "
                "use an adapter trained on this base model"
            ) from None
        shared.model = wrapped.eval()
        shared.adapters[key] = name
        log.info("attached adapter %s to %s", adapter_path, shared.path)
        return name


def _roll_back(wrapped: Any, name: str, first: bool) -> None:
    from peft import PeftModel

    if not isinstance(wrapped, PeftModel) or name not in wrapped.peft_config:
        return
    if first:
        wrapped.unload()  # strips the injected layers: the base is as it was
    else:
        wrapped.delete_adapter(name)


def _one_line(err: Exception) -> str:
    text = " ".join(str(err).split())
    return (text[:160] + "...") if len(text) > 160 else text or type(err).__name__


# -- decoding helpers ---------------------------------------------------------------------------------
class RowSampler(LogitsProcessor):
    """Temperature and nucleus (top-p) sampling in which each row draws from its own seeded stream.

    generate()'s own sampling draws the whole batch from torch's one global stream, so a row's text would
    depend on the rows beside it (and a rerun after a crash batches differently). Here row i adds Gumbel
    noise from a generator seeded with its own seed to its warped logits, and generate() decodes greedily:
    the argmax of logits plus Gumbel noise is a sample of their softmax (the Gumbel-max trick). A row draws
    one vocabulary's worth of numbers per step, whatever else is in the batch.
    """

    def __init__(self, temperature: float, top_p: float, seeds: list[int], device: str):
        self.warpers = [TemperatureLogitsWarper(temperature), *([TopPLogitsWarper(top_p)] if top_p < 1.0 else [])]
        self.generators = [torch.Generator(device).manual_seed(seed) for seed in seeds]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        for warp in self.warpers:
            scores = warp(input_ids, scores)
        exponential = torch.stack([torch.empty_like(scores[0]).exponential_(generator=g) for g in self.generators])
        return scores - exponential.log()  # -log(Exp(1)) is Gumbel(0, 1)


class StopStrings(StoppingCriteria):
    """Ends a row once its completion contains a stop string (the rule retro.llm.base.cut_at_stop cuts by).

    Checked after every token, so only the last few tokens need decoding (a token is at least one character).
    """

    def __init__(self, tokenizer: Any, stops: tuple[str, ...], prompt_width: int):
        self.tokenizer, self.stops, self.prompt_width = tokenizer, stops, prompt_width
        self.tail = max(len(s) for s in stops) + 4

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        tails = input_ids[:, max(self.prompt_width, input_ids.shape[1] - self.tail) :]
        texts = self.tokenizer.batch_decode(tails, skip_special_tokens=True)
        return torch.tensor([any(s in text for s in self.stops) for text in texts], device=input_ids.device)


# -- the backend --------------------------------------------------------------------------------------
class HFBackend:
    """Batched generation with a local HF model: left padding, stop strings, greedy or per-row seeded sampling,
    grammars per prompt."""

    def __init__(
        self,
        model_path: Path | str,
        settings: ModelSettings,
        adapter_path: Path | str | None = None,
        name: str | None = None,
    ):
        self.settings = settings
        self.adapter_path = Path(adapter_path) if adapter_path is not None else None
        if self.adapter_path is not None and not self.adapter_path.exists():
            raise ModelNotFoundError(f"adapter {self.adapter_path} not found: check the model version's path")
        self.device = resolve_device(settings.device)
        self.dtype = resolve_dtype(settings.dtype, self.device)
        self.shared = load_base(Path(model_path), self.dtype, self.device)
        self.adapter = attach_adapter(self.shared, self.adapter_path) if self.adapter_path else None
        suffix = f"+{self.adapter_path.name}" if self.adapter_path else ""
        self.name = name or Path(model_path).name + suffix  # e.g. smollm2-135m-instruct+<adapter folder>
        positions = getattr(self.base_model.config, "max_position_embeddings", None)
        self.context_window = min(settings.context_window, positions or settings.context_window)

    def __repr__(self) -> str:
        return f"HFBackend(name={self.name!r}, device={self.device!r}, dtype={self.dtype})"

    @property
    def tokenizer(self) -> Any:
        return self.shared.tokenizer

    @property
    def base_model(self) -> Any:
        return self.shared.base_model

    def encode(self, prompt: Prompt) -> list[int]:
        text, special = render(self.tokenizer, prompt)
        return self.tokenizer(text, add_special_tokens=special)["input_ids"]

    def count_tokens(self, prompt: Prompt) -> int:
        return len(self.encode(prompt))

    def generate(self, prompts: list[Prompt], params: GenParams) -> Generation:
        start = time.perf_counter()
        ids = [self.encode(p) for p in prompts]
        texts, completion_tokens = [], []
        size = self.settings.batch_size
        with self.shared.lock, self._adapter_context(), torch.inference_mode():
            for first in range(0, len(ids), size):
                rows = range(first, min(first + size, len(ids)))
                chunk_texts, chunk_counts = self._generate_chunk([ids[r] for r in rows], rows, params)
                texts += chunk_texts
                completion_tokens += chunk_counts
        return Generation(
            texts=texts,
            prompt_tokens=[len(x) for x in ids],
            completion_tokens=completion_tokens,
            seconds=time.perf_counter() - start,
        )

    def _adapter_context(self) -> Any:
        """Select this backend's adapter on the shared base, or switch all adapters off."""
        if not self.shared.adapters:
            return nullcontext()
        if self.adapter is None:
            return self.shared.model.disable_adapter()
        self.shared.model.set_adapter(self.adapter)
        return nullcontext()

    def _generate_chunk(self, ids: list[list[int]], rows: range, params: GenParams) -> tuple[list[str], list[int]]:
        """One generate() call over the prompts `ids`, which are prompts `rows` of the whole call (for their
        seeds and grammars). Returns the texts and the completion tokens, an end token excluded."""
        tok = self.tokenizer
        batch = tok.pad({"input_ids": ids}, return_tensors="pt").to(self.device)  # left padding (use_pad_token)
        width = batch["input_ids"].shape[1]
        processors = LogitsProcessorList(self._grammar_masks(rows, params))
        if params.temperature > 0:
            processors.append(RowSampler(params.temperature, params.top_p, [params.row_seed(r) for r in rows],
                                         self.device))
        stopping = StoppingCriteriaList([StopStrings(tok, params.stop, width)] if params.stop else [])
        out = self.shared.model.generate(**batch, max_new_tokens=params.max_new_tokens, do_sample=False,
                                         logits_processor=processors, stopping_criteria=stopping)
        new = [_until_end(row, self.shared.ends) for row in out[:, width:].tolist()]
        texts = [cut_at_stop(tok.decode(row, skip_special_tokens=True), params.stop) for row in new]
        return texts, [len(row) for row in new]

    def _grammar_masks(self, rows: range, params: GenParams) -> list[LogitsProcessor]:
        """A GrammarMask over the rows that have a grammar, or nothing when every row is free."""
        grammars = {i: params.row_grammar(r) for i, r in enumerate(rows) if params.row_grammar(r) is not None}
        if not grammars:
            return []
        from retro.llm.grammar import GrammarMask, compile_grammar, grammar_tokenizer

        if self.shared.grammar_tokenizer is None:
            vocab = self.base_model.get_output_embeddings().weight.shape[0]
            self.shared.grammar_tokenizer = grammar_tokenizer(self.tokenizer, vocab, self.shared.ends)
        return [GrammarMask({i: compile_grammar(self.shared.grammar_tokenizer, g, rows[i])
                             for i, g in grammars.items()})]


def _until_end(tokens: list[int], ends: set[int]) -> list[int]:
    """A row's new tokens up to its first end token (generate pads a finished row with the pad token)."""
    return next((tokens[:i] for i, t in enumerate(tokens) if t in ends), tokens)
