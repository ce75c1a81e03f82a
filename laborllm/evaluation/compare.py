"""Comparison tables across models: terminal (rich), CSV, Markdown and LaTeX (booktabs).

Models are compared only on identical event sets (same people, years, targets and state set).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from laborllm.errors import UserError
from laborllm.files import write_text_atomic

COLUMNS = {
    "model": "Model", "n_events": "Events", "perplexity": "Perplexity", "ci": "95% CI", "ratio": "Ratio to ref. [paired 95% CI]",
    "top1": "Top-1",
    "top5": "Top-5", "move_auc": "Move AUC", "move_logloss": "Move log loss", "working_auc": "Working AUC",
    "working_logloss": "Working log loss", "ece": "ECE", "weighted_perplexity": "Weighted ppl",
    "probabilities": "Probabilities", "label": "What it is",
    "vs": "vs", "ratio_ci": "Paired 95% CI", "vs_perplexity": "vs perplexity", "paired_ratio": "Ratio [paired 95% CI]",
    "verdict": "Verdict", "group": "Group", "level": "Level",
    "stays_events": "Stays", "stays_perplexity": "Perplexity on stays", "stays_ratio": "Ratio on stays [paired 95% CI]",
    "moves_events": "Moves", "moves_perplexity": "Perplexity on moves", "moves_ratio": "Ratio on moves [paired 95% CI]",
    "people": "People", "distance_groups": "Distance, broad groups [95% CI]", "distance_states": "Distance, states [95% CI]",
    "tv_states": "Raw TV, states", "move_rate": "Move rate, predicted (observed)",
    "working_rate": "Working rate, predicted (observed)", "closer_levels": "Levels closer than ref.",
    "farther_levels": "Levels farther than ref.", "career_distance": "Simulated careers' distance [95% CI]",
}
TEXT = ("model", "ci", "ratio", "n_events", "probabilities", "label", "vs", "ratio_ci", "paired_ratio", "verdict",
        "group", "level", "stays_events", "moves_events", "stays_ratio", "moves_ratio", "people", "distance_groups",
        "distance_states", "move_rate", "working_rate", "closer_levels", "farther_levels", "career_distance")
PERPLEXITIES = ("perplexity", "weighted_perplexity", "vs_perplexity")  # two decimals


def probabilities(normalization: str) -> str:
    """The short name of how a row's probabilities were normalised (shown in every table row)."""
    for key in ("constrained", "unnormalised", "renormalised"):
        if normalization.startswith(key) or f", {key}" in normalization:
            return key
    return "exact"


def _ci(lo, hi) -> str:
    return f"[{lo:.3f}, {hi:.3f}]" if lo is not None else "n/a"


def check_same_events(results: list[dict]) -> None:
    prints = {(r["split"], r["events_fingerprint"]) for r in results}
    if len(prints) > 1:
        names = ", ".join(f"{r['model']} ({r['split']}, {r['n_events']} events)" for r in results)
        raise UserError(f"refusing to compare models evaluated on different event sets: {names}")


def comparison_table(results: list[dict], reference: str | None = None) -> pd.DataFrame:
    """One row per model; with `reference` (a model among the rows, with paired ratios), a column of
    each model's perplexity ratio to it with the paired interval."""
    check_same_events(results)
    rows = []
    for r in results:
        lo, hi = r["perplexity_ci95"]
        ci = f"[{lo:.2f}, {hi:.2f}]" if lo is not None else "n/a (one person)"
        row = {"model": r["model"], "n_events": r["n_events"], "perplexity": r["perplexity"], "ci": ci}
        if reference and any(x["model"] == reference for x in results):
            p = r.get("paired", {}).get(reference)
            row["ratio"] = "1 (reference)" if r["model"] == reference else (
                f"{p['ratio']:.3f} {_ci(*p['ci95'])}" if p else "")
        rows.append(row | {
            "top1": r["top1"], "top5": r["top5"], "move_auc": r["move"]["auc"], "move_logloss": r["move"]["logloss"],
            "working_auc": r["working"]["auc"],
            # undefined where every event is a working year (or none is): blank, as the AUC is
            "working_logloss": r["working"]["logloss"] if r["working"]["auc"] is not None else None, "ece": r["ece"],
            "weighted_perplexity": r.get("weighted", {}).get("perplexity"),
            "probabilities": probabilities(r.get("normalization", "exact")), "label": r.get("label", r["model"]),
        })
    return pd.DataFrame(rows)


def paired_table(results: list[dict]) -> pd.DataFrame:
    """Every pair of models (in table order): perplexity ratio and its paired person-bootstrap interval."""
    check_same_events(results)
    rows = []
    for i, a in enumerate(results):
        for b in results[i + 1:]:
            p = a.get("paired", {}).get(b["model"])
            if p:
                rows.append({"model": a["model"], "vs": b["model"], "ratio": f"{p['ratio']:.3f}", "ratio_ci": _ci(*p["ci95"])})
    return pd.DataFrame(rows, columns=["model", "vs", "ratio", "ratio_ci"])


def contrast_table(results: list[dict], contrasts) -> pd.DataFrame:
    """Chosen pairs (model, the same model without one ingredient): both perplexities, the paired
    ratio and what its interval says. Pairs with a model missing from the results are left out."""
    check_same_events(results)
    by = {r["model"]: r for r in results}
    rows = []
    for a, b in contrasts:
        if a in by and b in by and b in by[a].get("paired", {}):
            p = by[a]["paired"][b]
            lo, hi = p["ci95"]
            verdict = ("no clear difference" if lo is None or lo <= 1 <= hi
                       else "better" if hi < 1 else "worse")
            rows.append({"model": a, "vs": b, "perplexity": by[a]["perplexity"], "vs_perplexity": by[b]["perplexity"],
                         "paired_ratio": f"{p['ratio']:.3f} {_ci(lo, hi)}", "verdict": verdict})
    return pd.DataFrame(rows, columns=["model", "vs", "perplexity", "vs_perplexity", "paired_ratio", "verdict"])


def subgroup_table(results: list[dict], reference: str | None = None) -> pd.DataFrame:
    """Results by subgroup, one row per level (gender, race, education, cohort, region) and one column
    per model: its perplexity on that level's events, or, with `reference`, each other model's
    perplexity ratio to the reference there with the interval paired by person within the level."""
    check_same_events(results)
    groups = dict.fromkeys(g for r in results for g in r.get("subgroups", {}))
    others = [r for r in results if r["model"] != reference] if reference else results
    rows = []
    for g in groups:
        for level in dict.fromkeys(lv for r in results for lv in r["subgroups"].get(g, {})):
            cells = {r["model"]: r["subgroups"].get(g, {}).get(level) for r in results}
            row = {"group": g, "level": level, "n_events": next(c for c in cells.values() if c)["n_events"]}
            for r in others:
                c = cells[r["model"]]
                if not reference:
                    row[r["model"]] = f"{c['perplexity']:.2f}" if c else ""
                    continue
                p = (c or {}).get("paired", {}).get(reference)
                row[r["model"]] = f"{p['ratio']:.3f} {_ci(*p['ci95'])}" if p else ""
            rows.append(row)
    return pd.DataFrame(rows, columns=["group", "level", "n_events"] + [r["model"] for r in others])


def formatted(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    for c in out.columns:
        if c in TEXT:
            out[c] = out[c].map(lambda v: f"{v:,}" if isinstance(v, int) else str(v))
        else:
            out[c] = out[c].map(lambda v: v if isinstance(v, str) else "" if v is None or pd.isna(v)
                                else f"{v:.3f}" if c not in PERPLEXITIES else f"{v:.2f}")
    return out.rename(columns=COLUMNS)


def to_markdown(df: pd.DataFrame) -> str:
    f = formatted(df.drop(columns=["label"], errors="ignore"))
    f = f.loc[:, [(f[c] != "").any() for c in f.columns]]  # no all-blank columns (e.g. no weights)
    lines = ["| " + " | ".join(f.columns) + " |", "|" + "|".join("---" for _ in f.columns) + "|"]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in f.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def to_latex(df: pd.DataFrame, caption: str = "Next-state prediction on held-out people") -> str:
    f = formatted(df.drop(columns=["label"], errors="ignore"))
    body = f.to_latex(index=False, escape=True, column_format="l" + "r" * (f.shape[1] - 1))
    return ("% requires \\usepackage{booktabs}\n\\begin{table}[t]\n\\centering\n\\small\n" + body
            + f"\\caption{{{caption}}}\n\\end{{table}}\n")


def write_tables(df: pd.DataFrame, out: Path, stem: str = "comparison",
                 caption: str = "Next-state prediction on held-out people") -> list[Path]:
    paths = [out / f"{stem}.csv", out / f"{stem}.md", out / f"{stem}.tex"]
    write_text_atomic(paths[0], df.to_csv(index=False))
    write_text_atomic(paths[1], to_markdown(df))
    write_text_atomic(paths[2], to_latex(df, caption))
    return paths


TABLE_STEMS = ("comparison", "paired", "contrasts", "subgroups", "subgroups-paired", "transitions",
               "representativeness", "representativeness-paired", "representativeness-summary", "careers", "careers-paired")


def transition_table(results: list[dict], reference: str) -> pd.DataFrame:
    """Each model on the events where the person stays in the last observed state and on those where
    they move, apart, with its ratio to `reference` paired by person within each (a tie overall can
    hide a model better at moves and worse at stays)."""
    check_same_events(results)
    rows = []
    for r in results:
        row = {"model": r["model"]}
        for level in ("stays", "moves"):
            c = (r.get("subgroups") or {}).get("transition", {}).get(level)
            if not c:
                return pd.DataFrame()
            p = c.get("paired", {}).get(reference)
            row |= {f"{level}_events": c["n_events"], f"{level}_perplexity": c["perplexity"],
                    f"{level}_ratio": "1 (reference)" if r["model"] == reference else
                    f"{p['ratio']:.3f} {_ci(*p['ci95'])}" if p else ""}
        rows.append(row)
    return pd.DataFrame(rows)


def write_panel_tables(rows: list[dict], out: Path, reference: str | None = None, contrasts=()) -> list[Path]:
    """Every table of one panel's models scored on the same events, as CSV, Markdown and LaTeX:
    the comparison, every pair, the chosen contrasts, and the results by subgroup (perplexities, and
    paired ratios to `reference` when it is among the rows)."""
    paths = write_tables(comparison_table(rows, reference), out, "comparison")
    paths += write_tables(paired_table(rows), out, "paired", "Paired perplexity ratios (person bootstrap)")
    if contrasts:
        paths += write_tables(contrast_table(rows, contrasts), out, "contrasts", "Each model against the same model "
                              "without one ingredient (paired person bootstrap)")
    paths += write_tables(subgroup_table(rows), out, "subgroups", "Test perplexity by subgroup")
    if reference and any(r["model"] == reference for r in rows) and len(rows) > 1:
        paths += write_tables(subgroup_table(rows, reference), out, "subgroups-paired",
                              f"Perplexity ratio to {reference} by subgroup (paired person bootstrap within each level)")
    for ref in dict.fromkeys(x for x in ("career", reference) if any(r["model"] == x for r in rows)):
        moves = transition_table(rows, ref)
        if len(moves):  # against CAREER where it is in the run: the model that models staying apart
            paths += write_tables(moves, out, "transitions", f"Stays and moves apart: perplexity and ratio to {ref} "
                                  "(paired person bootstrap within each)")
            break
    return paths


def rich_table(df: pd.DataFrame, title: str = "Model comparison"):
    from rich.table import Table

    cols = ["model", "n_events", "perplexity", "ci", "ratio", "top1", "top5", "move_auc", "working_auc", "ece", "probabilities"]
    f = formatted(df[[c for c in cols if c in df]])
    t = Table(title=title)
    for i, c in enumerate(f.columns):
        t.add_column(c, justify="left" if i == 0 else "right")
    for row in f.itertuples(index=False):
        t.add_row(*map(str, row))
    return t


def _interval_cell(row, key: str) -> str:
    v = row.get(key)
    return "" if v is None or pd.isna(v) else f"{v:.3f} {_ci(row[f'{key}_lo'], row[f'{key}_hi'])}"


def population_tables(rep: pd.DataFrame, careers: pd.DataFrame, reference: str | None) -> dict[str, pd.DataFrame]:
    """The representativeness tables (laborllm.evaluation.representativeness) by file stem: one row per
    subgroup level and one column per model, each cell a noise-corrected distance with its 95%
    person-bootstrap interval (over broad occupation groups; with `reference`, also each model's
    difference to it, paired), the simulated careers' distances likewise, and a summary per model."""
    tables = {}
    for stem, frame, key in (("representativeness", rep, "distance_groups"),
                             ("representativeness-paired", rep, "distance_groups_vs_ref"),
                             ("careers", careers, "distance"), ("careers-paired", careers, "distance_vs_ref")):
        if frame.empty or key not in frame:
            continue
        size = "n_events" if "n_events" in frame else "n_persons"
        wide = [{"group": g, "level": lv, size: int(d[size].iloc[0]),
                 **{r["model"]: _interval_cell(r, key) for r in d.to_dict("records")
                    if not key.endswith("_vs_ref") or r["model"] != reference}}
                for (g, lv), d in frame.groupby(["group", "level"], sort=False)]
        tables[stem] = pd.DataFrame(wide).rename(columns={size: "n_events" if size == "n_events" else "people"})
    if not rep.empty:
        everyone = rep[rep.group == "all"].set_index("model")
        rows = []
        for name, r in everyone.iterrows():
            within = rep[(rep.model == name) & (rep.group != "all")]
            row = {"model": name, "distance_groups": _interval_cell(r, "distance_groups"),
                   "distance_states": _interval_cell(r, "distance_states"), "tv_states": r.tv_states,
                   "move_rate": f"{r.move_rate_predicted:.3f} ({r.move_rate_observed:.3f})",
                   "working_rate": f"{r.working_rate_predicted:.3f} ({r.working_rate_observed:.3f})"}
            if reference and "distance_groups_vs_ref_lo" in within:
                row["closer_levels"] = "(reference)" if name == reference else int((within.distance_groups_vs_ref_hi < 0).sum())
                row["farther_levels"] = "(reference)" if name == reference else int((within.distance_groups_vs_ref_lo > 0).sum())
            if not careers.empty:
                c = careers[(careers.group == "all") & (careers.model == name)]
                row["career_distance"] = _interval_cell(c.iloc[0], "distance") if len(c) else ""
            rows.append(row)
        tables["representativeness-summary"] = pd.DataFrame(rows)
    return tables
