"""Load the embedded panels by name, or a user's CSV/Parquet/Stata file by path."""
from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import pandas as pd

from laborllm.data.panel import Panel, read_table, same_people, same_source
from laborllm.data.schemes import read_codebook
from laborllm.errors import DataError, UserError


@dataclass(frozen=True)
class Embedded:
    file: str
    scheme: str
    description: str


EMBEDDED = {
    "nlsy97": Embedded("nlsy97.parquet", "occ1990dd",
                       "NLSY97 1997-2022, main job per year, occ1990dd (8,983 people from age 18)"),
    "nlswork": Embedded("nlswork.parquet", "titles", "NLS Young Women 1968-88, 13 1970-Census major groups"),
    "nlsy79-males": Embedded("nlsy79_males.parquet", "titles",
                             "Vella-Verbeek NLSY young men 1980-87, 9 occupation groups"),
}
DEFAULT_DATA = "nlsy97"


def parse_columns(spec: str | None) -> dict[str, str] | None:
    """'pid=person_id,yr=year' -> {'pid': 'person_id', 'yr': 'year'}."""
    if not spec:
        return None
    pairs = [p.split("=", 1) for p in spec.split(",") if p.strip()]
    if any(len(p) != 2 or not p[0].strip() or not p[1].strip() for p in pairs):
        raise DataError(f"--columns must look like old=new,old2=new2; got {spec!r}")
    return {a.strip(): b.strip() for a, b in pairs}


def load_panel(
    data: str | Path | pd.DataFrame = DEFAULT_DATA,
    *,
    columns: dict[str, str] | str | None = None,
    scheme: str | None = None,
    unknown: str = "error",
    codebook: str | Path | None = None,
    century: int | None = None,
) -> Panel:
    """One call for every panel: an embedded name (``nlsy97``, ``nlswork``, ``nlsy79-males``), a
    path to a CSV/Parquet/Stata file, or a DataFrame with the canonical columns. `codebook`: a CSV of
    code,title for a panel in its own occupation coding (its titles become the states). `century`:
    read two-digit years (0-99, of events and births) in it, e.g. 1900 reads 70 as 1970."""
    if isinstance(columns, str):
        columns = parse_columns(columns)
    book = read_codebook(codebook) if codebook else None
    if book is not None and scheme not in (None, "titles"):
        raise DataError(f"--codebook gives the titles itself; it cannot be combined with --scheme {scheme}")
    if isinstance(data, pd.DataFrame):
        return Panel.from_frame(data, columns=columns, scheme=scheme or "occ1990dd", unknown=unknown,
                                codebook=book, century=century)
    name = str(data)
    if name in EMBEDDED:
        e = EMBEDDED[name]
        with (resources.files("laborllm.data") / "assets" / e.file).open("rb") as f:
            df = pd.read_parquet(f)
        return Panel.from_frame(df, source=name, columns=columns, scheme=scheme or e.scheme, unknown=unknown,
                                codebook=book, century=century)
    if not Path(name).exists() and "/" not in name and "." not in name:
        raise DataError(f"unknown data set {name!r}: use one of {', '.join(EMBEDDED)} or a file path")
    return Panel.from_frame(read_table(name), source=name, columns=columns, scheme=scheme or "occ1990dd",
                            unknown=unknown, codebook=book, century=century)


def load_other_panel(setting: str, name: str, target: Panel) -> Panel:
    """A panel a model also trains on (pooled, pretrained on), named by `setting`: refused if it is
    the target panel itself, whose validation and test people would then enter training."""
    try:
        other = None if same_source(name, target) else load_panel(name)
    except UserError as e:
        raise UserError(f"{setting} {name!r}: {e}") from None
    if other is None or same_people(other, target):
        raise UserError(f"{setting} {name!r} is the target panel itself: its validation and test people "
                        "would enter training")
    return other
