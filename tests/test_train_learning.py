# ruff: noqa: F811 (fixtures imported from trainkit come back as test arguments)
"""The proof that the training loop learns (issue 12): reflections that lead to success become more
likely on held-out tasks after SFT -> reward model -> PPO, and PPO alone, from the base model against
the trained reward model, raises them too (the policy gradient learns from the reward model).

The toy world: a failed task's reflection names one of four plans; a scripted actor succeeds on the
next trial iff the reflection says to *search* (rating 1, else 0). The retrospective model is a tiny
Llama with its own small BPE tokenizer, pre-trained for a few seconds to write every plan equally
often whatever the task, so the base model's mean rating is about 1/4. Held-out tasks name entities
never seen in training. Seeded and single-threaded, so the numbers repeat.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from trainkit import one_thread  # noqa: F401 (fixture)

from retro.store.registry import get_model_version
from retro.train import lora
from retro.train.grpo import train_group
from retro.train.pipeline import train_all
from retro.train.ppo import train_ppo
from retro.train.result import Skipped

PLANS = ["I will search the entity first.", "I will compare both entities first.",
         "I will think step by step.", "I will answer right away."]
KEYWORD = "search"  # the plan that makes the scripted actor succeed
NAMES = [a + b for a in ("Ka", "Lo", "Mi", "Ru", "Se", "Ta", "Vo", "Ze") for b in ("ran", "lek", "mos", "dun", "pia", "vet")]
TRAIN_NAMES, HELD_OUT_NAMES = NAMES[:36], NAMES[36:]
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
SAMPLES = 16  # reflections sampled per held-out task when measuring a policy


# -- the toy world ---------------------------------------------------------------------------------------------
def task_prompt(kind: str, a: str, b: str) -> str:
    question = f"Where was {a} born?" if kind == "bridge" else f"Who is older, {a} or {b}?"
    return f"Task ({kind}): {question}\nThe attempt answered from memory and failed. Reflect and plan."


def make_tasks(rng: random.Random, names: list[str], n: int) -> list[dict]:
    tasks = []
    for i in range(n):
        a, b = rng.sample(names, 2)
        tasks.append({"task_id": f"t{i}-{a}", "prompt": task_prompt("bridge" if i % 2 == 0 else "comparison", a, b)})
    return tasks


def scripted_rating(reflection: str) -> float:
    """G(i+1) - G(i): the failed trial returned 0; the next one succeeds iff the plan is to search."""
    return 1.0 if KEYWORD in reflection.lower() else 0.0


@torch.no_grad()
def sample_reflections(model, tokenizer, prompts: list[str], n: int, seed: int, max_new_tokens: int = 12):
    """n sampled reflections per prompt (temperature 1), with plain transformers generate."""
    torch.manual_seed(seed)
    tokenizer.padding_side = "left"
    enc = tokenizer([lora.chat_prompt(tokenizer, p) for p in prompts], return_tensors="pt", padding=True,
                    add_special_tokens=False)
    out = model.eval().generate(**enc, do_sample=True, temperature=1.0, top_p=1.0, top_k=0,
                                max_new_tokens=max_new_tokens, num_return_sequences=n,
                                pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    texts = tokenizer.batch_decode(out[:, enc.input_ids.shape[1]:], skip_special_tokens=True)
    return [texts[i * n:(i + 1) * n] for i in range(len(prompts))]


def mean_rating(model, tokenizer, tasks: list[dict], seed: int = 2) -> float:
    samples = sample_reflections(model, tokenizer, [t["prompt"] for t in tasks], SAMPLES, seed)
    return sum(scripted_rating(r) for rs in samples for r in rs) / (len(tasks) * SAMPLES)


def build_toy_model(folder: Path, seed: int = 0) -> Path:
    """A tiny Llama + BPE tokenizer that writes each of the four plans equally often, whatever the task."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    rng = random.Random(seed)
    corpus = [task_prompt(k, a, b) for k in ("bridge", "comparison") for a in NAMES for b in NAMES[:3]] + PLANS * 20
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(corpus, vocab_size=400, min_frequency=2, show_progress=False,
                            special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                        pad_token="<|endoftext|>", unk_token="<|endoftext|>")
    tokenizer.chat_template = CHAT_TEMPLATE
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    ))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    tokenizer.padding_side = "right"
    for _ in range(150):  # "pre-training": a uniform mixture of plans, independent of the task
        chats = []
        for _ in range(32):
            a, b = rng.sample(NAMES, 2)
            chats.append(tokenizer.apply_chat_template(
                [{"role": "user", "content": task_prompt(rng.choice(["bridge", "comparison"]), a, b)},
                 {"role": "assistant", "content": rng.choice(PLANS)}], tokenize=False))
        enc = tokenizer(chats, return_tensors="pt", padding=True)
        model(**enc, labels=enc.input_ids.masked_fill(enc.attention_mask == 0, -100)).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def toy_base_model(tmp_path_factory) -> Path:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return build_toy_model(tmp_path_factory.mktemp("toy-retrospective-model"))
    finally:
        torch.set_num_threads(before)


def rollout_base_reflections(lake, model, tokenizer, tasks: list[dict], runs: int = 4) -> int:
    """`runs` rollouts of the training tasks: trial 0 fails, the base model reflects, trial 1 follows
    the scripted rule; trials, reflections and ratings go into the lake. Returns the positives."""
    samples = sample_reflections(model, tokenizer, [t["prompt"] for t in tasks], runs, seed=1)
    trials, reflections, ratings = [], [], []
    for k in range(runs):
        run_id = f"train-run-{k}"
        for task, texts in zip(tasks, samples, strict=True):
            r = scripted_rating(texts[k])
            key = {"run_id": run_id, "task_id": task["task_id"]}
            trials += [{**key, "trial": 0, "env": "toy", "episode_return": 0.0, "success": False},
                       {**key, "trial": 1, "env": "toy", "episode_return": r, "success": r > 0}]
            reflections.append({**key, "trial": 0, "env": "toy", "prompt": task["prompt"], "text": texts[k]})
            ratings.append({**key, "trial": 0, "label_version": "v1", "return_before": 0.0, "return_after": r,
                            "rating": r})
    lake.append({"runs": [{"run_id": f"train-run-{k}", "split": "train"} for k in range(runs)],
                 "trials": trials, "reflections": reflections, "ratings": ratings})
    return int(sum(r["rating"] for r in ratings))


def configure(settings, model_dir: Path, seed: int = 0) -> None:
    settings.retrospective.model = str(model_dir)
    settings.retrospective.max_new_tokens = 12
    for key, value in {
        "max_length": 128, "batch_size": 8,
        "sft_epochs": 4.0, "sft_lr": 2e-3, "rm_epochs": 6.0, "rm_lr": 2e-3,
        # a tiny model needs a larger step than the paper's 1.4e-5; the KL term keeps PPO near its reference
        "ppo_lr": 1e-3, "ppo_total_episodes": 128, "ppo_epochs": 4, "ppo_kl_coef": 0.5,
    }.items():
        setattr(settings.train, key, value)
    settings.train.seed = seed


def run_learning(settings, lake, model_dir: Path, seed: int = 0, trainer: str = "ppo") -> dict:
    """Rollouts with the base model -> train_all -> held-out ratings, then the policy stage alone from the base."""
    configure(settings, model_dir, seed)
    settings.train.trainer = trainer
    rng = random.Random(seed)
    train_tasks, held_out = make_tasks(rng, TRAIN_NAMES, 32), make_tasks(rng, HELD_OUT_NAMES, 16)
    tokenizer = lora.load_tokenizer(model_dir)
    base = lora.load_causal_lm(model_dir, tokenizer)
    out: dict = {"positives": rollout_base_reflections(lake, base, tokenizer, train_tasks)}
    out["result"] = result = train_all(settings, lake)
    out["base"] = mean_rating(base, tokenizer, held_out)
    if result["candidate"]:
        candidate = lora.load_policy(model_dir, lora.adapter_dir(settings, result["candidate"]), tokenizer)
        out["trained"] = mean_rating(candidate, tokenizer, held_out)
    if result["rm"]:
        out["rm"] = get_model_version(lake, result["rm"])
        alone = train_ppo if trainer == "ppo" else train_group
        out["pg"] = pg = alone(settings, lake, sft=Skipped("sft", "left out on purpose"), reward_model=out["rm"])
        out["pg_only"] = mean_rating(lora.load_policy(model_dir, pg.adapter_path, tokenizer), tokenizer, held_out)
    return out


def test_trained_adapter_writes_better_reflections_on_held_out_tasks(settings, lake, toy_base_model, one_thread):
    run = run_learning(settings, lake, toy_base_model)

    # 1. rollouts with the base model, rated by what the next trial did: some reflections helped
    assert 0 < run["positives"] < 128 / 2, run["positives"]
    # 2. the pipeline trained every stage; the reward model (pairwise: the 4 runs rate one prompt's reflections
    # differently) orders held-out pairs better than chance
    assert run["result"]["skipped"] == {}, run["result"]["skipped"]
    assert run["rm"].metrics["rm/kind"] == "pairwise" and run["rm"].metrics["eval/pairwise_accuracy"] > 0.5
    # 3. held-out tasks: the trained adapter's reflections are rated higher than the base model's
    assert 0.1 < run["base"] < 0.4, run["base"]  # about 1/4: no preference among the four plans
    assert run["trained"] >= run["base"] + 0.2, (run["base"], run["trained"])
    # 4. the policy gradient on its own: PPO from the base model against the trained reward model
    assert run["pg"].parent_model_id is None
    assert run["pg_only"] >= run["base"] + 0.15, (run["base"], run["pg_only"])
    assert run["pg"].metrics["objective/scores"] > run["pg"].metrics["objective/scores_first"]


@pytest.mark.parametrize("trainer", ["grpo", "rloo"])
def test_group_trainers_learn_like_ppo(settings, lake, toy_base_model, one_thread, trainer):
    """GRPO and RLOO (trl mainline) in place of PPO: the same margins over the base model."""
    settings.train.num_generations = 4
    run = run_learning(settings, lake, toy_base_model, trainer=trainer)
    assert run["result"]["skipped"] == {}, run["result"]["skipped"]
    assert run["result"]["candidate"] == run["result"][trainer]
    assert run["trained"] >= run["base"] + 0.2, (run["base"], run["trained"])
    assert run["pg"].stage == trainer and run["pg"].parent_model_id is None
    assert run["pg_only"] >= run["base"] + 0.15, (run["base"], run["pg_only"])
