"""Benchmark: LLM fine-tuning throughput (training tokens/s and model FLOPs utilisation).

python -m laborllm.bench.training [--model smollm2|FOLDER] [--data nlsy97] [--steps N] [--batch-size B] [--lora]
       [--pack-tokens T] [--precision auto|bf16|fp32] [--peak-tflops T]
Runs N optimiser steps of the real fine-tuning loop (Hugging Face Trainer, the collator and
resume texts laborllm uses) on NLSY97 training people and prints tokens/s and MFU, where
MFU = 6 * parameters * tokens/s / peak FLOP/s (peak: --peak-tflops, default 989 on H100/H200 bf16;
no MFU on CPU unless given).
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

import laborllm as ll
from laborllm.models.llm import LLM


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--persons", type=int, default=64)
    ap.add_argument("--lora", action="store_true")
    ap.add_argument("--pack-tokens", type=int, default=0, help="pack resumes into rows of this many tokens")
    ap.add_argument("--peak-tflops", type=float, default=None)
    ap.add_argument("--data", default="nlsy97")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--lr", type=float, default=2e-4)
    args = ap.parse_args()
    events = ll.make_events(ll.load_panel(args.data))
    m = LLM(base=args.model, lora=args.lora, max_steps=args.steps, batch_size=args.batch_size, epochs=1, lr=args.lr,
            max_train_persons=args.persons, max_valid_persons=8, pack_tokens=args.pack_tokens, precision=args.precision)
    m.work_dir = Path(tempfile.mkdtemp(prefix="laborllm-bench-")) / "model"  # never resume an old run
    t0 = time.time()
    m.fit(events)
    params = sum(p.numel() for p in m.lm.parameters())
    tps = m.meta["tokens_per_second"]
    cuda = torch.cuda.is_available()
    peak = args.peak_tflops or (989.0 if cuda else None)
    mfu = 6 * params * tps / (peak * 1e12) if peak and tps else None
    print(json.dumps({k: m.meta.get(k) for k in ("train_persons", "train_seconds", "world_size")}))
    print(f"device={'cuda:' + torch.cuda.get_device_name() if cuda else 'cpu'} params={params} "
          f"wall={time.time() - t0:.1f}s")
    print(f"training: tokens_per_second={tps} mfu={'%.3f' % mfu if mfu else 'n/a'} lora={args.lora} batch={args.batch_size} "
          f"precision={m.meta['precision']} pack_tokens={args.pack_tokens}")


if __name__ == "__main__":
    main()
