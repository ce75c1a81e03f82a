"""Run profiles: what `laborllm run` compares, on which panels, with which model preset.

A model's settings preset (`Model.presets[preset]`, beside its Settings in its own module: quick for
a 2-core CPU, full for one GPU) sizes it; a run profile lists benchmarks (a panel and the models compared on all its test events) and the
preset they take. The pooling profile measures what careers from another survey add: the LLM reads
the pooled panel in its own words, CAREER pretrains on it through a crosswalk onto the target's states.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

PRESETS = ("quick", "full")
REFERENCE = "logit"  # the model every other is set against in the tables' paired-ratio column

_XWALK = Path(__file__).parent / "data" / "assets" / "nlswork_to_nlsy79_males.csv"

# the run entries (name, kind, settings): every model a run can compare, in table order
ENTRIES = [
    ("uniform", "uniform", {}),
    ("markov1", "markov", {"order": 1}),
    ("markov2", "markov", {"order": 2}),
    ("logit", "logit", {}),
    ("career", "career", {}),
    ("career-pooled", "career", {"pretrain_data": "nlswork", "pretrain_states": str(_XWALK)}),
    ("llm-titles", "llm", {"variant": "titles"}),
    # 1,500 of nlswork's 4,699 women (four times the men panel's training men): the whole panel is
    # 540k tokens an epoch, two hours for the two pooled LLMs on 2 cores (`--set NAME.pool_persons=0`)
    ("llm-titles-pooled", "llm", {"variant": "titles", "pool": ["nlswork"], "pool_mode": "joint", "pool_persons": 1500}),
    ("llm-titles-pooled-seq", "llm", {"variant": "titles", "pool": ["nlswork"], "pool_mode": "sequential",
                                      "pool_persons": 1500}),
    ("llm-codes", "llm", {"variant": "codes"}),
    # occupation heads on the shipped NLSY97 LLMs (frozen): their hidden states and the predicted year's
    # covariates into a read-out over the states (laborllm.models.lm_head)
    ("llm-codes-head", "llm-head", {"lm": "nlsy97-codes"}),
    ("llm-titles-head", "llm-head", {"lm": "nlsy97-titles"}),
    # the two NLSY97 LLMs mixed, the weight chosen on a seeded sample of validation people
    ("llm-mix", "mixture", {"members": ["llm-titles", "llm-codes"]}),
    ("icl", "icl", {"variant": "titles"}),
]
NAMES = tuple(m[0] for m in ENTRIES)
BASELINES = ("uniform", "markov1", "markov2", "logit", "career")
STANDARD = BASELINES + ("llm-titles", "llm-codes", "icl")
POOLING = BASELINES + ("career-pooled", "llm-titles", "llm-titles-pooled", "llm-titles-pooled-seq", "icl")


@dataclass(frozen=True)
class Profile:
    preset: str  # the models' settings preset
    benchmarks: tuple  # ((panel, model names), ...)
    contrasts: tuple = ()  # ((model, the same model without one ingredient), ...): the profile's question
    question: str = ""
    settings: dict = field(default_factory=dict)  # model name -> settings over the preset's, for this profile
    # panel -> (people, model names): models too slow for every test event (the in-context LLM on NLSY97),
    # scored on a seeded sample of that many test people and set against the panel's models on them
    sampled: dict = field(default_factory=dict)
    name: str = ""

    @property
    def models(self) -> tuple:
        """Every model of the profile, for `--data` (one panel with all of them)."""
        return tuple(dict.fromkeys(n for _, names in self.benchmarks for n in names))


# The NLSY97 CPU recipe, chosen on validation perplexity per CPU-minute (docs/benchmarks.md): LoRA r16
# on the top 15 of SmolLM2's 30 layers (the backward pass stops at layer 15: as fast as the top 10 on a
# 2-core CPU, as good per epoch as all 30), fp32 where bf16 is not faster, up to 3 epochs with the best
# validation epoch kept, scored constrained; CAREER at the paper's size.
CPU_LLM = {"lora": True, "lora_layers": 15, "lora_r": 16, "epochs": 3, "batch_size": 8, "lr": 1e-3,
           "max_valid_persons": 500, "scoring": "constrained", "precision": "auto",
           "validate": True}  # the quick preset's LLMs skip validation; these choose their best epoch by it
# the occupation heads on the LLMs' last hidden state lost to CAREER on validation (docs/benchmarks.md),
# so they are not scored on the test events here; `--models llm-codes-head` runs one
NLSY97_CPU = ("uniform", "markov1", "markov2", "logit", "llm-titles", "career", "llm-codes", "llm-mix")
# a head's features of a seeded half of the training people: an hour of forward passes on 2 cores
CPU_HEAD = {"max_train_persons": 3000}
# the in-context LLM's prompt chosen on 40 seeded NLSY97 validation people (docs/benchmarks.md): whole
# example histories up to 1,024 tokens and one temperature (15.6; two examples 18.5, 4,096 tokens 15.7 at
# six times the cost), scored constrained on a sample of test people (`sampled` below)
NLSY97_ICL = {"shots": 10_000, "prompt_tokens": 1024, "max_shot_years": 200, "scoring": "constrained",
              "max_valid_persons": 40}

PROFILES = {
    # a 2-core CPU in under 15 minutes: every model where the whole method fits, the Markov chains and the
    # logit on NLSY97 (CAREER there, two and a half minutes on an AVX2-only CPU, is in nlsy97-cpu at the
    # paper's size)
    "quick": Profile("quick", (("nlsy79-males", STANDARD), ("nlsy97", ("uniform", "markov1", "markov2", "logit")))),
    # one GPU: every model on NLSY97
    "full": Profile("full", (("nlsy97", STANDARD),)),
    # a 2-core CPU in about an hour: the men panel alone and pooled with the NLS Young Women
    "pooling": Profile("quick", (("nlsy79-males", POOLING),),
                       contrasts=(("career-pooled", "career"), ("llm-titles-pooled", "llm-titles"),
                                  ("llm-titles-pooled-seq", "llm-titles")),
                       question="Does pooling another survey help?"),
    # a 2-core CPU over a night or several, in resumable pieces: the paper's panel with the fine-tuned
    # LLM on every test event, titles first (the headline), then CAREER, then the codes ablation
    "nlsy97-cpu": Profile("quick", (("nlsy97", NLSY97_CPU),),
                          contrasts=(("llm-titles", "logit"), ("llm-titles", "career"), ("llm-codes", "llm-titles"),
                                     ("llm-codes", "logit"), ("llm-codes", "career"),
                                     ("llm-mix", "career"), ("llm-mix", "llm-codes"), ("llm-mix", "logit")),
                          question="Does the fine-tuned LLM beat the logit and CAREER on NLSY97?",
                          settings={"llm-titles": CPU_LLM, "llm-codes": CPU_LLM, "llm-codes-head": CPU_HEAD,
                                    "llm-titles-head": CPU_HEAD, "llm-mix": {"max_valid_persons": 150},
                                    "icl": NLSY97_ICL,
                                    "career": {"layers": 12, "d": 192, "heads": 3, "ff": 768, "epochs": 60,
                                               "min_steps": 0, "patience": 3}},
                          sampled={"nlsy97": (100, ("icl",))}),
}


def profile(name: str) -> Profile:
    from laborllm.errors import UserError

    if name not in PROFILES:
        raise UserError(f"unknown profile {name!r}; choose {', '.join(PROFILES)}")
    return replace(PROFILES[name], name=name)


def check_preset(name: str) -> str:
    from laborllm.errors import UserError

    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r}; choose {' or '.join(PRESETS)}")
    return name
