"""Would int8 dynamic quantization of a frozen receiver speed up the CPU default (issue #17)?

Times one prefill batch of a registry model in fp32 and with ``torch.ao.quantization.quantize_dynamic``
(every ``nn.Linear`` to qint8), and measures how often the two agree on the next token over real
SQuAD contexts. It also checks whether a gradient still reaches the input embeddings through the
quantized model: Stage B trains through the frozen receivers, so a receiver that eval uses must
train the same way.

    python scripts/cpu_int8_check.py --model resources/models/qwen2.5-coder-0.5b/hf --threads 2
"""

from __future__ import annotations

import argparse
import gzip
import json
import time
import warnings

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def load(path: str) -> torch.nn.Module:
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="a local HF model folder")
    ap.add_argument("--squad", default="resources/squad-dev-v1.1.json.gz")
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=239, help="prompt length (the default's mean)")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    warnings.filterwarnings("ignore")  # the quantized-tensor API's deprecation notice
    from torch.ao.quantization import quantize_dynamic

    torch.set_num_threads(a.threads)
    tok = AutoTokenizer.from_pretrained(a.model)
    data = json.load(gzip.open(a.squad))["data"]
    contexts = [p["context"] for art in data for p in art["paragraphs"]][: a.rows]
    batch = tok(contexts, return_tensors="pt", padding=True, truncation=True, max_length=a.tokens)
    ref, q = load(a.model), quantize_dynamic(load(a.model), {torch.nn.Linear}, dtype=torch.qint8)
    out = {}
    with torch.no_grad():
        for name, m in (("fp32", ref), ("int8", q)):
            m(**{k: v[:2] for k, v in batch.items()})  # warm-up
            t = time.perf_counter()
            out[name] = m(**batch).logits  # (rows, T, V)
            print(
                f"{name}: prefill {a.rows} x {batch['input_ids'].shape[1]} tokens in {time.perf_counter() - t:.2f} s"
            )
    mask = batch["attention_mask"].bool()
    agree = (out["fp32"].argmax(-1) == out["int8"].argmax(-1))[mask].float().mean()
    print(f"next-token top-1 agreement, int8 vs fp32: {float(agree):.3f} over {int(mask.sum())} positions")
    emb = q.get_input_embeddings()(batch["input_ids"][:1, :16]).detach().requires_grad_(True)
    q(inputs_embeds=emb).logits.float().sum().backward()
    print(f"gradient reaches the input embeddings through the int8 model: {emb.grad is not None}")


if __name__ == "__main__":
    main()
