"""Benchmark: the two exact normalisations (renormalised, constrained) in fp32 and bf16, on the same
real test events: seconds per event and perplexity of each.

python -m laborllm.bench.modes [--model smollm2|FOLDER|FILE.gguf|MODEL_DIR] [--data nlsy97] [--persons N]
       [--modes renormalised,constrained] [--precisions fp32,bf16] [--variant titles|codes]
MODEL_DIR is a laborllm model folder (a fine-tuned LLM); anything else is a base LM scored zero-shot.
Each line printed is: mode=M precision=P events=N s_per_event=S perplexity=X valid_mass=V
"""
from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import torch

from laborllm import api
from laborllm.models.registry import load_model
from laborllm.models.llm import LLM


def _model(source: str, events, variant: str, mode: str, precision: str) -> LLM:
    if (Path(source) / "model.json").exists():
        return load_model(source).read_as(scoring=mode, precision=precision)
    m = LLM(base=source, epochs=0, variant=variant, scoring=mode, precision=precision)
    return m.fit(events)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--data", default="nlsy97")
    ap.add_argument("--persons", type=int, default=3, help="test people scored (all their events)")
    ap.add_argument("--modes", default="renormalised,constrained")
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--variant", default="titles")
    args = ap.parse_args()
    data = args.data
    if (Path(args.model) / "model.json").exists():
        data = load_model(args.model).meta["data"]["data"]
    events = api.events_for(api.data_spec(data))
    test = events.test.sample_persons(args.persons, seed=0)
    print(f"model={args.model} data={data} persons={args.persons} events={len(test)} "
          f"cpu={platform.processor() or platform.machine()} cuda={torch.cuda.is_available()} threads={torch.get_num_threads()}")
    base = {}
    for precision in args.precisions.split(","):
        for mode in args.modes.split(","):
            m = _model(args.model, events, args.variant, mode, precision)
            m.log_probs(test.where(np.arange(len(test)) == 0))  # warm-up
            t0 = time.perf_counter()
            lp, figures = m.log_probs_and_figures(test)
            dt = time.perf_counter() - t0
            ppl = float(np.exp(test.target_nll(lp).mean()))
            mass = figures.get("valid_mass_mean")
            base.setdefault(mode, dt)
            print(f"mode={mode} precision={precision} events={len(test)} s_per_event={dt / len(test):.4f} "
                  f"perplexity={ppl:.4f} valid_mass={'%.4f' % mass if mass is not None else 'n/a'} "
                  f"speedup_vs_renormalised_fp32={base.get('renormalised', dt) / dt:.1f}x", flush=True)


if __name__ == "__main__":
    main()
