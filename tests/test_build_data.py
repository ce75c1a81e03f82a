"""The state rules of scripts/build_data.py (assets README), on a hand-made raw extract: one row per
rule, so a rule that is dropped or reordered changes exactly one expected state."""
import importlib.util
from pathlib import Path

import pandas as pd
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "build_data.py"


@pytest.fixture(scope="module")
def build():
    spec = importlib.util.spec_from_file_location("build_data", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# (job_occ, job_full, enroll, weeks unobserved, expected state); every row a person born 1980 in 2000
CASES = [
    ("4720", "Full-time", "Not enrolled", 0, "276"),  # Census 2010 cashiers -> occ1990dd 276
    ("0430", "Part-time", "Enrolled", 0, "22"),  # working students keep their job; '0430' == '430'
    ("4720", "Full-time", "Not enrolled", 26, "Missing"),  # half the year unobserved
    ("", "Not employed", "Enrolled", 0, "Student"),
    ("", "Not employed", "Not enrolled", 0, "Not working"),
    ("4720", "Not employed", "Not enrolled", 0, "Not working"),  # an old code without hours
    ("9840", "Full-time", "Not enrolled", 0, "Military"),
    ("9990", "Full-time", "Not enrolled", 0, "Missing"),  # uncodeable
    ("", "Full-time", "Not enrolled", 0, "Missing"),  # hours but no code
    ("6890", "Full-time", "Not enrolled", 0, "Missing"),  # no occ1990dd for this code
]


def test_nlsy97_state_rules(build, tmp_path):
    raw = pd.DataFrame([{"id": i, "year": 2000, "bdate": 1980, "job_occ": occ, "job_full": full, "enroll": enr,
                         "job_n_skip_missing": skip, "gender": "Women", "race": "Black", "census_region": "South",
                         "weight": 1.0, "date_HS": 1998, "date_AA": None, "date_BA": None, "date_MA": None,
                         "date_PHD": None, "date_PROF": None} for i, (occ, full, enr, skip, _) in enumerate(CASES)])
    raw = pd.concat([raw, raw.iloc[[0]].assign(id=99, year=1997)])  # under 18: dropped
    (tmp_path / "nlsy97-mainjob").mkdir()
    raw.to_csv(tmp_path / "nlsy97-mainjob" / "nlsy97_long_year.csv.gz", index=False)
    xwalk = pd.DataFrame({"census": ["4720", "0430"], "occ1990dd": [276, 22], "how": ["onet", "onet"]})
    panel, stats = build.build_nlsy97(tmp_path, xwalk)
    assert panel.occupation.tolist() == [c[-1] for c in CASES]
    assert panel.education.eq("High school").all() and 99 not in set(panel.person_id)
    # every employed, observed person-year is counted once (the assets README's sums)
    assert stats == {"employed_person_years": 6, "mapped_by": {"onet": 2}, "military": 1, "no_code": 1,
                     "uncodeable": 1, "unmapped_codes": {"6890": 1}}


def test_title_typos_are_fixed(build):
    titles = pd.read_csv(Path(build.ASSETS) / "occ1990dd_titles.csv").title
    assert not titles.str.contains("Miscellanious|Childcareworkers|^\\d+=", regex=True).any()
    assert titles.str.contains("Jewelers").sum() == 1
