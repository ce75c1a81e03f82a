"""Benchmark: CPU fine-tuning recipes compared by *validation* perplexity per CPU-minute.

python -m laborllm.bench.recipes [--data nlsy79-males] [--recipes all:1,top15:1,top10:1,top10:3] [--out DIR]
A recipe is LAYERS:EPOCHS[:LR] -- LoRA r16 on all layers or the top K (`topK`), that many epochs, the
learning rate (default 1e-3) -- on every training person; each is fitted, then scored exactly
(constrained) on the validation split. Never the test split: recipes are chosen on these figures.
Prints one line per recipe: recipe, training minutes, training tokens/s, validation perplexity.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from laborllm import api
from laborllm.machine import cpu_bf16, cpu_name


def parse(recipe: str) -> dict:
    layers, epochs, *lr = recipe.split(":")
    top = None if layers == "all" else int(layers.removeprefix("top"))
    return {"lora": True, "lora_layers": top, "epochs": int(epochs), "lr": float(lr[0]) if lr else 1e-3,
            "batch_size": 8, "scoring": "constrained", "precision": "auto", "validate": True}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="nlsy79-males")
    ap.add_argument("--recipes", default="all:1,top15:1,top10:1,top10:3")
    ap.add_argument("--variant", default="titles")
    ap.add_argument("--out", type=Path, default=None, help="keep the fitted models here (default: a temp folder)")
    args = ap.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="laborllm-recipes-"))
    print(f"data={args.data} cpu={cpu_name()!r} ({cpu_bf16()}) threads={torch.get_num_threads()} out={out}", flush=True)
    for recipe in args.recipes.split(","):
        folder = out / recipe.replace(":", "-")
        if not (folder / "model.json").exists():
            api.fit("llm", args.data, folder, "quick", variant=args.variant, **parse(recipe))
        meta = json.loads((folder / "model.json").read_text())
        r = api.evaluate([folder], split="valid")[0]
        lo, hi = r["perplexity_ci95"]
        minutes = meta["train_busy_seconds"] / 60
        print(f"recipe={recipe} train_minutes={minutes:.1f} tokens_per_second={meta['tokens_per_second']} "
              f"precision={meta['precision']} steps={meta['train_steps']} valid_events={r['n_events']} "
              f"valid_perplexity={r['perplexity']:.3f} [{lo:.3f}, {hi:.3f}] "
              f"valid_curve={[c['eval_loss'] for c in meta.get('valid_curve', [])]}", flush=True)


if __name__ == "__main__":
    main()
