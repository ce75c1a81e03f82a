"""The panel type: one row per person and year, validated, with occupations turned into states.

Canonical columns: ``person_id``, ``year``, ``occupation`` (required) and optionally ``gender``,
``race``, ``birth_year``, ``education``, ``region``, ``enrolled``, ``weight``. Any other names are
mapped with ``columns={"their_name": "canonical_name"}``.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from laborllm.data.schemes import MISSING, SPECIAL_STATES, UNKNOWN_CODE, Scheme, norm_code
from laborllm.errors import DataError

log = logging.getLogger(__name__)

REQUIRED = ("person_id", "year", "occupation")
OPTIONAL = ("gender", "race", "birth_year", "education", "region", "enrolled", "weight")
CATEGORICAL = ("education", "gender", "race", "region")  # the covariates models read as categories, in this order
PERSON = ("gender", "race", "birth_year", "education", "region")  # what a history may state of its person
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
        unknown_hint: str = "; pass --unknown missing to treat them as Missing",
        columns_hint: str = "; map yours with --columns their_name=canonical_name",
        codebook: dict[str, str] | None = None,
        century: int | None = None,
    ) -> "Panel":
        """Validate a raw table and build the panel; every failure raises DataError naming rows."""
        if unknown not in UNKNOWN_POLICIES:
            raise DataError(f"unknown-code policy must be one of {UNKNOWN_POLICIES}, not {unknown!r}")
        if century is not None and (isinstance(century, bool) or not isinstance(century, int) or century % 100):
            raise DataError(f"--century must be a whole century such as 1900 or 2000, not {century!r}")
        df = _canonical_columns(df.reset_index(drop=True), columns, source, columns_hint)
        out = _person_years(df, source, century)
        if codebook is not None:  # the user's own classification: its titles are the states
            df, scheme = df.assign(occupation=_apply_codebook(df.occupation, codebook)), "titles"
        sch = Scheme(scheme)
        out["state"], n_unknown = _states(df.occupation, sch, source, unknown, unknown_hint, codebook is not None)
        _covariates(df, out, source, century)
        out = _trim_missing(out.sort_values(["person_id", "year"]).reset_index(drop=True))
        if out.empty:
            raise DataError(f"{source}: no person has an observed (non-Missing) state")
        return cls(out, sch, source, n_unknown)

    # -- views ---------------------------------------------------------------------------------
    def fingerprint(self) -> str:
        """The panel's content (every column, the states, the scheme): equal panels, equal prints,
        whatever file or path they came from."""
        h = hashlib.sha256(f"{self.scheme.name}\x1f{chr(31).join(self.states)}".encode())
        f = self.frame.assign(person_id=self.frame.person_id.astype(str))
        h.update(pd.util.hash_pandas_object(f.astype({c: "object" for c in f.columns if str(f[c].dtype) == "string"}),
                                            index=False).values.tobytes())
        h.update("\x1f".join(map(str, f.columns)).encode())
        return h.hexdigest()[:16]

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



def _canonical_columns(df: pd.DataFrame, columns: dict | None, source: str, hint: str) -> pd.DataFrame:
    """The table with the user's column names mapped onto ours and the required ones present."""
    if columns:
        targets = [b for b in columns.values() if b not in (*REQUIRED, *OPTIONAL)]
        if targets:  # a typo (sex=gendr) would otherwise drop the column silently
            raise DataError(f"{source}: --columns maps onto {', '.join(map(repr, targets))}, which laborllm does "
                            f"not know; the targets are {', '.join((*REQUIRED, *OPTIONAL))}")
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
        found = ", ".join(map(str, df.columns))
        sep = next((n for c, n in ((";", "semicolon"), ("\t", "tab"), ("|", "bar")) if len(df.columns) == 1
                    and c in str(df.columns[0])), None)
        hint = f"; the file looks {sep}-separated: laborllm reads comma-separated CSV (tabs: name it .tsv)" if sep else hint
        near = {c: str(h) for c in missing for h in df.columns if str(h) != c and str(h).strip().lower() == c}
        if near:  # "person_id " or "Person_ID": the name is there, written otherwise
            hint += "; " + ", ".join(f"column {h!r} is {c!r} with {'spaces' if h.strip() != h else 'other case'}"
                                     for c, h in near.items()) + " (fix the header, or --columns)"
        raise DataError(f"{source}: missing required column(s) {', '.join(missing)} (found: {found}){hint}")
    if df.empty:
        raise DataError(f"{source}: the panel has no rows")
    return df


def _person_years(df: pd.DataFrame, source: str, century: int | None) -> pd.DataFrame:
    """person_id and year, checked: no empty id, whole years, no person-year twice."""
    out = pd.DataFrame(index=df.index)
    pid = df.person_id
    if pid.isna().any():
        raise DataError(f"{source}: person_id is empty in {_rows(pid.isna())}")
    out["person_id"] = pd.to_numeric(pid).astype("int64") if _all_int(pid) else pid.astype(str)
    out["year"] = _integer_column(df.year, "year", source, century=century).astype("int64")
    if century is not None:  # 97, 98, 99, 00 in one history: the years wrapped around the century
        back = out.groupby("person_id", sort=False).year.diff() <= 0
        if back.any():
            raise DataError(f"{source}: with --century {century}, years go backwards within a person in "
                            f"{_rows(back)} (e.g. {_shown(df.year[back].iloc[0])} after a later year): two-digit years "
                            "that cross a century cannot be read; write the years in full")
    dup = out.duplicated(["person_id", "year"], keep=False)
    if dup.any():
        raise DataError(f"{source}: duplicate person-years (person_id, year) in {_rows(dup)}")
    return out


def _states(occupation: pd.Series, sch: Scheme, source: str, unknown: str, hint: str, codebook: bool):
    """Each row's state title, and how many values the scheme did not know (an error, or Missing)."""
    raw = occupation.map(lambda v: "" if pd.isna(v) else str(v))
    titles = raw.map(sch.to_title)
    bad = titles.isna()
    if bad.any():
        codes = sorted(raw[bad].str.replace(UNKNOWN_CODE, "").unique())[:10]
        known = "not in the codebook" if codebook else f"unknown to scheme '{sch.name}'"
        msg = f"{source}: {int(bad.sum())} occupation value(s) {known} (e.g. {', '.join(codes)}) in {_rows(bad)}"
        if unknown == "error":
            raise DataError(msg + hint)
        log.warning(msg + "; counted as Missing")
    return titles.fillna(MISSING), int(bad.sum())


def _covariates(df: pd.DataFrame, out: pd.DataFrame, source: str, century: int | None) -> None:
    """The optional columns the file has, checked and typed, added to `out`."""
    for c in OPTIONAL:
        if c not in df.columns:
            continue
        if c == "birth_year":
            out[c] = _integer_column(df[c], c, source, allow_missing=True, century=century)
            late = out[c].notna() & (out[c] > out.year)
            if late.any():  # born after a year of the history: a wrong century or a wrong column
                raise DataError(f"{source}: birth_year is after the year of the row in {_rows(late)} "
                                f"(e.g. born {int(out[c][late].iloc[0])}, year {int(out.year[late].iloc[0])})")
        elif c == "weight":
            w = pd.to_numeric(df[c], errors="coerce")
            bad = (w < 0) | (w.isna() & df[c].notna()) | np.isinf(w)
            if bad.any():
                raise DataError(f"{source}: weight must be a non-negative finite number in {_rows(bad)}")
            out[c] = w.astype("float64")
        elif c == "enrolled":
            out[c] = df[c].map(_truthy)
            odd = df[c].notna() & out[c].isna()
            if odd.any():  # "maybe" read as not enrolled would turn a student into a non-worker
                raise DataError(f"{source}: enrolled must be yes/no, true/false or 1/0; got "
                                f"{str(df[c][odd].iloc[0])!r} in {_rows(odd)}")
        else:
            out[c] = df[c].astype("string").str.strip().replace("", pd.NA)

def _where(source: str):
    q = Path(str(source))
    return q.resolve() if q.exists() else str(source)


def same_source(name: str, panel: Panel) -> bool:
    """Whether the panel `name` (an embedded name or a path, however written) is where `panel` came from."""
    return _where(name) == _where(panel.source)


def same_people(a: Panel, b: Panel) -> bool:
    """Whether two loaded panels are one survey: the same file (however its path was written) or
    the same person-years (however its occupations were coded or its columns named)."""
    if same_source(a.source, b):
        return True
    keys = lambda p: pd.util.hash_pandas_object(  # noqa: E731
        p.frame[["person_id", "year"]].assign(person_id=p.frame.person_id.astype(str)), index=False)
    return len(a.frame) == len(b.frame) and bool((keys(a).sort_values().values == keys(b).sort_values().values).all())


def _all_int(s: pd.Series) -> bool:
    """Ids that are integers written plainly ("17", not "017", "17.0" or "+17") and fit in int64
    exactly: only those are read as numbers, so "01" and "1" stay two people; the rest stay text."""
    if pd.api.types.is_integer_dtype(s):
        return True
    v = pd.to_numeric(s, errors="coerce")
    if not (v.notna().all() and (v == v.round()).all() and (v.abs() < 2**53).all()):
        return False
    return bool((s.astype(str).str.strip() == v.astype("int64").astype(str)).all())


YEARS = (1900, 2100)  # plausible calendar years (of events and of births)


def _integer_column(s: pd.Series, name: str, source: str, allow_missing: bool = False,
                    century: int | None = None) -> pd.Series:
    """Integers; calendar years within YEARS, two-digit ones read in `century` when it is given."""
    v = pd.to_numeric(s, errors="coerce")
    bad = (v.isna() & (s.notna() if allow_missing else True)) | (v.notna() & (v != v.round()))
    if bad.any():
        raise DataError(f"{source}: {name} must be an integer in {_rows(bad)} (e.g. {_shown(s[bad].iloc[0])})")
    lo, hi = YEARS
    if century is not None:
        v = v.where(~v.between(0, 99), v + century)
    out = v.notna() & ((v < lo) | (v > hi))
    if out.any():
        hint = (" (two-digit years? write them in full, e.g. 1970, or pass --century 1900)"
                if (v[out].abs() < 100).all() else "")
        raise DataError(f"{source}: {name} must be a calendar year between {lo} and {hi} in {_rows(out)} "
                        f"(e.g. {_shown(s[out].iloc[0])}){hint}")
    return v.astype("Int64")


def _shown(value) -> str:
    """A value as the user wrote it: text quoted, numbers plain (never numpy's np.int64(3000))."""
    if isinstance(value, str):
        return repr(value)
    return repr(value.item() if hasattr(value, "item") else value)


def _apply_codebook(values: pd.Series, codebook: dict[str, str]) -> pd.Series:
    def one(v):
        if pd.isna(v) or str(v).strip() in ("", MISSING, *SPECIAL_STATES):
            return v
        s = str(v).strip()
        return codebook.get(norm_code(s), UNKNOWN_CODE + s)

    return values.map(one)


def _truthy(v) -> bool | None:
    """True, False, or None for a blank or a value that says neither."""
    if pd.isna(v):
        return None
    s = str(v).strip().lower()
    if s in ("1", "1.0", "true", "yes", "y", "enrolled", "t"):
        return True
    return False if s in ("0", "0.0", "false", "no", "n", "not enrolled", "f") else None


def _trim_missing(f: pd.DataFrame) -> pd.DataFrame:
    """Drop each person's leading and trailing Missing years (DESIGN.md)."""
    obs = f.state.ne(MISSING)
    g = obs.groupby(f.person_id)
    seen_before = g.cummax()
    seen_after = obs[::-1].groupby(f.person_id[::-1]).cummax()[::-1]
    return f[seen_before & seen_after].reset_index(drop=True)


def read_table(path: str | Path, types: str = ".csv, .csv.gz, .tsv, .parquet or .dta") -> pd.DataFrame:
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
    except UnicodeDecodeError:
        raise DataError(f"{p}: {_not_utf8(p)}; save the file as UTF-8") from None
    except Exception as e:  # the readers raise many types; all mean "cannot read this file"
        raise DataError(f"{p}: cannot read as {p.suffix or 'table'} ({type(e).__name__}: {str(e)[:200]})") from None
    raise DataError(f"{p}: unsupported file type; use {types}")


def _not_utf8(p: Path) -> str:
    """Which line of a text file is not UTF-8 (line 1 is the header)."""
    import gzip

    opener = gzip.open if p.name.lower().endswith(".gz") else open
    with opener(p, "rb") as f:
        for n, line in enumerate(f, 1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as e:
                return f"line {n} is not UTF-8 (byte 0x{line[e.start]:02x} at character {e.start + 1})"
    return "the file is not UTF-8"
