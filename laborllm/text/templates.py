"""Resume-like text of a career, and its token segments.

A history becomes a header sentence (gender, race/ethnicity, region, birth year, education at the
start of the record), one line per year ``YEAR: TITLE`` and an end marker. The text is tokenised by
segments -- the header, each ``YEAR:`` prefix, each `` TITLE`` with its line terminator -- and the
token ids are the concatenation of the segments' ids. Training and scoring both use exactly these
ids, so the candidate tokens scored after ``YEAR:`` are the tokens the model was trained on.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from laborllm.data.schemes import MISSING, SPECIAL_STATES

VARIANTS = ("titles", "codes")
END = "End of record."


@dataclass(frozen=True)
class ResumeTemplate:
    variant: str = "titles"  # "codes": numeric codes instead of titles (the paper's ablation)
    birth_year: bool = True
    # each year's line opens with that year's education (and the region where it changed): what CAREER
    # and the logit know of the predicted year, never anything of a later one
    year_covariates: bool = False

    def state_text(self, title: str, code: str) -> str:
        if self.variant == "titles" or title == MISSING:
            return title
        return code

    def header(self, first: pd.Series) -> str:
        def get(name, default="unknown"):
            v = first.get(name)
            return default if v is None or pd.isna(v) else str(v)

        who = " ".join(x for x in (get("race", ""), get("gender", "") or "worker") if x)
        text = f"Work history of {'an' if who[0] in 'AEIOU' else 'a'} {who}"
        if "region" in first and not pd.isna(first.get("region")):
            text += f" residing in the {first['region']} region"
        text += "."
        if self.birth_year and "birth_year" in first and not pd.isna(first.get("birth_year")):
            text += f" Born in {int(first['birth_year'])}."
        if "education" in first and not pd.isna(first.get("education")):
            text += f" Education at the start: {first['education']}."
        return text + " One line per year, with the job held.\n"

    def text(self, rows: pd.DataFrame, codes: dict[str, str]) -> str:
        """One person's resume as the LLM reads it."""
        return "".join(t for _, t in self.segments(rows, codes))

    def segments(self, rows: pd.DataFrame, codes: dict[str, str]) -> list[tuple[str, str]]:
        """[(kind, text)] with kind in header / year / state / end; rows are one person's years."""
        segs = [("header", self.header(rows.iloc[0]))]
        for i, (year, title) in enumerate(zip(rows.year, rows.state)):
            segs += [("year", self.year_text(rows, i)), ("state", f" {self.state_text(title, codes.get(title, title))}\n")]
        return segs + [("end", END)]

    def year_text(self, rows: pd.DataFrame, i: int) -> str:
        """``YEAR:``, or with year covariates ``YEAR (EDUCATION, moved to the REGION region):``, from
        row `i` and the one before it only."""
        year = int(rows.year.iloc[i])
        if not self.year_covariates:
            return f"{year}:"
        notes = []
        if "education" in rows and not pd.isna(rows.education.iloc[i]):
            notes.append(str(rows.education.iloc[i]))
        if "region" in rows and i > 0 and not pd.isna(rows.region.iloc[i]):
            before = rows.region.iloc[:i].dropna()
            if len(before) and before.iloc[-1] != rows.region.iloc[i]:
                notes.append(f"moved to the {rows.region.iloc[i]} region")
        return f"{year} ({', '.join(notes)}):" if notes else f"{year}:"


def state_codes(states: list[str], scheme) -> dict[str, str]:
    """Unique numeric code per state: the scheme's code, specials numbered from 1001."""
    out = {}
    for i, s in enumerate(states):
        c = scheme.code_of(s)
        out[s] = c if c.isdigit() else str(1001 + SPECIAL_STATES.index(s)) if s in SPECIAL_STATES else str(2000 + i)
    # a title that is itself a number (a titles-scheme state "2001") could take another state's code:
    # every state whose code is taken twice gets a fresh one past all of them
    taken, fresh = set(), 2000 + len(states)
    for s in states:
        if out[s] in taken:
            while str(fresh) in out.values():
                fresh += 1
            out[s] = str(fresh)
        taken.add(out[s])
    return out


class SegmentEncoder:
    """Token ids of resumes and of candidate states, built segment by segment."""

    def __init__(self, tokenizer, template: ResumeTemplate, states: list[str], scheme):
        self.tok, self.template, self.states = tokenizer, template, list(states)
        self.codes = state_codes(self.states, scheme)
        self._cache: dict[str, list[int]] = {}
        self.candidates = [self.encode(f" {template.state_text(s, self.codes[s])}\n") for s in self.states]

    def encode(self, text: str) -> list[int]:
        ids = self._cache.get(text)
        if ids is None:
            ids = self._cache[text] = list(self.tok(text, add_special_tokens=False)["input_ids"])
        return ids

    @property
    def bos(self) -> list[int]:
        """A BOS token only when the tokenizer itself adds one (SmolLM2's does not)."""
        b = getattr(self.tok, "bos_token_id", None)
        return [b] if b is not None and getattr(self.tok, "add_bos_token", False) else []

    def person(self, rows: pd.DataFrame) -> tuple[list[int], np.ndarray]:
        """Ids of one person's whole resume (with EOS), and for each year row the index of the
        first token of its state segment (= the length of the prefix that ends with ``YEAR:``)."""
        ids = list(self.bos)
        starts = []
        for kind, text in self.template.segments(rows, self.codes):
            if kind == "state":
                starts.append(len(ids))
            ids += self.encode(text)
        eos = getattr(self.tok, "eos_token_id", None)
        if eos is not None:
            ids.append(eos)
        return ids, np.array(starts)

    def text(self, rows: pd.DataFrame) -> str:
        return self.template.text(rows, self.codes)
