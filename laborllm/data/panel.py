"""The panel type: one row per person and year, validated, with occupations turned into states.

Canonical columns: ``person_id``, ``year``, ``occupation`` (required) and optionally ``gender``,
``race``, ``birth_year``, ``education``, ``region``, ``enrolled``, ``weight``. Any other names are
mapped with ``columns={"their_name": "canonical_name"}``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from laborllm.data.schemes import MISSING, SPECIAL_STATES, UNKNOWN_CODE, Scheme, _norm_code
from laborllm.errors import DataError

log = logging.getLogger(__name__)

REQUIRED = ("person_id", "year", "occupation")
OPTIONAL = ("gender", "race", "birth_year", "education", "region", "enrolled", "weight")
CATEGORICAL = ("gender", "race", "education", "region")
UNKNOWN_POLICIES = ("error", "missing")


def _rows(mask: pd.Series, limit: int = 8) -> str:
    """'rows 3, 17 and 2 more' with 1-based data-row numbers (the header is not a row)."""
    idx = np.flatnonzero(np.asarray(mask)) + 1
    shown = ", ".join(str(i) for i in idx[:limit])
    return f"row{'s' if len(idx) > 1 else ''} {shown}" + (f" and {len(idx) - limit} more" if len(idx) > limit else "")


@dataclass
class Panel:
    """A validated career panel.

    ``frame`` is sorted by person and year and has the canonical columns plus ``state`` (the state
    title, or ``Missing``). Leading and trailing ``Missing`` years of each person are dropped.
    ``states`` is the fixed, sorted set of valid prediction states (``Missing`` is never one).
    """

    frame: pd.DataFrame
    scheme: Scheme
    source: str = "<frame>"
    n_unknown: int = 0
    states: list[str] | None = None  # given: the state set of a fitted model; else the observed states

    def __post_init__(self):
        observed = set(self.frame.state) - {MISSING}
        if self.states is None:
            self.states = sorted(observed)
        elif observed - set(self.states):
            raise DataError(f"{self.source}: state(s) the model does not know: {', '.join(sorted(observed - set(self.states))[:5])}")
        index = {s: i for i, s in enumerate(self.states)}
        self.frame["state_id"] = self.frame.state.map(index).fillna(-1).astype("int64")

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_frame(
        cls,
        df: pd.DataFrame,
        *,
        source: str = "<frame>",
        columns: dict[str, str] | None = None,
        scheme: str = "occ1990dd",
        unknown: str = "error",
        min_age: int | None = None,
        unknown_hint: str = "; pass --unknown missing to treat them as Missing",
        codebook: dict[str, str] | None = None,
        century: int | None = None,
    ) -> "Panel":
        """Validate a raw table and build the panel; every failure raises DataError naming rows."""
        if unknown not in UNKNOWN_POLICIES:
            raise DataError(f"unknown-code policy must be one of {UNKNOWN_POLICIES}, not {unknown!r}")
        df = df.reset_index(drop=True)
        if columns:
            absent = [c for c in columns if c not in df.columns]
            if absent:
                raise DataError(f"{source}: column mapping names column(s) {absent} that the file lacks "
                                f"(it has: {', '.join(map(str, df.columns))})")
            clash = [new for old, new in columns.items() if new in df.columns and new != old and new not in columns]
            if clash:
                raise DataError(f"{source}: --columns maps onto column(s) {clash} that the file already has; "
                                "rename or drop those first")
            df = df.rename(columns=columns)
        missing = [c for c in REQUIRED if c not in df.columns]
        if missing:
            raise DataError(
                f"{source}: missing required column(s) {', '.join(missing)} (found: {', '.join(map(str, df.columns))}); "
                "map yours with --columns their_name=canonical_name"
            )
        if df.empty:
            raise DataError(f"{source}: the panel has no rows")
        out = pd.DataFrame(index=df.index)
        pid = df.person_id
        if pid.isna().any():
            raise DataError(f"{source}: person_id is empty in {_rows(pid.isna())}")
        out["person_id"] = pd.to_numeric(pid).astype("int64") if _all_int(pid) else pid.astype(str)
        out["year"] = _integer_column(df.year, "year", source, century=century).astype("int64")
        dup = out.duplicated(["person_id", "year"], keep=False)
        if dup.any():
            raise DataError(f"{source}: duplicate person-years (person_id, year) in {_rows(dup)}")
        if codebook is not None:  # the user's own classification: its titles are the states
            df, scheme = df.assign(occupation=_apply_codebook(df.occupation, codebook)), "titles"
        sch = Scheme(scheme)
        raw = df.occupation.map(lambda v: "" if pd.isna(v) else str(v))
        titles = raw.map(sch.to_title)
        bad = titles.isna()
        if bad.any():
            codes = sorted(raw[bad].str.replace(UNKNOWN_CODE, "").unique())[:10]
            known = "not in the codebook" if codebook is not None else f"unknown to scheme '{scheme}'"
            msg = (f"{source}: {int(bad.sum())} occupation value(s) {known} "
                   f"(e.g. {', '.join(codes)}) in {_rows(bad)}")
            if unknown == "error":
                raise DataError(msg + unknown_hint)
            log.warning(msg + "; counted as Missing")
        out["state"] = titles.fillna(MISSING)
        for c in OPTIONAL:
            if c not in df.columns:
                continue
            if c == "birth_year":
                out[c] = _integer_column(df[c], c, source, allow_missing=True, century=century)
            elif c == "weight":
                w = pd.to_numeric(df[c], errors="coerce")
                if (w < 0).any() or (w.isna() & df[c].notna()).any():
                    raise DataError(f"{source}: weight must be a non-negative number in {_rows((w < 0) | (w.isna() & df[c].notna()))}")
                out[c] = w.astype("float64")
            elif c == "enrolled":
                out[c] = df[c].map(_truthy)
            else:
                out[c] = df[c].astype("string").str.strip().replace("", pd.NA)
        if min_age is not None and "birth_year" in out:
            out = out[(out.year - out.birth_year) >= min_age]
        out = _trim_missing(out.sort_values(["person_id", "year"]).reset_index(drop=True))
        if out.empty:
            raise DataError(f"{source}: no person has an observed (non-Missing) state")
        return cls(out, sch, source, int(bad.sum()))

    # -- views ---------------------------------------------------------------------------------
    @property
    def covariates(self) -> list[str]:
        return [c for c in OPTIONAL if c in self.frame.columns]

    @property
    def n_persons(self) -> int:
        return int(self.frame.person_id.nunique())

    def person(self, person_id) -> pd.DataFrame:
        rows = self.frame[self.frame.person_id.astype(str) == str(person_id)]
        if rows.empty:
            raise DataError(f"{self.source}: no person with person_id {person_id}")
        return rows

    def __repr__(self) -> str:
        return (f"Panel({self.source!r}: {self.n_persons} persons, {len(self.frame)} person-years, "
                f"{len(self.states)} states, scheme={self.scheme.name})")


def _all_int(s: pd.Series) -> bool:
    """Integer ids that fit in int64 exactly (longer ids, like 20-digit ones, stay strings)."""
    v = pd.to_numeric(s, errors="coerce")
    return bool(v.notna().all() and (v == v.round()).all() and (v.abs() < 2**53).all())


YEARS = (1900, 2100)  # plausible calendar years (of events and of births)


def _integer_column(s: pd.Series, name: str, source: str, allow_missing: bool = False,
                    century: int | None = None) -> pd.Series:
    """Integers; calendar years within YEARS, two-digit ones read in `century` when it is given."""
    v = pd.to_numeric(s, errors="coerce")
    bad = (v.isna() & (s.notna() if allow_missing else True)) | (v.notna() & (v != v.round()))
    if bad.any():
        raise DataError(f"{source}: {name} must be an integer in {_rows(bad)} (e.g. {s[bad].iloc[0]!r})")
    lo, hi = YEARS
    if century is not None:
        v = v.where(~v.between(0, 99), v + century)
    out = v.notna() & ((v < lo) | (v > hi))
    if out.any():
        hint = (" (two-digit years? write them in full, e.g. 1970, or pass --century 1900)"
                if (v[out].abs() < 100).all() else "")
        raise DataError(f"{source}: {name} must be a calendar year between {lo} and {hi} in {_rows(out)} "
                        f"(e.g. {s[out].iloc[0]!r}){hint}")
    return v.astype("Int64")


def _apply_codebook(values: pd.Series, codebook: dict[str, str]) -> pd.Series:
    def one(v):
        if pd.isna(v) or str(v).strip() in ("", MISSING, *SPECIAL_STATES):
            return v
        s = str(v).strip()
        return codebook.get(_norm_code(s), UNKNOWN_CODE + s)

    return values.map(one)


def _truthy(v) -> bool | None:
    if pd.isna(v):
        return None
    s = str(v).strip().lower()
    return s in ("1", "1.0", "true", "yes", "y", "enrolled", "t")


def _trim_missing(f: pd.DataFrame) -> pd.DataFrame:
    """Drop each person's leading and trailing Missing years (DESIGN.md)."""
    obs = f.state.ne(MISSING)
    g = obs.groupby(f.person_id)
    seen_before = g.cummax()
    seen_after = obs[::-1].groupby(f.person_id[::-1]).cummax()[::-1]
    return f[seen_before & seen_after].reset_index(drop=True)


def read_table(path: str | Path) -> pd.DataFrame:
    """Read CSV (optionally gzipped), TSV, Parquet or Stata; a corrupt file is a DataError."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such file")
    if p.is_dir():
        raise DataError(f"{p}: is a folder, expected a CSV, Parquet or Stata (.dta) file")
    name = p.name.lower()
    try:
        if name.endswith((".parquet", ".pq")):
            return pd.read_parquet(p)
        if name.endswith(".dta"):
            return pd.read_stata(p, convert_categoricals=True)
        if name.endswith((".csv", ".csv.gz", ".txt", ".tsv", ".tsv.gz")):
            sep = "\t" if ".tsv" in name else ","
            return pd.read_csv(p, sep=sep, dtype=str, keep_default_na=True)
    except Exception as e:  # the readers raise many types; all mean "cannot read this file"
        raise DataError(f"{p}: cannot read as {p.suffix or 'table'} ({type(e).__name__}: {str(e)[:200]})") from None
    raise DataError(f"{p}: unsupported file type; use .csv, .csv.gz, .tsv, .parquet or .dta")
