"""The variants compared on validation, as a Markdown table generated from their model folders.

python scripts/variants_table.py FOLDER... --name NAME [--benchmarks docs/benchmarks.md]

Each row: the folder's model, its kind, the settings that differ from the kind's defaults, its
validation perplexity and on how many events, its fit time and the machine it was fitted on, and the
date. The table replaces the block between `<!-- variants:NAME begin -->` and `<!-- variants:NAME end -->`
in the benchmarks file (never typed by hand).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from results_tables import fail, replace_blocks  # noqa: E402

from laborllm.models.registry import KINDS  # noqa: E402
from laborllm.settings import defaults  # noqa: E402


def row(folder: Path) -> str:
    try:
        meta = json.loads((folder / "model.json").read_text())
        cls = KINDS[meta["kind"]]
    except (OSError, ValueError, KeyError) as e:
        fail(f"{folder}: not a laborllm model folder ({getattr(e, 'strerror', None) or e})")
    base = {**defaults(cls.Settings), **cls.presets.get(meta.get("profile", "quick"), {})}
    changed = {k: v for k, v in meta["config"].items() if k != "name" and base.get(k) != v}
    short = lambda v: Path(v).name if isinstance(v, str) and "/" in v else v  # noqa: E731 (a folder by its name)
    what = ", ".join(f"{k}={'+'.join(map(str, map(short, v))) if isinstance(v, list) else short(v)}"
                     for k, v in changed.items())
    ppl = meta.get("valid_perplexity")
    events = meta.get("valid_events") or meta.get("valid_persons") and f"{meta['valid_persons']} people" or "all"
    fit = meta.get("fit_seconds")
    return (f"| {folder.name} | {meta['kind']} | {what or 'defaults'} | {f'{ppl:.3f}' if ppl else 'n/a'} | {events} | "
            f"{f'{fit / 60:.1f}' if fit else '?'} | {meta.get('fit_machine', '?')} | {str(meta.get('saved', '?'))[:10]} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", type=Path, nargs="+")
    ap.add_argument("--name", required=True, help="the block name, e.g. nlsy97-heads")
    ap.add_argument("--benchmarks", type=Path, default=Path("docs/benchmarks.md"))
    args = ap.parse_args()
    lines = [f"`python scripts/variants_table.py {' '.join(map(str, args.folders))} --name {args.name}` "
             f"({time.strftime('%Y-%m-%d')}); validation perplexity on the validation events named (the mixture's: "
             "a seeded sample of validation people); fit minutes of the model's own fit on the machine named (a head "
             "reading features another head computed counts only its training).", "",
             "| Variant | Kind | Settings (other than the defaults) | Validation perplexity | Validation events | "
             "Fit (min) | Machine | Date |", "|---|---|---|---|---|---|---|---|"]
    lines += [row(f) for f in args.folders]
    replace_blocks([(args.benchmarks, "variants", args.name, "\n".join(lines))])
    print(f"updated {args.benchmarks}: {len(args.folders)} variants")


if __name__ == "__main__":
    main()
