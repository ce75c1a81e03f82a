"""The in-context baseline's variants compared on validation events, as a Markdown table.

python scripts/icl_variants.py [--data nlsy79-males] [--out runs/icl] [--name icl-men] [--benchmarks docs/benchmarks.md]
                               [--persons N] [--scoring renormalised|constrained]

Each variant is a prompt (how many example histories, how many of their years, a token budget), fitted
(the prompt is drawn from the training people; nothing is trained) and scored on every validation
event (or those of a seeded sample of `--persons` validation people: NLSY97's 334 states), read three ways from one scoring: plainly, calibrated on the content-free prediction, and with
one temperature (fitted on one half of the validation people and applied to the other, then the
halves swapped, so no event is scored with a temperature fitted on it). The uniform guess is the floor. The table replaces the block between `<!-- variants:NAME begin -->` and
`<!-- variants:NAME end -->` in the benchmarks file (never typed by hand).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from results_tables import replace_blocks  # noqa: E402

from laborllm import api  # noqa: E402
from laborllm.errors import UserError  # noqa: E402
from laborllm.models.registry import load_model  # noqa: E402
from laborllm.machine import machine  # noqa: E402
from laborllm.models.icl import fit_temperature  # noqa: E402
from laborllm.models.score_cache import model_log_probs  # noqa: E402

VARIANTS = {  # name -> settings over the quick preset's
    "2 shots, 8 years": {"shots": 2},
    "1,024 tokens, whole histories": {"shots": 10_000, "prompt_tokens": 1024, "max_shot_years": 200},
    "8 shots, 8 years": {"shots": 8},
    "4,096 tokens, whole histories": {"shots": 10_000, "prompt_tokens": 4096, "max_shot_years": 200},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="nlsy79-males")
    ap.add_argument("--out", type=Path, default=Path("runs/icl"))
    ap.add_argument("--name", default="icl-men")
    ap.add_argument("--benchmarks", type=Path, default=Path("docs/benchmarks.md"))
    ap.add_argument("--persons", type=int, default=None, help="a seeded sample of this many validation people")
    ap.add_argument("--scoring", default="renormalised", choices=("renormalised", "constrained"))
    args = ap.parse_args()
    _, events, _ = api.sample_of(api.events_for(api.data_spec(args.data)).valid, args.persons)
    K = len(events.states)
    command = " ".join(["python scripts/icl_variants.py", *sys.argv[1:]])
    which = f"the {len(events):,} validation events of a seeded sample of" if args.persons else \
        f"every one of the {len(events):,} validation events of"
    lines = [f"`{command}` ({time.strftime('%Y-%m-%d')}, {machine()}): SmolLM2-135M-Instruct not fine-tuned, {which} "
             f"{events.frame.person_id.nunique():,} people, {K} states (uniform guess: {K:.2f}); scoring {args.scoring}.", "",
             "| Prompt | Examples | Prompt tokens | Perplexity | Content-free calibrated | Temperature (cross-fitted) "
             "| Scoring (s) |", "|---|---|---|---|---|---|---|"]
    y = events.frame.target.to_numpy()
    people = sorted(events.frame.person_id.unique(), key=str)
    first = set(np.random.default_rng(0).permutation(np.array(people, dtype=object))[: len(people) // 2])
    half = events.frame.person_id.isin(first).to_numpy()
    for i, (name, settings) in enumerate(VARIANTS.items()):
        folder = args.out / f"variant-{i}"
        # read plainly here: the script applies each calibration itself (the presets fit a temperature)
        settings = {**settings, "scoring": args.scoring, "calibrate": "none"}
        try:  # a variant fitted by an earlier invocation is reused with its kept scores
            model = load_model(folder)
            if {k: getattr(model.settings, k) for k in settings} != settings or model.meta["data"]["data"] != args.data:
                raise UserError("other settings or data")
        except UserError:
            model = api.fit("icl", args.data, folder, "quick", settings=settings)
        lp, extra = model_log_probs(model, folder / f"logprobs-valid{f'-{args.persons}people' if args.persons else ''}.parquet", events)
        cal = lp - model.content_free_log_probs(events.panel)[None, :]
        tempered = np.empty_like(lp)
        for fit_on in (half, ~half):
            t = fit_temperature(lp[fit_on], y[fit_on])
            tempered[~fit_on] = lp[~fit_on] / t
        ppl = [float(np.exp(events.target_nll(x - np.logaddexp.reduce(x, axis=1, keepdims=True)).mean()))
               for x in (lp, cal, tempered)]
        print(f"{name}: {model.meta['shots_used']} examples, {len(model.prompt_ids)} tokens, {ppl[0]:.3f} plain, "
              f"{ppl[1]:.3f} content-free, {ppl[2]:.3f} temperature ({extra['score_seconds']:.0f} s)", flush=True)
        lines.append(f"| {name} | {model.meta['shots_used']} | {len(model.prompt_ids):,} | {ppl[0]:.3f} | {ppl[1]:.3f} | "
                     f"{ppl[2]:.3f} | {extra['score_seconds']:.0f} |")
        replace_blocks([(args.benchmarks, "variants", args.name, "\n".join(lines))])  # after each: a long one may be cut
    print(f"updated {args.benchmarks}")


if __name__ == "__main__":
    main()
