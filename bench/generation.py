"""Local generation speed vs batch size, bf16 and fp32, against the memory-bandwidth bound.

The hf backend's decoding (plain transformers generate), greedy. Decoding a small model
is bound by reading every weight once per decoding step: one step cannot be faster than (weight
bytes) / (memory bandwidth), whatever the batch size. So the per-step time is measured (decode only: the time for N new tokens minus the time for 1, over N - 1 steps) and
set beside that bound, and tokens/s = batch / step time shows what batching buys.

    .venv/bin/python bench/generation.py            # batch 1, 4, 8, 16, 32
    .venv/bin/python bench/generation.py --quick    # batch 1, 8; fewer tokens
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

PROMPT = ("Solve a question answering task with interleaving Thought, Action, Observation steps. "
          "Question: Which magazine was started first, Arthur's Magazine or First for Women?\nThought 1:")


def memory_bandwidth_gbs(mbytes: int = 512, repeats: int = 5) -> float:
    """Read bandwidth as torch sees it: the best of a few full reductions over a large fp32 buffer."""
    import torch

    buf = torch.ones(mbytes * 2**20 // 4, dtype=torch.float32)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        buf.sum()
        best = min(best, time.perf_counter() - start)
    return buf.numel() * 4 / best / 1e9


def decode_step_seconds(model, tokenizer, batch: int, new_tokens: int) -> float:
    """Seconds per decoding step of transformers' generate (as the hf backend calls it) at this batch size,
    prefill cancelled out; no row stops early."""
    import torch

    ids = tokenizer(PROMPT, return_tensors="pt")["input_ids"].repeat(batch, 1)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def timed(n: int) -> float:
        start = time.perf_counter()
        with torch.inference_mode():
            model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                           do_sample=False, pad_token_id=pad)
        return time.perf_counter() - start

    timed(2)  # warm-up: allocator, oneDNN kernels
    return max(timed(new_tokens) - timed(1), 1e-9) / (new_tokens - 1)


def run(quick: bool, model_path: Path | None = None) -> list[str]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if model_path is None:
        from retro.config import load_settings
        from retro.llm import ensure_embedded

        model_path = ensure_embedded(load_settings())
    batches, new_tokens = ((1, 8), 16) if quick else ((1, 4, 8, 16, 32), 32)
    bandwidth = memory_bandwidth_gbs()
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    rows = ["| dtype | batch | s / decode step | tokens/s | bandwidth bound, s / step | step time / bound |",
            "|---|---|---|---|---|---|"]
    best: dict[str, float] = {}
    for dtype in (torch.float32, torch.bfloat16):
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype).eval()
        weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
        bound = weight_bytes / (bandwidth * 1e9)
        name = str(dtype).removeprefix("torch.")
        for batch in batches:
            step = decode_step_seconds(model, tokenizer, batch, new_tokens)
            best[name] = max(best.get(name, 0.0), batch / step)
            rows.append(f"| {name} | {batch} | {step:.4f} | {batch / step:.1f} | {bound:.4f} | {step / bound:.1f}x |")
        del model
    one = rows[2].split(" | ")
    rows.append(f"\n**Batching: fp32 {best['float32'] / float(one[3]):.1f}x the tokens/s of batch 1 at the best batch "
                f"size; bf16 reaches {best['bfloat16'] / best['float32']:.2f}x fp32's best.** Memory read bandwidth "
                f"{bandwidth:.1f} GB/s (torch sum over 512 MB); weights {weight_bytes / 2**20:.0f} MB in bf16, twice "
                f"that in fp32; {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, {new_tokens} new "
                f"tokens after a {len(tokenizer(PROMPT)['input_ids'])}-token prompt, greedy, `{model_path.name}`.")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    print("\n".join(run(args.quick)))


if __name__ == "__main__":
    main()
