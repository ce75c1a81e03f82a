"""Occupation schemes: code -> title, the special non-work states and Census crosswalks.

A scheme turns the raw `occupation` values of a panel into state titles. Three are built in:
- ``occ1990dd``: Autor-Dorn occ1990dd codes (the scheme of CAREER and LABOR-LLM);
- ``census``: Census 2002 or 2010 occupation codes, crosswalked to occ1990dd;
- ``titles``: the values are already state names (coarse panels, your own categories).
Every scheme also accepts the special state names below as values.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import pandas as pd

MISSING = "Missing"
SPECIAL_STATES = ("Student", "Not working", "Military")
NON_WORK = ("Student", "Not working")  # states that count as "not working" in the derived task
SCHEMES = ("occ1990dd", "census", "titles")
UNKNOWN_CODE = "\x00unknown code "  # marks a value a codebook lacks, so that every scheme refuses it

# Broad occ1990dd groups (Autor-Dorn code ranges), used to summarise careers in the report.
OCC1990DD_GROUPS = [
    (3, 37, "Managers and management-related"),
    (43, 235, "Professionals and technicians"),
    (243, 290, "Sales"),
    (303, 389, "Administrative support"),
    (405, 472, "Service"),
    (473, 498, "Farming, forestry, fishing"),
    (503, 699, "Production, craft and repair"),
    (703, 889, "Operators, transport and laborers"),
    (900, 999, "Military"),
]


def _asset(name: str):
    return resources.files("laborllm.data") / "assets" / name


@lru_cache(maxsize=1)
def occ1990dd_titles() -> dict[str, str]:
    """occ1990dd code (as a string without leading zeros) -> English title."""
    with _asset("occ1990dd_titles.csv").open() as f:
        t = pd.read_csv(f)
    return {str(c): title for c, title in zip(t.occ1990dd, t.title)}


@lru_cache(maxsize=1)
def census_crosswalk() -> dict[str, str]:
    """Census 2002/2010 code (4 digits) -> occ1990dd code."""
    with _asset("census_to_occ1990dd.csv").open() as f:
        x = pd.read_csv(f, dtype={"census": str})
    return dict(zip(x.census, x.occ1990dd.astype(str)))


def occ1990dd_group(code: str) -> str:
    if not code.isdigit():
        return code
    c = int(code)
    for lo, hi, name in OCC1990DD_GROUPS:
        if lo <= c <= hi:
            return name
    return "Other"


def norm_code(value: str) -> str:
    """'0430', '430' and '430.0' are the same numeric code."""
    try:
        f = float(value)
    except ValueError:
        return value
    return str(int(f)) if f.is_integer() else value


def read_codebook(path) -> dict[str, str]:
    """A user's classification: a CSV with columns code,title -> {normalised code: title}. The
    panel's states are then the codebook's titles (1-digit NLS groups, SOC, ISCO-08, any scheme)."""
    from pathlib import Path

    from laborllm.errors import DataError

    p = Path(path)
    try:
        t = pd.read_csv(p, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(f"{p}: no such codebook file") from None
    except (OSError, ValueError, pd.errors.ParserError) as e:
        raise DataError(f"{p}: cannot read the codebook as CSV ({type(e).__name__})") from None
    cols = {c.strip().lower(): c for c in t.columns}
    if "code" not in cols or "title" not in cols:
        raise DataError(f"{p}: a codebook needs the columns code,title (found: {', '.join(map(str, t.columns))})")
    codes, titles = t[cols["code"]].str.strip(), t[cols["title"]].str.strip()
    empty = (codes == "") | (titles == "")
    if empty.any():
        raise DataError(f"{p}: empty code or title in row(s) {', '.join(str(i + 2) for i in empty[empty].index[:5])}")
    norm = codes.map(norm_code)
    for code, rows in norm.groupby(norm).groups.items():
        names = titles[rows].unique()
        if len(names) > 1:  # one code, two titles: which one is meant cannot be guessed
            where = ", ".join(f"row {i + 2} ({titles[i]!r})" for i in rows[:4])
            raise DataError(f"{p}: code {codes[rows[0]]!r} is given two different titles: {where}")
    return dict(zip(norm, titles))


@dataclass(frozen=True)
class Scheme:
    name: str

    def __post_init__(self):
        if self.name not in SCHEMES:
            from laborllm.errors import UserError

            raise UserError(f"unknown occupation scheme {self.name!r}; choose one of {', '.join(SCHEMES)}")

    def to_title(self, value: str) -> str | None:
        """Title for a raw value, MISSING for a missing value, None when the code is unknown."""
        v = value.strip()
        if v.startswith(UNKNOWN_CODE):
            return None
        if v in ("", MISSING):  # empty cells arrive as "" (the caller maps NaN); "None" may be a real title
            return MISSING
        if v in SPECIAL_STATES:
            return v
        if self.name == "titles" or v in _title_to_code():  # a title is accepted in every scheme
            return v
        code = norm_code(v)
        if self.name == "census":
            code = census_crosswalk().get(code.zfill(4)) if code.isdigit() else None
            if code is None:
                return None
        return occ1990dd_titles().get(code)

    def code_of(self, title: str) -> str:
        """The numeric code shown in the numeric-code text variant."""
        return _title_to_code().get(title, title) if self.name != "titles" else title

    def group_of(self, title: str) -> str:
        if self.name == "titles" or title in SPECIAL_STATES:
            return title
        return occ1990dd_group(self.code_of(title))


@lru_cache(maxsize=1)
def _title_to_code() -> dict[str, str]:
    return {t: c for c, t in occ1990dd_titles().items()}
