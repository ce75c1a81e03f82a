"""Plots (PNG) and a self-contained report.html for a benchmark run: rendering only; the figures
come from laborllm.evaluation (metrics, comparison tables, predicted populations)."""
from __future__ import annotations

import base64
import html
import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from laborllm.evaluation.compare import formatted, comparison_table, contrast_table, paired_table, subgroup_table  # noqa: E402
from laborllm.evaluation.careers import SIM_PERSONS, SIM_YEARS  # noqa: E402
from laborllm.files import atomic_write, write_text_atomic  # noqa: E402
from laborllm.profiles import REFERENCE  # noqa: E402

log = logging.getLogger(__name__)


def _save(fig, path: Path) -> Path:
    """Atomically, like every other output: a full disk never leaves a truncated plot."""
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, bbox_inches="tight", format=path.suffix[1:]))
    finally:
        plt.close(fig)


def plot_perplexity(results: list[dict], path: Path, title: str) -> Path:
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(results) + 1.2))
    names = [r["model"] for r in results]
    ppl = np.array([r["perplexity"] for r in results])
    lo = np.array([r["perplexity_ci95"][0] if r["perplexity_ci95"][0] is not None else r["perplexity"] for r in results])
    hi = np.array([r["perplexity_ci95"][1] if r["perplexity_ci95"][1] is not None else r["perplexity"] for r in results])
    y = np.arange(len(results))[::-1]
    ax.errorbar(ppl, y, xerr=[np.maximum(ppl - lo, 0), np.maximum(hi - ppl, 0)], fmt="o", color="#1f4e79", capsize=4)
    ax.set_yticks(y, names)
    ax.set_xlabel("test perplexity (lower is better), 95% person-bootstrap interval")
    if ppl.max() > 20 * ppl.min():
        ax.set_xscale("log")
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def plot_calibration(results: list[dict], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect")
    for r in results:
        c = r["reliability"]
        ax.plot([b["confidence"] for b in c], [b["accuracy"] for b in c], "o-", ms=3,
                label=f"{r['model']} (ECE {r['ece']:.3f})")
    ax.set_xlabel("predicted probability of the top state")
    ax.set_ylabel("observed frequency")
    ax.set_title("Calibration (top-label reliability)")
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_subgroups(results: list[dict], reference: str, path: Path) -> Path | None:
    """A forest plot: each model's perplexity ratio to `reference` in every subgroup level, with the
    interval paired by person within the level (None when no row has paired subgroup figures)."""
    others = [r for r in results if r["model"] != reference]
    levels = [(g, lv) for g in dict.fromkeys(g for r in others for g in r.get("subgroups", {}))
              for lv in dict.fromkeys(lv for r in others for lv in r["subgroups"].get(g, {}))]
    cell = {(r["model"], g, lv): r["subgroups"].get(g, {}).get(lv, {}).get("paired", {}).get(reference)
            for r in others for g, lv in levels}
    if not others or not any(cell.values()):
        return None
    fig, ax = plt.subplots(figsize=(7.5, 0.32 * len(levels) * max(1, len(others) / 3) + 1.4))
    y0 = np.arange(len(levels))[::-1] * (len(others) + 1)
    for i, r in enumerate(others):
        pts = [(y0[j] + (len(others) - 1) / 2 - i, cell[r["model"], g, lv]) for j, (g, lv) in enumerate(levels)
               if cell[r["model"], g, lv]]
        y = np.array([p[0] for p in pts])
        ratio = np.array([p[1]["ratio"] for p in pts])
        lo = np.array([p[1]["ci95"][0] if p[1]["ci95"][0] is not None else p[1]["ratio"] for p in pts])
        hi = np.array([p[1]["ci95"][1] if p[1]["ci95"][1] is not None else p[1]["ratio"] for p in pts])
        ax.errorbar(ratio, y, xerr=[np.maximum(ratio - lo, 0), np.maximum(hi - ratio, 0)], fmt="o", ms=3,
                    capsize=2, label=r["model"])
    ax.axvline(1, color="black", lw=1)
    ax.set_yticks(y0, [f"{g}: {lv}" for g, lv in levels], fontsize=7)
    ax.set_xlabel(f"perplexity ratio to {reference} (left of 1: better), paired 95% interval within the level")
    ax.set_title("Results by subgroup", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return _save(fig, path)


def plot_representativeness(rep: pd.DataFrame, path: Path) -> Path:
    groups = list(dict.fromkeys(rep.group))
    fig, axes = plt.subplots(len(groups), 2, figsize=(11, 2.6 * len(groups)), squeeze=False)
    for i, g in enumerate(groups):
        d = rep[rep.group == g]
        wide = d.pivot(index="level", columns="model", values="distance_groups")
        err = [[(wide - d.pivot(index="level", columns="model", values="distance_groups_lo")).clip(lower=0).to_numpy().T,
                (d.pivot(index="level", columns="model", values="distance_groups_hi") - wide).clip(lower=0).to_numpy().T]]
        wide.plot.bar(ax=axes[i, 0], legend=i == 0, width=0.8, yerr=np.concatenate(err).transpose(1, 0, 2),
                      capsize=1, error_kw={"lw": 0.6})
        axes[i, 0].set_ylabel("corrected distance")
        axes[i, 0].set_title(f"{g}: predicted vs observed next-state distribution", fontsize=9)
        mv = d.pivot(index="level", columns="model", values="move_rate_predicted")
        mv.plot.bar(ax=axes[i, 1], legend=False, width=0.8)
        obs = d.drop_duplicates("level").set_index("level").move_rate_observed.reindex(mv.index)
        axes[i, 1].scatter(range(len(obs)), obs, color="black", marker="_", s=400, zorder=3, label="observed")
        axes[i, 1].set_ylabel("move rate")
        axes[i, 1].set_title(f"{g}: predicted move rate (bars) vs observed (black)", fontsize=9)
        for ax in axes[i]:
            ax.tick_params(axis="x", labelrotation=30, labelsize=7)
            ax.set_xlabel("")
        if i == 0:
            axes[i, 0].legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def plot_trajectories(t: pd.DataFrame, path: Path) -> Path:
    sources = list(dict.fromkeys(t.source))
    counts = t[t.source == "observed"].age.value_counts()
    t = t[t.age.isin(counts[counts >= 30].index)]  # ages with too few people are noise
    top = t[t.source == "observed"].group.value_counts().index[:6]
    fig, axes = plt.subplots(2, 3, figsize=(11, 6), squeeze=False)
    for ax, g in zip(axes.ravel(), top):
        for s in sources:
            d = t[t.source == s]
            share = d.assign(hit=d.group == g).groupby("age").hit.mean()
            ax.plot(share.index, share.values, "k-" if s == "observed" else "-", lw=2.2 if s == "observed" else 1.2, label=s)
        ax.set_title(g, fontsize=8)
        ax.set_xlabel("age")
    axes[0, 0].set_ylabel("share of person-years")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle("Simulated careers vs observed test careers: share in each broad group by age", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(path.stem)}">'


def _numbers(df: pd.DataFrame) -> pd.DataFrame:
    """Three decimals; a figure that does not apply (a panel without a not-working state) reads n/a."""
    def cell(v):
        if v is None or (isinstance(v, float) and np.isnan(v)):
            return "n/a"
        return f"{v:.3f}" if isinstance(v, (int, float, np.number)) and not isinstance(v, bool) else v

    return df.map(cell)


def _table(df: pd.DataFrame) -> str:
    return df.to_html(index=False, border=0, classes="t", escape=True, na_rep="")


def panel_section(folder: Path, results: list[dict], events, models: dict, profile, seed: int,
                  population: dict, sample: list[dict] = ()) -> str:
    """The report's part for one benchmark panel: comparison, paired ratios, LLM normalisation,
    calibration, derived tasks, representativeness and simulated careers, fed what the run computed
    (laborllm.pipeline.populations; `sample`: the rows of pipeline.on_sample)."""
    test = events.test
    plots = folder / "plots"
    tag = folder.name
    n = test.frame.person_id.nunique()
    desc = f"{tag}: {n:,} test people, {len(test):,} events, {len(events.states)} states"
    parts = [f"<h2>{html.escape(desc)}</h2>",
             f"<p>{events.panel.n_persons:,} people in the panel ({html.escape(events.panel.source)}), split seed {seed}. "
             "Every model below is scored on exactly the same test events.</p>",
             _table(formatted(comparison_table(results, REFERENCE)).drop(columns=["What it is"], errors="ignore")),
             "<p>What each row is:</p><ul>" + "".join(
                 f"<li><b>{html.escape(r['model'])}</b>: {html.escape(r.get('label', r['model']))}</li>" for r in results) + "</ul>",
             _img(plot_perplexity(results, plots / "perplexity.png", desc)),
             "<h3>Paired perplexity ratios</h3><p>Each pair on the same events; the interval resamples the same "
             "people for both models, so it is much tighter than the marginal intervals suggest.</p>",
             _table(formatted(paired_table(results)))]
    if sample:  # models too slow for every event, beside the others on a sample of people (PANEL/sample/)
        s = sample[0]["sample"]
        parts += [f"<h3>On a seeded sample of {s['persons']:,} test people</h3><p>The models too slow for every test "
                  f"event, beside every model above read on the same people's {sample[0]['n_events']:,} events (seed "
                  f"{s['seed']}); the ratio is paired by person.</p>",
                  _table(formatted(comparison_table(sample, REFERENCE)).drop(columns=["What it is"], errors="ignore"))]
    contrasts = contrast_table(results, profile.contrasts)
    if len(contrasts):
        parts += [f"<h3>{html.escape(profile.question)}</h3><p>Each model against the same model "
                  "without the ingredient in question, on the same test events; the interval is paired by person. "
                  "Better or worse only where the interval excludes 1.</p>", _table(formatted(contrasts))]
    llm_rows = [r for r in results if models[r["model"]].language_model]
    if llm_rows:
        ab = pd.DataFrame([{"model": r["model"], "probabilities": r["normalization"], "perplexity": r["perplexity"],
                            "unnormalised perplexity": r.get("unnormalised_perplexity"),
                            "mean mass on valid states": r.get("valid_mass_mean")} for r in llm_rows])
        parts += ["<h3>Titles vs numeric codes, and mass outside the state set</h3>",
                  "<p>The renormalised figure divides by the probability the LLM gives to all valid state texts; "
                  "the unnormalised one counts the mass spent on invalid text as loss.</p>", _table(_numbers(ab))]
    by_level = subgroup_table(results)
    if len(by_level):  # a panel without covariates has no subgroups
        parts += ["<h3>Results by subgroup</h3><p>Test perplexity on each level's events (a level with fewer "
                  "than 20 events is left out; subgroup figures are unweighted).</p>", _table(formatted(by_level))]
    forest = plot_subgroups(results, REFERENCE, plots / "subgroups.png")
    if forest:
        parts += [f"<p>Each model against {REFERENCE} within each level, the interval paired by person there "
                  "(better or worse only where it excludes 1):</p>", _img(forest),
                  _table(formatted(subgroup_table(results, REFERENCE)))]
    parts += ["<h3>Calibration</h3>", _img(plot_calibration(results, plots / "calibration.png"))]
    tasks = pd.DataFrame([{"model": r["model"], "move AUC": r["move"]["auc"],
                           "move log loss": r["move"]["logloss"], "move rate observed": r["move"]["rate"],
                           "move rate predicted": r["move"]["predicted_rate"], "working AUC": r["working"]["auc"],
                           "working log loss": r["working"]["logloss"], "working rate observed": r["working"]["rate"],
                           "working rate predicted": r["working"]["predicted_rate"]} for r in results])
    # a task that does not apply (no not-working state: the rates are all 0) reads n/a, not None and 0.0
    for task in ("move", "working"):
        if all(r[task]["auc"] is None for r in results):
            tasks[[c for c in tasks.columns if c.startswith(task)]] = None
    parts += ["<h3>Derived tasks: change state, and working next year</h3>", _table(_numbers(tasks))]
    rep, traj, ref, tables = (population[k] for k in ("representativeness", "trajectories", "reference", "tables"))
    if len(rep):
        parts += ["<h3>Representativeness by subgroup</h3>",
                  "<p>Distance between the mean predicted and the observed distribution of next states, corrected "
                  "for the noise of the observed shares (about 0 for a model that predicts the true distribution; "
                  "0 where it cannot be told from noise), with 95% person-bootstrap intervals; the raw total "
                  "variation distance beside it. Move and working rates: predicted (observed).</p>",
                  _table(formatted(tables["representativeness-summary"])),
                  "<p>By subgroup level, over broad occupation groups:</p>", _table(formatted(tables["representativeness"]))]
        if "representativeness-paired" in tables:
            parts += [f"<p>Each model minus {html.escape(ref)}, paired by person (below 0: closer to the observed "
                      "population; a difference only where the interval excludes 0):</p>",
                      _table(formatted(tables["representativeness-paired"]))]
        parts += [_img(plot_representativeness(rep, plots / "representativeness.png"))]
    if len(traj):
        parts += ["<h3>Simulated careers</h3>",
                  f"<p>{SIM_PERSONS} test people, one sampled career each over {SIM_YEARS} years from their first "
                  "observed year, against their observed careers: the noise-corrected distance between the shares "
                  "of broad occupation groups by year (both sides' sampling noise removed).</p>",
                  _table(formatted(tables["careers"])) if "careers" in tables else "",
                  _img(plot_trajectories(traj, plots / "trajectories.png"))]
    return "".join(parts)


def write_report(out: Path, sections: list[str], profile) -> Path:
    intro = (f"<h1>laborllm benchmark ({html.escape(profile.name)} profile)</h1><p>Perplexity is exp(mean negative "
             "log-likelihood per event) over the full state set; intervals resample people (95%).</p>")
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>laborllm report</title><style>
body{{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}}
table.t{{border-collapse:collapse;font-size:13px;margin:0.5em 0 1em}}
table.t th,table.t td{{padding:3px 8px;border-bottom:1px solid #ddd;text-align:right}}
table.t th:first-child,table.t td:first-child{{text-align:left}} img{{max-width:100%}} h2{{margin-top:1.6em}}
</style></head><body>{intro}{''.join(sections)}</body></html>"""
    return write_text_atomic(out / "report.html", page)
