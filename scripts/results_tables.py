"""Write a run's result tables into the README and docs/benchmarks.md, from the run's own files.

python scripts/results_tables.py RUN_DIR --name quick [--readme README.md] [--benchmarks docs/benchmarks.md]
       [--command "laborllm run --profile quick"] [--copy-to docs/results/quick]

Replaces the text between `<!-- results:NAME begin -->` and `<!-- results:NAME end -->` in the README
(comparison tables, what each row is, paired ratios) and between `<!-- timings:NAME begin -->` and
`<!-- timings:NAME end -->` in docs/benchmarks.md (per-model wall times), so no figure is pasted by hand.
`--copy-to` keeps the files the tables come from in the repository: metrics.json, config.json and each
panel's comparison, paired and contrast tables (markdown and LaTeX).
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import time
from pathlib import Path

from laborllm.files import write_text_atomic
from laborllm.evaluation.compare import TABLE_STEMS, comparison_table, contrast_table, to_markdown, transition_table
from laborllm.profiles import PROFILES, REFERENCE


def _header(cfg: dict, command: str, when: str) -> str:
    v = cfg["versions"]
    machine = v.get("gpu") or f"{v.get('cpu', '?')} CPU" + (f" ({v['cpu_bf16']})" if v.get("cpu_bf16") else "")
    return (f"`{command}`, seed {cfg['seed']}, {machine}, torch {v.get('torch', '?')}, "
            f"transformers {v.get('transformers', '?')}, {when}.")


def results_markdown(run: Path, command: str) -> str:
    metrics = json.loads((run / "metrics.json").read_text())
    cfg = json.loads((run / "config.json").read_text())
    when = time.strftime("%Y-%m-%d", time.localtime((run / "metrics.json").stat().st_mtime))
    total = sum(_work(cfg, metrics).values())
    out = [_header(cfg, command, when) + f" Models fitted and scored in {total / 60:.1f} min.", ""]
    profile = PROFILES.get(cfg["profile"])
    for tag in dict.fromkeys(r["data"] for r in metrics):
        rows = [r for r in metrics if r["data"] == tag]
        people = rows[0]["n_persons"]
        contrasts = contrast_table(rows, profile.contrasts if profile else ())
        if len(contrasts):  # the profile's question first, then the whole comparison
            out += [f"**{profile.question}** ({tag}; paired person-bootstrap intervals; better or worse only "
                    "where the interval excludes 1)", "", to_markdown(contrasts).rstrip(), ""]
        out += [f"**{tag}**: {people:,} test people, {rows[0]['n_events']:,} events, {rows[0]['n_states']} states; "
                f"every row on the same events. Ratio: perplexity relative to `{REFERENCE}` with the paired "
                "person-bootstrap interval.", "", to_markdown(comparison_table(rows, REFERENCE)).rstrip(), ""]
        out += [f"- `{r['model']}`: {r['label'].split(' (', 1)[-1].rstrip(')')}" for r in rows] + [""]
        ref = "career" if any(r["model"] == "career" for r in rows) else REFERENCE
        moves = transition_table(rows, ref) if any(r["model"] == ref for r in rows) else []
        if len(moves) and len(rows) > 2:
            out += [f"**Stays and moves apart** ({tag}): perplexity on the events where the person stays in the last "
                    f"observed state and on those where they move, and the ratio to `{ref}` paired by person within "
                    "each.", "", to_markdown(moves).rstrip(), ""]
        summary = run / tag / "representativeness-summary.md"
        if summary.exists():  # written by the run's report stage
            out += [f"**Whose predictions represent each subgroup** ({tag}): the distance between the mean predicted "
                    "and the observed distribution of next states over all test events, corrected for the observed "
                    "side's noise (0: indistinguishable from the truth), with person-bootstrap intervals; the number of "
                    f"subgroup levels where each model is closer to or farther from the observed population than `{ref}` "
                    "(paired interval excluding 0); by level in `representativeness.md` and "
                    "`representativeness-paired.md`.", "", summary.read_text().rstrip(), ""]
        out += sample_markdown(run / tag / "sample", tag, ref, {r["model"] for r in rows})
        scored = {r["model"] for r in rows + _sample_rows(run / tag)}
        waiting = [n for b in cfg.get("benchmarks", []) if b["folder"] == tag for n in b["models"] if n not in scored]
        if waiting:  # a run in pieces: say what is still to come rather than let the table look whole
            out += [f"Not yet scored on every test event: {', '.join(f'`{n}`' for n in waiting)} (the run "
                    f"continues where it stopped: `{command}`).", ""]
    return "\n".join(out)


def sample_markdown(folder: Path, tag: str, ref: str, main: set) -> list[str]:
    """The models too slow for every test event, on a seeded sample of test people beside every other
    model on the same people (written by the run in PANEL/sample/)."""
    rows = _sample_rows(folder.parent)
    if not rows:
        return []
    s = rows[0]["sample"]
    out = [f"**On a seeded sample of test people** ({tag}): {s['persons']:,} of the {s['of_persons']:,} test people "
           f"(seed {s['seed']}), {rows[0]['n_events']:,} events; the models scored on every test event above are "
           "read on these people's events, beside the models too slow for all of them. Ratio: to "
           f"`{REFERENCE}`, paired by person.", "", to_markdown(comparison_table(rows, REFERENCE)).rstrip(), ""]
    out += [f"- `{r['model']}`: {r['label'].split(' (', 1)[-1].rstrip(')')}" for r in rows if r["model"] not in main]
    out += [""]
    summary = folder / "representativeness-summary.md"
    if summary.exists():
        out += [f"Representativeness on the same people (distance to the observed next broad groups, noise-corrected; "
                f"levels closer or farther than `{ref}`):", "", summary.read_text().rstrip(), ""]
    return out


def _sample_rows(panel: Path) -> list[dict]:
    f = panel / "sample" / "metrics.json"
    return json.loads(f.read_text()) if f.exists() else []


def _work(cfg: dict, metrics: list[dict]) -> dict[str, float]:
    """Seconds each model took: its wall time in this invocation (metrics and bootstraps included), or
    its own fit and scoring time when it was fitted by an earlier invocation of a resumed run (or the
    run is still going), whichever is longer."""
    by = {f"{r['data']}/{r['model']}": r for r in metrics}
    times = cfg.get("timings_seconds", {})
    return {k: max(times.get(k, 0), (by.get(k, {}).get("fit_seconds") or 0) + (by.get(k, {}).get("score_seconds") or 0))
            for k in dict.fromkeys([*times, *by])}


def timings_markdown(run: Path, command: str) -> str:
    cfg = json.loads((run / "config.json").read_text())
    rows = json.loads((run / "metrics.json").read_text())
    sampled = [r for tag in dict.fromkeys(r["data"] for r in rows) for r in _sample_rows(run / tag)]
    # a model scored on a sample of test people only has its row there (the others' rows are read from
    # their whole-split scores, not timed again)
    metrics = {f"{r['data']}/{r['model']}": r for r in sampled} | {f"{r['data']}/{r['model']}": r for r in rows}
    when = time.strftime("%Y-%m-%d", time.localtime((run / "metrics.json").stat().st_mtime))
    lines = [_header(cfg, command, when), "", "| panel/model | fit (s) | score test (s) | wall, with metrics (s) |",
             "|---|---|---|---|"]
    work = _work(cfg, list(metrics.values()))
    for key, w in work.items():
        r = metrics.get(key, {})
        fit = r.get("fit_seconds")
        lines.append(f"| {key} | {fit if fit is not None else 'reused'} | {r.get('score_seconds', '')} | {w:.1f} |")
    lines.append(f"| total | | | {sum(work.values()):.0f} |")
    return "\n".join(lines) + "\n"


def replace_blocks(blocks: list[tuple[Path, str, str, str]]) -> None:
    """Each (file, kind, name, text): the text between the file's markers. Every file and marker is
    checked before any file is written, so a missing block leaves every file as it was."""
    done = {}
    for path, kind, name, text in blocks:
        try:
            doc = done.get(path) or path.read_text()
        except OSError as e:
            fail(f"{path}: cannot read ({e.strerror})")
        begin, end = f"<!-- {kind}:{name} begin -->", f"<!-- {kind}:{name} end -->"
        pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
        if not pattern.search(doc):
            fail(f"{path}: no {begin} ... {end} block; nothing was written")
        done[path] = pattern.sub(lambda _: f"{begin}\n{text.rstrip()}\n{end}", doc)
    for path, doc in done.items():
        write_text_atomic(path, doc)


def fail(message: str):
    """A misuse is one message and exit status 2, as in the CLI; never a traceback."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def copy_run_files(run: Path, dest: Path) -> list[Path]:
    """The run's own files behind the tables, copied to `dest` (per panel as in the run folder)."""
    wanted = [run / "metrics.json", run / "config.json"]
    for tag in dict.fromkeys(r["data"] for r in json.loads((run / "metrics.json").read_text())):
        wanted += sorted(p for p in [*(run / tag).glob("*"), *(run / tag / "sample").glob("*")]
                         if p.suffix in (".md", ".tex") and p.stem in TABLE_STEMS)
        wanted += [p for p in [run / tag / "sample" / "metrics.json"] if p.exists()]
    copied = []
    for f in wanted:
        target = dest / f.relative_to(run)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, target)
        copied.append(target)
    return copied


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--name", required=True, help="the block name, e.g. quick or nlsy97-full")
    ap.add_argument("--readme", type=Path, default=Path("README.md"))
    ap.add_argument("--benchmarks", type=Path, default=Path("docs/benchmarks.md"))
    ap.add_argument("--command", default=None)
    ap.add_argument("--copy-to", type=Path, default=None, help="keep the run's files here, e.g. docs/results/quick")
    args = ap.parse_args()
    for f in ("metrics.json", "config.json"):  # a model folder, a run cut short, a damaged file: one message
        try:
            json.loads((args.run / f).read_text())
        except (OSError, ValueError) as e:
            fail(f"{args.run / f}: not a run folder's file ({getattr(e, 'strerror', None) or e})")
    command = args.command or f"laborllm run --profile {json.loads((args.run / 'config.json').read_text())['profile']}"
    replace_blocks([(args.readme, "results", args.name, results_markdown(args.run, command)),
                    (args.benchmarks, "timings", args.name, timings_markdown(args.run, command))])
    print(f"updated {args.readme} and {args.benchmarks} from {args.run}")
    if args.copy_to:
        print(f"copied {len(copy_run_files(args.run, args.copy_to))} files to {args.copy_to}")


if __name__ == "__main__":
    main()
