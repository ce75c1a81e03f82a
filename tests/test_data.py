import json

import pandas as pd
import pytest

import laborllm as ll
from laborllm.cli import app
from laborllm.data.schemes import Scheme
from laborllm.errors import DataError, UserError


def test_embedded_nlsy97_matches_reference_definition(nlsy97):
    p = nlsy97.panel
    assert len(p.states) == 334
    test = nlsy97.test
    assert 24_000 <= len(test) <= 25_600  # DESIGN.md: about 24,800 test events
    assert {"Student", "Not working", "Military"} <= set(p.states)
    assert "Missing" not in p.states
    # no event is a person's first kept year, none targets Missing
    f = nlsy97.frame
    assert (f.pos > 0).all() and (f.target >= 0).all()
    # people never straddle splits
    assert f.groupby("person_id").split.nunique().max() == 1
    # ages start at 18 and leading/trailing Missing are trimmed
    assert (p.frame.year - p.frame.birth_year).min() == 18
    firsts = p.frame.groupby("person_id").state.first()
    lasts = p.frame.groupby("person_id").state.last()
    assert (firsts != "Missing").all() and (lasts != "Missing").all()


def test_split_is_deterministic_and_70_15_15(nlsy97):
    again = ll.make_events(nlsy97.panel, seed=0)
    assert again.fingerprint() == nlsy97.fingerprint()
    other = ll.make_events(nlsy97.panel, seed=1)
    assert other.fingerprint() != nlsy97.fingerprint()
    share = nlsy97.frame.drop_duplicates("person_id").split.value_counts(normalize=True)
    assert share["train"] == pytest.approx(0.70, abs=0.01) and share["test"] == pytest.approx(0.15, abs=0.01)


def test_education_varies_over_time(nlsy97):
    f = nlsy97.panel.frame
    per_person = f.groupby("person_id").education.nunique()
    assert (per_person > 1).mean() > 0.3
    ba = f[f.education == "Bachelor's"]
    assert (ba.year - ba.birth_year).min() >= 18


def test_coarse_panels_load():
    w = ll.load_panel("nlswork")
    assert len(w.states) == 13 and w.n_persons > 4000 and w.frame.year.min() == 1968
    m = ll.load_panel("nlsy79-males")
    assert len(m.states) == 9 and m.n_persons == 545
    ev = ll.make_events(m)
    assert len(ev) == 545 * 7  # balanced panel, first year never an event


def test_nlswork_labels_fit_the_data():
    """The labels follow the data, not Stata's shifted value labels: clerical work is the largest group
    of these young women, and the teachers are college graduates (assets README)."""
    f = ll.load_panel("nlswork").frame
    shares = f.state.value_counts(normalize=True)
    assert shares.index[0] == "Clerical workers" and 0.35 < shares.iloc[0] < 0.42
    assert shares["Sales workers"] < 0.06 and shares["Laborers"] < 0.01
    college = f.education.isin(["Bachelor's", "Graduate"]).groupby(f.state).mean()
    assert college["Teachers"] > 0.8 and college["Sales workers"] < 0.2


def test_schemes_and_crosswalk():
    assert Scheme("occ1990dd").to_title("276") == "Cashiers"
    assert Scheme("census").to_title("4720") == "Cashiers"  # Census 2010 cashiers
    assert Scheme("census").to_title("0430") == Scheme("census").to_title("430")
    assert Scheme("census").to_title("99999") is None
    assert Scheme("titles").to_title("Anything") == "Anything"
    for s in ("Student", "Not working", "Military", "Missing"):
        assert Scheme("occ1990dd").to_title(s) == s


def _csv(tmp_path, rows, name="p.csv"):
    path = tmp_path / name
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


ROWS = [
    {"pid": 1, "yr": 2001, "occ": "4720", "sex": "woman"},
    {"pid": 1, "yr": 2002, "occ": "4720", "sex": "woman"},
    {"pid": 1, "yr": 2003, "occ": "Not working", "sex": "woman"},
    {"pid": 2, "yr": 2001, "occ": "0430", "sex": "man"},
    {"pid": 2, "yr": 2002, "occ": "", "sex": "man"},
    {"pid": 2, "yr": 2003, "occ": "4720", "sex": "man"},
]


def test_user_csv_with_column_mapping(tmp_path):
    path = _csv(tmp_path, ROWS)
    p = ll.load_panel(path, columns="pid=person_id,yr=year,occ=occupation,sex=gender", scheme="census")
    assert len(p.frame) == 6 and p.frame.state.iloc[4] == "Missing"
    ev = ll.make_events(p)
    assert len(ev) == 3  # the Missing year in the middle stays in the history but is never a target


@pytest.mark.parametrize("fmt", ["parquet", "dta"])
def test_canonical_parquet_and_stata_load_as_is(tmp_path, fmt):
    df = pd.DataFrame(ROWS).rename(columns={"pid": "person_id", "yr": "year", "occ": "occupation", "sex": "gender"})
    path = tmp_path / f"p.{fmt}"
    df.to_parquet(path) if fmt == "parquet" else df.to_stata(path, write_index=False)
    p = ll.load_panel(path, scheme="census")
    assert p.n_persons == 2 and "gender" in p.covariates


@pytest.mark.parametrize(
    "rows, message",
    [
        ([{"person_id": 1, "occupation": "276"}], "missing required column(s) year"),
        ([{"person_id": 1, "year": 2001, "occupation": "276"}, {"person_id": 1, "year": 2001, "occupation": "276"}],
         "duplicate person-years (person_id, year) in rows 1, 2"),
        ([{"person_id": 1, "year": "2001.5", "occupation": "276"}], "year must be an integer in row 1"),
        ([{"person_id": 1, "year": 2001, "occupation": "276"}, {"person_id": 1, "year": 2002, "occupation": "77777"}],
         "unknown to scheme 'occ1990dd' (e.g. 77777) in row 2"),
        ([{"person_id": 1, "year": 2001, "occupation": "276", "enrolled": "yes"},
          {"person_id": 1, "year": 2002, "occupation": "276", "enrolled": "maybe"}],
         "enrolled must be yes/no, true/false or 1/0; got 'maybe' in row 2"),
        ([{"person_id ": 1, "year": 2001, "occupation": "276"}],
         "column 'person_id ' is 'person_id' with spaces"),
        ([{"person_id": 1, "year": 2001, "occupation": "276", "weight": "inf"}],
         "weight must be a non-negative finite number in row 1"),
    ],
)
def test_bad_panels_name_file_and_rows(tmp_path, rows, message):
    path = _csv(tmp_path, rows)
    with pytest.raises(DataError) as e:
        ll.load_panel(path)
    assert message in str(e.value) and str(path) in str(e.value)


def test_unknown_codes_can_become_missing(tmp_path, caplog):
    rows = [{"person_id": 1, "year": y, "occupation": c} for y, c in [(2001, "276"), (2002, "77777"), (2003, "276")]]
    p = ll.load_panel(_csv(tmp_path, rows), unknown="missing")
    assert p.n_unknown == 1 and p.frame.state.tolist() == ["Cashiers", "Missing", "Cashiers"]
    assert "counted as Missing" in caplog.text


def test_empty_and_corrupt_files(tmp_path):
    empty = tmp_path / "e.csv"
    empty.write_text("person_id,year,occupation\n")
    with pytest.raises(DataError, match="no rows"):
        ll.load_panel(empty)
    bad = tmp_path / "b.parquet"
    bad.write_bytes(b"not a parquet file at all")
    with pytest.raises(DataError, match="cannot read"):
        ll.load_panel(bad)


def test_cli_describe_json_and_bad_input(tmp_path):
    from typer.testing import CliRunner

    r = CliRunner().invoke(app, ["data", "describe", "--data", "nlsy79-males", "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert {"persons", "person_years", "states", "move_rate", "events"} <= set(d)
    assert d["persons"] == 545 and set(d["events"]) == {"train", "valid", "test"}
    assert 0.3 < d["move_rate"] < 0.6
    # bad input: a missing file and a mapping onto a column that is not there, each named
    r = CliRunner().invoke(app, ["data", "describe", "--data", str(tmp_path / "nope.csv")])
    assert isinstance(r.exception, UserError) and "nope.csv" in str(r.exception)
    r = CliRunner().invoke(app, ["data", "describe", "--data", "nlsy79-males", "--columns", "idcode=person_id"])
    assert isinstance(r.exception, UserError) and "idcode" in str(r.exception)


def test_cli_exit_status_2_on_bad_file(tmp_path):
    import subprocess
    import sys

    path = _csv(tmp_path, [{"person_id": 1, "occupation": "276"}])
    r = subprocess.run([sys.executable, "-m", "laborllm.cli", "data", "describe", "--data", str(path)],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert "missing required column(s) year" in r.stderr and "Traceback" not in r.stderr


def test_codebook_brings_a_users_own_coding(tmp_path):
    """NLS Young Women as the raw file has them (1-digit codes, the file's own column names) load
    with a codebook; its titles are the states; a code the codebook lacks is refused by name (or
    counted as Missing on request)."""
    import json

    import pytest
    from typer.testing import CliRunner

    import laborllm as ll
    from laborllm.cli import app
    from laborllm.errors import DataError

    nls = ll.load_panel("nlswork").frame
    nls = nls[nls.person_id.isin(sorted(nls.person_id.unique())[:300])]
    work = sorted(set(nls.state) - {"Student", "Not working", "Military", "Missing"})
    titles = {i + 1: t for i, t in enumerate(work)}
    code = {t: c for c, t in titles.items()}
    raw = nls.assign(occ_code=nls.state.map(code)).rename(columns={"person_id": "idcode", "birth_year": "birth_yr"})
    raw = raw[["idcode", "year", "occ_code", "birth_yr"]]
    two_digit = tmp_path / "nlswork-raw.csv"
    raw.assign(year=raw.year - 1900).to_csv(two_digit, index=False)
    full = tmp_path / "nlswork.csv"
    raw.to_csv(full, index=False)
    book = tmp_path / "codebook.csv"
    book.write_text("code,title\n" + "".join(f"{c},{t}\n" for c, t in titles.items()))
    cols = {"idcode": "person_id", "occ_code": "occupation", "birth_yr": "birth_year"}
    p = ll.load_panel(full, columns=cols, codebook=book)
    assert set(p.states) - {"Student", "Not working", "Military"} <= set(titles.values())
    assert p.scheme.name == "titles" and (p.frame.state.to_numpy() == nls.state.to_numpy()).all()
    # a code the codebook lacks
    last = max(titles)
    short = tmp_path / "short.csv"
    short.write_text("code,title\n" + "".join(f"{c},{t}\n" for c, t in titles.items() if c != last))
    with pytest.raises(DataError, match=f"not in the codebook.*{last}"):
        ll.load_panel(full, columns=cols, codebook=short)
    assert titles[last] not in ll.load_panel(full, columns=cols, codebook=short, unknown="missing").states
    # bad codebooks and two-digit years are named
    bad = tmp_path / "bad.csv"
    bad.write_text("id,label\n1,x\n")
    with pytest.raises(DataError, match="code,title"):
        ll.load_panel(full, columns=cols, codebook=bad)
    with pytest.raises(DataError, match="two-digit.*--century 1900"):
        ll.load_panel(two_digit, columns=cols, codebook=book)
    # ... or read in the century the user names (the raw file's 70 is 1970)
    read = ll.load_panel(two_digit, columns=cols, codebook=book, century=1900)
    assert (read.frame.year.to_numpy() == p.frame.year.to_numpy()).all()
    r = CliRunner().invoke(app, ["data", "describe", "--data", str(two_digit), "--columns",
                                 "idcode=person_id,occ_code=occupation,birth_yr=birth_year", "--codebook", str(book),
                                 "--century", "1900", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["years"][0] == p.frame.year.min()
    r = CliRunner().invoke(app, ["data", "describe", "--data", str(full), "--columns",
                                 "idcode=person_id,occ_code=occupation,birth_yr=birth_year", "--codebook", str(book), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["persons"] == p.n_persons > 250


def test_a_code_with_two_titles_names_both_rows(tmp_path):
    from laborllm.data.schemes import read_codebook

    book = tmp_path / "book.csv"
    book.write_text("code,title\n1,Managers\n1,Clerks\n2,Managers\n3,Clerks\n")
    with pytest.raises(DataError, match=r"code '1' is given two different titles: row 2 \('Managers'\), row 3 \('Clerks'\)"):
        read_codebook(book)


@pytest.mark.parametrize("years,births,century,match", [
    ([97, 98, 99, 0, 1], [80] * 5, 1900, "years go backwards"),
    ([1997, 1998, 1999], [80] * 3, 2000, "birth_year is after the year"),
    ([1997, 1998, 1999], [1980] * 3, 1950, "whole century"),
])
def test_century_refuses_wrapped_years_late_births_and_odd_centuries(years, births, century, match):
    df = pd.DataFrame({"person_id": 1, "year": years, "occupation": "A", "birth_year": births})
    with pytest.raises(DataError, match=match):
        ll.load_panel(df, scheme="titles", century=century)


def test_titles_that_look_like_missing_values_stay_titles(tmp_path):
    book = tmp_path / "book.csv"
    book.write_text("code,title\n1,None\n2,nan\n3,Clerks\n")
    df = pd.DataFrame({"person_id": [1, 1, 1], "year": [2000, 2001, 2002], "occupation": ["1", "2", "3"]})
    p = ll.load_panel(df, codebook=book)
    assert p.frame.state.tolist() == ["None", "nan", "Clerks"] and sorted(p.states) == ["Clerks", "None", "nan"]


def test_person_ids_are_text_not_numbers():
    df = pd.DataFrame({"person_id": ["01", "01", "1", "1", "007", "7"], "year": [2000, 2001, 2000, 2001, 2000, 2000],
                       "occupation": "A"})
    assert ll.load_panel(df, scheme="titles").n_persons == 4


def test_a_digit_title_never_takes_another_states_code():
    from laborllm.data.schemes import Scheme
    from laborllm.text.templates import state_codes

    states = ["2001", "Apple", "Banana"]  # positional codes would give Banana 2002 and Apple 2001
    codes = state_codes(states, Scheme("titles"))
    assert len(set(codes.values())) == 3 and codes["2001"] == "2001"


def test_messages_keep_what_matters(tmp_path):
    from laborllm.data.panel import read_table

    semi = tmp_path / "semi.csv"
    semi.write_text("person_id;year;occupation\n1;2000;A\n")
    with pytest.raises(DataError, match="semicolon-separated"):
        ll.load_panel(str(semi))
    latin = tmp_path / "latin.csv"
    latin.write_bytes("person_id,year,occupation\n1,2000,A\n1,2001,Caf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match="line 3 is not UTF-8"):
        read_table(latin)
    with pytest.raises(DataError, match="does not know"):
        ll.load_panel("nlsy79-males", columns="sex=gendr")


def test_the_nlsy97_events_keep_the_identity_the_long_run_is_stamped_with(nlsy97):
    """The NLSY97 CPU run's checkpoints are stamped with this fingerprint (hours of training): a change
    to loading, splitting or hashing must be deliberate, and carry the checkpoints over."""
    assert nlsy97.fingerprint() == "affa3ad44b9a766c"
