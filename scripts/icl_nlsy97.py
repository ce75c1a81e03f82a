"""The in-context baseline on NLSY97, beside every model of the nlsy97-cpu run on the same seeded
sample of test people (the constrained scoring of 334 states with a long prompt is too slow for every
test event on a CPU).

python scripts/icl_nlsy97.py [--run runs/nlsy97-cpu] [--people 100] [--out runs/icl-nlsy97]
       [--set shots=10000 --set prompt_tokens=4096 ...] [--copy-to docs/results/nlsy97-cpu/icl-sample]

Fits the ICL prompt (nothing is trained), scores the sample constrained (kept, so a rerun reuses it),
reads every run model's kept test scores on the same events, and writes the comparison, paired and
stays/moves tables (CSV, Markdown, LaTeX) to OUT, and to `--copy-to`; the README block
`<!-- results:nlsy97-icl begin -->` ... `end -->` is rewritten from them (never typed by hand).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from results_tables import fail, replace_blocks  # noqa: E402

from laborllm import api  # noqa: E402
from laborllm.cli import parse_sets  # noqa: E402
from laborllm.evaluation.compare import comparison_table, to_markdown, transition_table, write_panel_tables  # noqa: E402
from laborllm.evaluation.metrics import attach_paired, evaluate  # noqa: E402
from laborllm.io import read_log_probs  # noqa: E402
from laborllm.machine import machine  # noqa: E402
from laborllm.models.score_cache import model_log_probs  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, default=Path("runs/nlsy97-cpu"))
    ap.add_argument("--people", type=int, default=100)
    ap.add_argument("--out", type=Path, default=Path("runs/icl-nlsy97"))
    ap.add_argument("--set", dest="sets", action="append", default=[])
    ap.add_argument("--readme", type=Path, default=Path("README.md"))
    ap.add_argument("--copy-to", type=Path, default=None)
    args = ap.parse_args()
    try:
        metrics = [r for r in json.loads((args.run / "metrics.json").read_text()) if r["data"] == "nlsy97"]
    except (OSError, ValueError) as e:
        fail(f"{args.run / 'metrics.json'}: not a run folder's file ({getattr(e, 'strerror', None) or e})")
    settings = {"scoring": "constrained", **parse_sets(args.sets)}
    events = api.events_for(api.data_spec("nlsy97"))
    test = events.test
    sample = test.sample_persons(args.people, seed=0)
    rows_of = np.flatnonzero(test.frame.person_id.isin(set(sample.frame.person_id)).to_numpy())
    icl = api.fit("icl", "nlsy97", args.out / "icl", "quick", settings=settings)
    lp, extra = model_log_probs(icl, args.out / f"icl-test-{args.people}.parquet", sample)
    lps = {"icl": lp}
    labels = {"icl": icl.describe()}
    for r in metrics:
        lp, meta = read_log_probs(args.run / "nlsy97" / "logprobs" / f"{r['model']}-test.parquet")
        if meta.get("events_fingerprint") != test.fingerprint():
            fail(f"{r['model']}: its kept scores are not on these test events")
        lps[r["model"]], labels[r["model"]] = lp[rows_of], r["label"]
    rows, nll = [], {}
    for name, lp in lps.items():
        norm = "exact, constrained" if name == "icl" else next(r["normalization"] for r in metrics if r["model"] == name)
        rows.append(evaluate(lp, sample, model=name, split="test", normalization=norm) | {"label": labels[name]})
        nll[name] = sample.target_nll(lp)
    attach_paired(rows, nll, sample)
    write_panel_tables(rows, args.out, "career")
    text = [f"`python scripts/icl_nlsy97.py {' '.join('--set ' + s for s in args.sets)}`, {machine()}: "
            f"{sample.frame.person_id.nunique()} seeded test people, {len(sample):,} events, every model on the same "
            f"events ({icl.meta['shots_used']} example histories, {len(icl.prompt_ids):,} prompt tokens; ICL scoring "
            f"{extra['score_seconds'] / 60:.1f} min).", "", to_markdown(comparison_table(rows, "career")).rstrip(), "",
            to_markdown(transition_table(rows, "career")).rstrip()]
    replace_blocks([(args.readme, "results", "nlsy97-icl", "\n".join(text))])
    if args.copy_to:
        args.copy_to.mkdir(parents=True, exist_ok=True)
        for f in args.out.glob("*.md"):
            shutil.copy2(f, args.copy_to / f.name)
        for f in args.out.glob("*.tex"):
            shutil.copy2(f, args.copy_to / f.name)
    print(f"updated {args.readme}")


if __name__ == "__main__":
    main()
