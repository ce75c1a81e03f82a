"""The explorer's pictures, drawn by matplotlib on the server as SVG text (the page needs no chart
library and no internet)."""
from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402


def _svg(fig) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]  # without the XML prologue: the page inlines it


def futures_chart(shares: list[dict], title: str) -> str:
    """Share of sampled paths in each broad occupation group, year by year (stacked areas)."""
    wide = pd.DataFrame(shares).pivot_table(index="year", columns="group", values="share", fill_value=0)
    wide = wide[wide.mean().sort_values(ascending=False).index]
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    ax.stackplot(wide.index, wide.T.values, labels=wide.columns, alpha=0.85)
    ax.set_xlim(wide.index.min(), wide.index.max()) if len(wide) > 1 else None
    ax.set_ylim(0, 1)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("share of sampled paths")
    ax.set_xlabel("year")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    return _svg(fig)


def forest_chart(rows: list[dict], title: str) -> str:
    """Perplexity with its 95% interval for each model on one panel (lower is better)."""
    rows = sorted(rows, key=lambda r: -r["perplexity"])
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(rows) + 1.2))
    for i, r in enumerate(rows):
        lo, hi = r.get("perplexity_ci95") or (r["perplexity"], r["perplexity"])
        ax.plot([lo, hi], [i, i], color="#4477aa", lw=2)
        ax.plot(r["perplexity"], i, "o", color="#224466")
    ax.set_yticks(range(len(rows)), [r["model"] for r in rows], fontsize=8)
    ax.set_xlabel("test perplexity (95% interval over people)")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    return _svg(fig)


def subgroup_chart(table: pd.DataFrame, group: str) -> str:
    """Perplexity of each model in each level of one subgroup (bars)."""
    wide = table.pivot(index="level", columns="model", values="perplexity")
    fig, ax = plt.subplots(figsize=(7.5, 3.4))
    wide.plot.bar(ax=ax, width=0.8)
    ax.set_ylabel("test perplexity")
    ax.set_xlabel("")
    ax.set_title(f"perplexity by {group}", fontsize=10)
    ax.tick_params(axis="x", labelrotation=20, labelsize=8)
    ax.legend(fontsize=7, frameon=False)
    return _svg(fig)
