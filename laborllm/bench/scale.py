"""Benchmark: the data path and the count baselines on a large panel (scripts/synthetic_panel.py).

python -m laborllm.bench.scale PANEL.parquet [--stages load,events,markov,logit,tokens] [--token-people N]
Prints one line per stage: stage=S people=P rows=R events=E seconds=X peak_rss_gib=Y, where the peak
is the process's so far (run one panel size per process). `tokens` turns the resumes of the first
N people (default all) into SmolLM2 token ids as LLM training does, in parallel into the memory-mapped
store (laborllm/text/store.py), and reports tokens per second, the store's size, the time to find it
again and the time to read every resume from it.
"""
from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path


def _peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kilobytes on Linux


def main() -> None:
    import laborllm as ll

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("panel")
    ap.add_argument("--stages", default="load,events,markov,logit,tokens")
    ap.add_argument("--token-people", type=int, default=None)
    ap.add_argument("--workers", type=int, default=None, help="tokenising processes (default: one per core)")
    ap.add_argument("--store-dir", default=None, help="where the token store is written (default: the temp folder)")
    a = ap.parse_args()
    stages = a.stages.split(",")
    shown = {}

    def report(stage: str, t0: float, **extra) -> None:
        figures = " ".join(f"{k}={v}" for k, v in {**shown, **extra}.items())
        print(f"stage={stage} {figures} seconds={time.time() - t0:.1f} peak_rss_gib={_peak_gib():.2f}", flush=True)

    t = time.time()
    panel = ll.load_panel(a.panel, scheme="titles")
    shown.update(people=panel.n_persons, rows=len(panel.frame))
    report("load", t)
    t = time.time()
    events = ll.make_events(panel, seed=0)
    shown["events"] = len(events)
    report("events", t)
    if "markov" in stages:
        from laborllm.models.markov import Markov

        t = time.time()
        Markov().fit(events)
        report("markov", t)
    if "logit" in stages:
        from laborllm.api import make_model

        t = time.time()
        make_model("logit", "quick").fit(events)
        report("logit", t)
    if "tokens" in stages:
        from transformers import AutoTokenizer

        from laborllm.lm.loading import resolve_base
        from laborllm.text import ResumeTemplate, SegmentEncoder
        from laborllm.text.store import resume_tokens

        tok = AutoTokenizer.from_pretrained(resolve_base("smollm2"))
        enc = SegmentEncoder(tok, ResumeTemplate("titles"), panel.states, panel.scheme)
        people = sorted(panel.frame.person_id.unique(), key=str)[:a.token_people]
        with tempfile.TemporaryDirectory(dir=a.store_dir) as d:
            t = time.time()
            store = resume_tokens(panel, people, enc, Path(d), workers=a.workers)
            n = int(store.lengths.sum())
            size = sum(f.stat().st_size for f in Path(d).iterdir()) / 2**20
            report("tokens", t, token_people=len(people), tokens=n, tokens_per_second=round(n / max(time.time() - t, 1e-9)),
                   store_mib=round(size))
            t = time.time()
            resume_tokens(panel, people, enc, Path(d))  # unchanged panel and template: read, not tokenised
            report("tokens_reused", t)
            t = time.time()
            read = sum(len(store[i]) for i in range(len(store)))  # every resume, as a training epoch reads them
            assert read == n
            report("tokens_read_all", t)

if __name__ == "__main__":
    main()
