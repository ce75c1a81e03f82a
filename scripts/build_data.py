"""Build the data shipped inside the package from the raw files in ../shared/data.

Writes to laborllm/data/assets/:
- occ1990dd_titles.csv         occ1990dd code -> English title (Webb 2020 / Autor-Dorn 2013)
- census_to_occ1990dd.csv      Census 2002/2010 occupation code -> occ1990dd, with how it was mapped
- nlsy97.parquet               the NLSY97 person-year extract in the canonical panel columns
- nlswork.parquet              NLS Young Women 1968-88, 1-digit occupation groups
- nlsy79_males.parquet         Vella-Verbeek NLSY young men 1980-87, 1-digit occupation groups

Run: python scripts/build_data.py [--shared ../shared/data]
The definitions are documented in laborllm/data/assets/README.md.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

ASSETS = Path(__file__).resolve().parents[1] / "laborllm" / "data" / "assets"


def _code(s) -> str:
    """Census codes as 4-digit strings ('10' and '0010' are the same code)."""
    return str(int(float(s))).zfill(4)


# the source table's typos: the LLM reads these titles
TITLE_TYPOS = {"Miscellanious": "Miscellaneous", "Childcareworkers": "Child care workers", "applicance": "appliance",
               "Furnance": "Furnace", "Libraryassistants": "Library assistants", "astronomists": "astronomers",
               "carpeters": "carpenters", "equipement": "equipment", "exluding": "excluding", "machne": "machine",
               "Surveryors": "Surveyors", "Writersandauthors": "Writers and authors"}


def build_titles(shared: Path) -> pd.DataFrame:
    t = pd.read_csv(shared / "occ1990dd-titles" / "exposure_by_occ1990dd_lswt2010.csv")
    title = (t.occ1990dd_title.str.strip()
             .str.replace(r"^\d+=", "", regex=True)  # "647=Jewelers ...": a raw-table artifact
             .replace(TITLE_TYPOS, regex=True))
    return pd.DataFrame({"occ1990dd": t.occ1990dd.astype(int), "title": title})


def build_crosswalk(shared: Path) -> pd.DataFrame:
    """Census 2010 and 2002 codes -> occ1990dd.

    1. 'onet': the Census 2010 (ACS) code appears in Webb's O*NET/ACS -> occ1990dd table.
    2. '2002xwalk': a 2002 code that the Census 2002->2010 crosswalk sends to mapped 2010 codes
       (the modal occ1990dd when it splits).
    3. 'soc-group': a residual code ("All other" categories have no O*NET entry) takes the modal
       occ1990dd of the mapped codes in the same SOC broad group, else the same SOC minor group.
    """
    onet = pd.read_csv(shared / "occ1990dd-titles" / "onet_to_occ1990dd.csv")
    onet = onet.dropna(subset=["occ", "occ1990dd"])
    direct = onet.groupby(onet.occ.map(_code)).occ1990dd.agg(lambda s: int(s.mode().iloc[0]))
    xl = shared / "occ-code-lists" / "census2010-occ-codes-with-crosswalk-from-2002-2011.xls"
    xw = pd.read_excel(xl, "2002to2010xwalk", header=None, skiprows=4, dtype=str).iloc[:, [0, 1, 3, 4]]
    xw.columns = ["soc2002", "c2002", "soc2010", "c2010"]
    xw = xw.dropna(subset=["c2002", "c2010"])
    xw = xw[xw.c2002.str.strip().str.fullmatch(r"\d+") & xw.c2010.str.strip().str.fullmatch(r"\d+")]
    xw["c2002"], xw["c2010"] = xw.c2002.map(_code), xw.c2010.map(_code)
    soc10 = pd.read_csv(shared / "occ-code-lists" / "census2010_soc2010_xw.csv", dtype=str)
    soc_of = dict(zip(soc10.census2010.map(_code), soc10.soc2010.str.strip()))
    for c2002, soc in zip(xw.c2002, xw.soc2002):
        soc_of.setdefault(c2002, str(soc).strip())

    rows = {c: (o, "onet") for c, o in direct.items()}
    for c2002, grp in xw.groupby("c2002"):
        if c2002 in rows:
            continue
        hits = [rows[c][0] for c in grp.c2010 if c in rows]
        if hits:
            rows[c2002] = (int(pd.Series(hits).mode().iloc[0]), "2002xwalk")
    all_codes = set(soc_of) | set(xw.c2010)
    mapped_soc = pd.DataFrame(
        [(soc_of.get(c, ""), o) for c, (o, how) in rows.items() if how == "onet"], columns=["soc", "occ"]
    )
    for c in sorted(all_codes - set(rows)):
        soc = soc_of.get(c, "")
        for width in (6, 4):  # SOC broad group "33-101", then minor group "33-1"
            same = mapped_soc[mapped_soc.soc.str[:width] == soc[:width]] if len(soc) >= width else []
            if len(same):
                rows[c] = (int(same.occ.mode().iloc[0]), "soc-group")
                break
    out = pd.DataFrame([(c, o, how) for c, (o, how) in rows.items()], columns=["census", "occ1990dd", "how"])
    return out.sort_values("census").reset_index(drop=True)


EDUCATION = [  # (date column, label), lowest first
    ("date_HS", "High school"),
    ("date_AA", "Associate"),
    ("date_BA", "Bachelor's"),
    ("date_MA", "Graduate"),
    ("date_PHD", "Graduate"),
    ("date_PROF", "Graduate"),
]


def build_nlsy97(shared: Path, xwalk: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """The reference state definition of DESIGN.md, one row per person-year from age 18."""
    d = pd.read_csv(
        shared / "nlsy97-mainjob" / "nlsy97_long_year.csv.gz",
        dtype={"job_occ": str, "job_id": str, "job_ind": str},
    )
    d = d[d.bdate.notna() & (d.year - d.bdate >= 18)].copy()
    occ = d.job_occ.fillna("").str.strip()
    to_dd = dict(zip(xwalk.census, xwalk.occ1990dd))
    code = occ.where(~occ.str.fullmatch(r"\d+"), occ.map(lambda s: _code(s) if s.isdigit() else s))
    employed = d.job_full.isin(["Full-time", "Part-time"])
    enrolled = d.enroll.eq("Enrolled")
    mapped = code.map(to_dd)
    state = np.select(
        [
            d.job_n_skip_missing >= 26,
            ~employed & enrolled,
            ~employed,
            code.eq("9840"),
            mapped.notna(),
        ],
        ["Missing", "Student", "Not working", "Military", mapped.astype("Int64").astype(str)],
        default="Missing",  # uncodeable (9990, -4, blank) or unmappable codes
    )
    # every employed, observed person-year lands in exactly one of these counts (assets README)
    seen = employed & (d.job_n_skip_missing < 26)
    coded = seen & ~code.eq("9840")
    unmapped = coded & mapped.isna()
    stats = {
        "employed_person_years": int(seen.sum()),
        "mapped_by": xwalk.set_index("census").how.reindex(code[coded & mapped.notna()]).value_counts().to_dict(),
        "military": int((seen & code.eq("9840")).sum()),
        "no_code": int((unmapped & code.eq("")).sum()),
        "uncodeable": int((unmapped & code.ne("") & (~code.str.fullmatch(r"\d{4}") | code.eq("9990"))).sum()),
        "unmapped_codes": code[unmapped & code.str.fullmatch(r"\d{4}") & ~code.eq("9990")].value_counts().to_dict(),
    }
    edu = pd.Series("Less than high school", index=d.index)
    for col, label in EDUCATION:
        edu = edu.mask(d[col].notna() & (d[col] <= d.year), label)
    region = d.census_region.where(d.census_region.isin(["Northeast", "North Central", "South", "West"]))
    out = pd.DataFrame(
        {
            "person_id": d.id.astype("int64"),
            "year": d.year.astype("int64"),
            "occupation": pd.Series(state, index=d.index),
            "gender": d.gender.map({"Men": "man", "Women": "woman"}),
            "race": d.race.map(
                {
                    "White": "White",
                    "African American": "Black",
                    "Hispanic": "Hispanic",
                    "Asian or Pacific Islander": "Asian or Pacific Islander",
                    "Other": "Other race",
                }
            ),
            "birth_year": d.bdate.astype("int64"),
            "education": edu,
            "region": region,
            "enrolled": enrolled,
            "weight": d.weight.astype("float64"),
        }
    )
    return out.reset_index(drop=True), stats


# nlswork's occ_code, labelled by what the data show rather than by Stata's value labels, which are
# shifted (see the assets README: industry, schooling, hours and wage of each code). Stata's label in
# brackets where it differs.
NLS_1970_GROUPS = {
    1: "Professional and technical workers",
    2: "Managers and administrators",
    3: "Clerical workers",  # [Sales]: 38.6% of person-years, spread over every industry
    4: "Sales workers",  # [Clerical]: 76% in wholesale and retail trade
    5: "Craftsmen",
    6: "Operatives",
    7: "Private household workers",  # [Transport]: 98% in personal services, the lowest wage and hours
    8: "Service workers",  # [Laborers]: hospitals, eating places, personal services
    9: "Farmers and farm managers",
    10: "Farm laborers",
    11: "Laborers",  # [Service]: half in manufacturing, 8% in construction
    12: "Other occupations",  # [Household workers]: 7 person-years, all in public administration
    13: "Teachers",  # [Other]: 90% college graduates, 98% in professional services (probable, not certain)
}


def build_nlswork(shared: Path) -> pd.DataFrame:
    d = pd.read_csv(shared / "nls-young-women-nlswork" / "nlswork.csv")
    occ = d.occ_code.map(NLS_1970_GROUPS).fillna("Missing")
    return pd.DataFrame(
        {
            "person_id": d.idcode.astype("int64"),
            "year": (1900 + d.year).astype("int64"),
            "occupation": occ,
            "gender": "woman",
            "race": d.race.map({1: "White", 2: "Black", 3: "Other race"}),
            "birth_year": (1900 + d.birth_yr).astype("int64"),
            "education": pd.cut(d.grade, [-1, 11, 12, 15, 16, 99], labels=[
                "Less than high school", "High school", "Some college", "Bachelor's", "Graduate"]).astype(str)
            .replace("nan", np.nan),
            "region": np.where(d.south == 1, "South", "Non-South"),
        }
    )


def build_males(shared: Path) -> pd.DataFrame:
    d = pd.read_csv(shared / "nlsy79-males-vella-verbeek" / "Males.csv")
    occ = d.occupation.str.replace("_and_kindred", "").str.replace("_", " ").str.replace(", ", " and ")
    region = d.residence.replace({"north_east": "Northeast", "nothern_central": "North Central", "south": "South",
                                  "rural_area": "Rural"})
    return pd.DataFrame(
        {
            "person_id": d.nr.astype("int64"),
            "year": d.year.astype("int64"),
            "occupation": occ.fillna("Missing"),
            "gender": "man",
            "race": d.ethn.map({"black": "Black", "hisp": "Hispanic", "other": "Other race"}),
            "birth_year": (d.year - 6 - d.school - d.exper - 1).astype("int64"),
            "education": np.where(d.school >= 16, "Bachelor's", np.where(d.school >= 12, "High school",
                                                                         "Less than high school")),
            "region": region,
        }
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    args = ap.parse_args()
    ASSETS.mkdir(parents=True, exist_ok=True)
    titles = build_titles(args.shared)
    titles.to_csv(ASSETS / "occ1990dd_titles.csv", index=False)
    xwalk = build_crosswalk(args.shared)
    xwalk.to_csv(ASSETS / "census_to_occ1990dd.csv", index=False)
    panel, stats = build_nlsy97(args.shared, xwalk)
    panel.to_parquet(ASSETS / "nlsy97.parquet", index=False, compression="zstd")
    build_nlswork(args.shared).to_parquet(ASSETS / "nlswork.parquet", index=False, compression="zstd")
    build_males(args.shared).to_parquet(ASSETS / "nlsy79_males.parquet", index=False, compression="zstd")
    print(f"crosswalk: {len(xwalk)} Census codes, by method {xwalk.how.value_counts().to_dict()}")
    print(f"nlsy97: {len(panel)} person-years, {panel.person_id.nunique()} persons; {stats}")


if __name__ == "__main__":
    main()
