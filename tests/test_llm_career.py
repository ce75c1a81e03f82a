"""Fine-tuned LLM, in-context LLM and CAREER on real NLSY97 people with tiny models."""
import copy
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import laborllm as ll
from laborllm import api
from laborllm.errors import UserError
from laborllm.lm.tiny import ARCHITECTURES
from laborllm.models.registry import load_model
from laborllm.models.career import Career
from laborllm.models.markov import Markov
from tests.conftest import men_csv, nlsy97_csv


@pytest.fixture(scope="module")
def panel_csv(tmp_path_factory):
    """150 real NLSY97 people as a canonical user CSV (titles scheme)."""
    return str(nlsy97_csv(tmp_path_factory.mktemp("data") / "panel.csv", 150))


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory, panel_csv):
    from laborllm.lm.tiny import tiny_model_folder
    from laborllm.text.templates import ResumeTemplate, state_codes

    ev = api.events_for(api.data_spec(panel_csv, scheme="titles"))
    codes = state_codes(ev.states, ev.panel.scheme)
    texts = []
    for variant in ("titles", "codes"):
        tpl = ResumeTemplate(variant)
        texts += [tpl.text(g, codes) for _, g in ev.panel.frame.groupby("person_id")]
    return str(tiny_model_folder(tmp_path_factory.mktemp("tiny") / "lm", texts, vocab_size=500, hidden=48))


def held_out_loss(model, events, persons: int = 5) -> float:
    """Mean next-token loss of the model's LM on the resumes of a few test people."""
    import torch

    enc = model._encoder(events.panel)
    f = events.panel.frame
    resumes = [torch.tensor([enc.person(g)[0]]) for _, g in
               f[f.person_id.isin(events.test.frame.person_id.unique()[:persons])].groupby("person_id")]
    with torch.no_grad():
        return float(np.mean([float(model.lm(input_ids=r, labels=r).loss) for r in resumes]))


# fp32 whatever the CPU, so that the oracle comparisons below are exact (bf16 is tested apart)
LLM_QUICK = dict(max_train_persons=40, max_valid_persons=10, max_steps=8, batch_size=8, lr=3e-3, epochs=1,
                 precision="fp32")


def test_llm_finetune_lowers_loss_and_scores_exactly(tiny_base, tmp_path):
    # 60 of the 150 people: `evaluate` below scores every test event over all states
    data = str(nlsy97_csv(tmp_path / "panel.csv", 60))
    events = api.events_for(api.data_spec(data, scheme="titles"))
    m = api.fit("llm", data, tmp_path / "llm", "quick", scheme="titles", base=tiny_base, lora=False,
                scoring="renormalised", **LLM_QUICK)
    assert m.meta["train_persons"] == 40 and m.meta["tokens_per_second"] > 0
    assert (tmp_path / "llm" / "hf" / "model.safetensors").exists()
    assert not (tmp_path / ".llm.checkpoints").exists()  # training checkpoints are cleaned up once saved
    test = events.test
    few = test.where(np.arange(len(test)) < 12)
    lp, figures = m.log_probs_and_figures(few)
    mass = np.exp(np.logaddexp.reduce(m.raw_log_probs(few), axis=1))  # what the LM put on the states' texts
    assert 0 < figures["valid_mass_min"] <= figures["valid_mass_mean"] < 1
    np.testing.assert_allclose(figures["valid_mass_mean"], mass.mean(), rtol=1e-5)
    np.testing.assert_allclose(lp, m.raw_log_probs(few) - np.log(mass)[:, None], atol=1e-6)
    # fine-tuning lowered the next-token loss on held-out resumes (test people) below the base model's
    base = api.make_model("llm", "quick", base=tiny_base, epochs=0, precision="fp32").fit(events)
    assert held_out_loss(m, events) < held_out_loss(base, events) - 0.2  # 6.22 -> 5.81 measured (8 steps)
    # the reloaded folder gives the same probabilities
    np.testing.assert_allclose(load_model(tmp_path / "llm").log_probs(few), lp, atol=1e-5)
    # the same events through `evaluate` carry the unnormalised figure, clearly labelled
    r = api.evaluate([tmp_path / "llm"], "test", n_boot=20)[0]
    assert r["normalization"].startswith("exact, renormalised") and r["unnormalised_perplexity"] >= r["perplexity"]


def test_icl_fills_the_prompt_budget_and_calibrates(panel_csv, tiny_base, tmp_path):
    """The fair in-context baseline: seeded examples while the prompt stays under its token budget
    (more than the default three); calibrated scores that are the plain ones with the content-free
    distribution divided out, or divided by the temperature that minimises the validation loss, and
    still normalised."""
    kw = dict(scheme="titles", base=tiny_base, shots=1000, prompt_tokens=600, max_shot_years=4, max_valid_persons=4)
    plain = api.fit("icl", panel_csv, tmp_path / "plain", "quick", calibrate="none", **kw)
    assert 3 < plain.meta["shots_used"] < 1000 and len(plain.prompt_ids) <= 600
    assert f"{plain.meta['shots_used']} example histories" in plain.describe()
    events = api.events_for(api.data_spec(panel_csv, scheme="titles"))
    few = events.test.where(np.arange(len(events.test)) < 6)
    raw = plain.log_probs(few)

    def norm(x):
        return x - np.logaddexp.reduce(x, axis=1, keepdims=True)

    api.fit("icl", panel_csv, tmp_path / "cf", "quick", calibrate="content-free", **kw)
    free = load_model(tmp_path / "cf")
    assert free.prompt_ids == plain.prompt_ids  # the same seeded prompt, read otherwise
    lp = free.log_probs(few)
    np.testing.assert_allclose(lp, norm(raw - free.content_free_log_probs(few.panel)), atol=1e-6)
    assert np.abs(lp - raw).max() > 0.05  # the content-free prediction is not uniform: calibration moves mass

    api.fit("icl", panel_csv, tmp_path / "t", "quick", calibrate="temperature", **kw)
    hot = load_model(tmp_path / "t")
    t = hot.meta["temperature"]
    np.testing.assert_allclose(hot.log_probs(few), norm(raw / t), atol=1e-6)
    sample = events.valid.sample_persons(4, 0)  # the validation people the temperature was fitted on
    valid = plain.log_probs(sample)
    y = sample.frame.target.to_numpy()
    loss = {s: -norm(valid / (t * s))[np.arange(len(y)), y].mean() for s in (0.8, 1, 1.25)}
    assert loss[1] <= min(loss[0.8], loss[1.25])  # the fitted temperature minimises the validation loss
    assert plain.score_key() != free.score_key() != hot.score_key()


def test_lora_codes_variant_and_icl(panel_csv, tiny_base, tmp_path):
    api.fit("llm", panel_csv, tmp_path / "codes", "quick", scheme="titles", base=tiny_base, variant="codes",
            lora=True, **LLM_QUICK)
    assert (tmp_path / "codes" / "adapter" / "adapter_config.json").exists()
    icl = api.fit("icl", panel_csv, tmp_path / "icl", "quick", scheme="titles", base=tiny_base, shots=2)
    assert len(icl.prompt_ids) > 20
    again = load_model(tmp_path / "icl")
    assert again.prompt_ids == icl.prompt_ids
    test = api.events_for(api.data_spec(panel_csv, scheme="titles")).test
    few = test.where(np.arange(len(test)) < 5)
    for model in (load_model(tmp_path / "codes"), again):
        np.testing.assert_allclose(np.exp(model.log_probs(few)).sum(1), 1, atol=1e-6)
    # the codes model reads and writes states as codes: its resumes are not the titles ones
    codes = load_model(tmp_path / "codes")
    events = api.events_for(api.data_spec(panel_csv, scheme="titles"))
    titles = copy.copy(codes)
    titles.settings = dataclasses.replace(codes.settings, variant="titles")
    codes.work_dir = titles.work_dir = tmp_path / "refit"  # where the tokenised resumes are stored
    text = {m.config["variant"]: m.tok.decode(m._resume_ids(events, "train", 1)[0]) for m in (codes, titles)}
    assert text["codes"] != text["titles"]
    assert sum(c.isdigit() for c in text["codes"]) > sum(c.isdigit() for c in text["titles"])


def test_validation_runs_at_each_epoch_end_unless_turned_off(panel_csv, tiny_base, tmp_path):
    """Several epochs: the validation loss at each epoch's end (the model card's curve); `validate`
    false (the quick preset: one epoch has nothing to choose) skips those passes, trains the same."""
    few = dict(LLM_QUICK, max_steps=-1, epochs=2, max_train_persons=16, lora=True)
    curves = {}
    for validate in (True, False):
        m = api.fit("llm", panel_csv, tmp_path / str(validate), "quick", scheme="titles", base=tiny_base,
                    validate=validate, **few)
        assert m.meta["train_steps"] == 4  # 2 epochs of 16 people, 8 a step
        curves[validate] = [c["epoch"] for c in m.meta["valid_curve"]]
    assert curves == {True: [1, 2], False: []}
    assert "validation loss by epoch: 1: " in (tmp_path / "True" / "README.md").read_text()


def test_llm_training_resumes_from_checkpoint(panel_csv, tiny_base, tmp_path, monkeypatch):
    """A run killed after a checkpoint resumes from it instead of starting over, also on a machine
    where precision "auto" would pick bf16 for a new run, and its model card counts the whole run's
    tokens, not only the last piece's."""
    out = tmp_path / "llm"
    code = f"""
import sys
import time
import laborllm.lm.training as T
save = T._Progress.on_save
def kill(self, args, state, control, **kw):  # die right after the fourth checkpoint is written
    save(self, args, state, control, **kw)
    if state.global_step == 4:
        sys.exit(3)
T._Progress.on_save = kill
from laborllm import api
api.fit("llm", {panel_csv!r}, {str(out)!r}, "quick", scheme="titles", base={tiny_base!r}, lora=False,
        checkpoint_minutes=0, **{LLM_QUICK!r})
"""
    t0 = time.time()
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    first_piece = time.time() - t0
    assert r.returncode == 3, r.stderr[-2000:]
    assert any((tmp_path / ".llm.checkpoints").glob("checkpoint-4"))
    # settings that do not change what is trained (checkpoint interval, scoring) keep the checkpoints
    import laborllm.lm.precision as precision

    monkeypatch.setattr(precision, "machine_bf16", lambda purpose: True)  # an AMX CPU
    t0 = time.time()
    m = api.fit("llm", panel_csv, out, "quick", scheme="titles", base=tiny_base, lora=False, checkpoint_minutes=5,
                scoring="constrained", **{**LLM_QUICK, "precision": "auto"})
    second_piece = time.time() - t0
    assert m.meta["precision"] == "fp32" and "continues" in m.meta["precision_choice"]["train"]
    # 8 steps in all, of which only the 4 after the checkpoint ran again (a restart would run 8)
    assert m.meta["train_steps"] == 8 and m.meta["steps_this_run"] == 4 and (out / "hf").exists()
    assert m.meta["resumed"] and m.meta["train_tokens"] == 8 * m.meta["tokens_per_step"]
    # the fit time is the whole fit's: this piece's and the killed piece's training (up to its checkpoint)
    earlier = m.meta["train_seconds_earlier"]
    assert 0 < earlier < first_piece and m.meta["fit_seconds"] == pytest.approx(second_piece + earlier, abs=0.5)


def test_one_definition_of_a_fit_for_reuse_and_both_kinds_of_checkpoint():
    """What a fit is comes from each setting's role, the same for run reuse, CAREER's checkpoints and
    the LLM's: read and run settings never make another fit, fit settings do (patience included, for
    both kinds), and a stamp written before a setting existed still matches at that setting's default."""
    from laborllm.models.career import Career, CareerSettings
    from laborllm.models.llm import LLM, LLMSettings
    from laborllm.lm.checkpoints import run_stamp, same_run
    from laborllm.settings import fit_differences, with_role

    assert set(with_role(LLMSettings, "read")) == {"scoring", "precision"}
    assert set(LLM.read_keys()) == {"scoring", "precision"}

    def stamp(**kw):
        return run_stamp(LLM(**{**LLM_QUICK, **kw}).fit_settings(), "f", False, 1)

    assert stamp(scoring="constrained", checkpoint_minutes=1, precision="fp32", score_max_tokens=512) == stamp()
    assert same_run(stamp(), stamp(), LLMSettings)
    for other in ({"lr": 2e-3}, {"patience": 4}, {"validate": False}):
        assert not same_run(stamp(**other), stamp(), LLMSettings), other
    assert not same_run(run_stamp(stamp()["config"], "f", True, 1), stamp(), LLMSettings)  # bf16 is another run
    assert not same_run(stamp(), run_stamp(stamp()["config"], "g", False, 1), LLMSettings)  # other data
    old = stamp()
    del old["config"]["year_covariates"]  # a checkpoint stamped before the setting existed
    assert same_run(old, stamp(), LLMSettings) and not same_run(old, stamp(year_covariates=True), LLMSettings)
    old["config"]["gradient_checkpointing"] = True  # stamped when it counted; now it only changes how the work goes
    assert same_run(old, stamp(), LLMSettings)
    # CAREER by the same rule
    a, b = Career(patience=3).fit_settings(), Career(patience=4).fit_settings()
    assert fit_differences(a, b, CareerSettings) == ["patience"] and fit_differences(a, a, CareerSettings) == []


def test_length_grouped_order_depends_on_seed_and_epoch_only():
    from laborllm.lm.training import LengthGroupedSampler

    lengths = list(np.random.default_rng(0).integers(5, 500, size=1000))
    s = LengthGroupedSampler(lengths, 8, seed=3)
    s.set_epoch(1)
    first = list(s)
    again = LengthGroupedSampler(lengths, 8, seed=3)  # a resumed process: a new sampler, same epoch
    again.set_epoch(1)
    assert list(again) == first and sorted(first) == list(range(1000))
    s.set_epoch(2)
    assert list(s) != first
    # batches of similar lengths: far less padding than a plain shuffle
    pad = lambda order: sum(8 * max(lengths[i] for i in order[k:k + 8]) - sum(lengths[i] for i in order[k:k + 8])
                            for k in range(0, 1000, 8))
    assert pad(first) < 0.2 * pad(list(np.random.default_rng(1).permutation(1000)))


def test_ddp_two_cpu_processes(panel_csv, tiny_base, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
         "-m", "laborllm.cli", "fit", "llm", "--data", panel_csv, "--scheme", "titles", "--out", str(out),
         "--set", f"base={tiny_base}", "--set", "lora=false", "--set", "max_steps=4", "--set", "batch_size=8",
         "--set", "max_train_persons=32", "--set", "max_valid_persons=8"],
        capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    meta = json.loads((out / "model.json").read_text())
    assert meta["world_size"] == 2


def test_career_learns_stays_and_reloads(small_events, tmp_path):
    m = Career(layers=2, d=48, heads=3, ff=96, epochs=6, lr=3e-3, warmup_steps=10).fit(small_events)
    test = small_events.test
    lp = m.log_probs(test)
    np.testing.assert_allclose(np.exp(lp).sum(1), 1, atol=1e-5)
    y = test.frame.target.to_numpy()
    ppl = float(np.exp(-lp[np.arange(len(y)), y].mean()))
    markov = Markov().fit(small_events).log_probs(test)
    assert ppl < 1.5 * float(np.exp(-markov[np.arange(len(y)), y].mean()))
    # the stay probability is the largest single mass for most events (stays dominate careers)
    last = test.frame["last_state"].to_numpy()
    assert (lp.argmax(1) == last).mean() > 0.5
    m.save(tmp_path / "career", {"data": "x"})
    np.testing.assert_allclose(load_model(tmp_path / "career").log_probs(test), lp, atol=1e-6)


def test_career_information_ablation_reads_only_the_first_years_education(small_events):
    """time_varying=false gives CAREER what the LLM's resume states: education and region as of the
    first year. A degree earned later must then change nothing; with the default it must."""
    import laborllm as ll

    f = small_events.panel.frame
    test = small_events.test
    person = test.frame.person_id.value_counts().index[0]
    rows = f.index[f.person_id == person]
    levels = [v for v in f.education.dropna().unique()]
    later = f.copy()
    later.loc[rows[1:], "education"] = next(v for v in levels if v != f.education[rows[1]])
    changed = ll.make_events(ll.load_panel(later.assign(occupation=later.state), scheme="titles"), seed=0)
    mine = lambda e: e.test.where((e.test.frame.person_id == person).to_numpy())  # noqa: E731
    for time_varying in (False, True):
        m = Career(layers=1, d=24, heads=2, ff=48, epochs=1, time_varying=time_varying).fit(small_events)
        same = np.allclose(m.log_probs(mine(small_events)), m.log_probs(mine(changed)), atol=1e-6)
        assert same != time_varying


def test_career_refuses_a_history_longer_than_it_reads_with_the_limit_named(small_events):
    """Years 1900-2100 are legal, so 130 years and the one predicted are legal input: CAREER (128 positions)
    says so in fit, predict and simulate instead of failing on a tensor size."""
    from laborllm.errors import UserError
    from laborllm.forecast import next_distribution, simulate

    m = Career(layers=1, d=24, heads=2, ff=48, epochs=1).fit(small_events)
    long = pd.DataFrame({"year": range(1900, 2030), "occupation": "Cashiers"})
    with pytest.raises(UserError, match="at most 128 years.*131 years"):
        next_distribution(m, long)
    with pytest.raises(UserError, match="at most 128 years"):  # a simulation that grows past the limit
        simulate(m, long.tail(127), years=3, samples=2)
    assert next_distribution(m, long.tail(127))[1].shape == (1, len(m.states))


def test_llm_refuses_a_resume_longer_than_its_context_with_the_limit_named(panel_csv, tiny_base, tmp_path):
    from laborllm.errors import UserError
    from laborllm.forecast import next_distribution

    m = api.fit("llm", panel_csv, None, "quick", scheme="titles", base=tiny_base, lora=True, epochs=0,
                precision="fp32", scoring="constrained")
    history = pd.DataFrame({"year": range(1960, 2000), "occupation": "Cashiers"})
    assert next_distribution(m, history)[1].shape[0] == 1
    m.lm.config.max_position_embeddings = 64  # a base that reads 64 tokens
    with pytest.raises(UserError, match="over the 64 the language model reads"):
        next_distribution(m, history)


def test_career_pretraining_on_another_panel(small_events):
    settings = dict(layers=1, d=48, heads=3, ff=96, epochs=2)
    m = Career(**settings, pretrain_data="nlsy79-males", pretrain_epochs=1).fit(small_events)
    assert len(m.states_all) > len(m.states)  # shared vocabulary includes the other panel's states
    assert m.meta["pretrain_epochs"] == 1 and m.meta["pretrain_steps"] > 0  # the pretraining really ran
    lp = m.log_probs(small_events.test)
    np.testing.assert_allclose(np.exp(lp).sum(1), 1, atol=1e-5)
    # and changed the model: the same seed without pretraining predicts otherwise
    alone = Career(**settings).fit(small_events).log_probs(small_events.test)
    assert np.abs(lp - alone).max() > 1e-3


def test_bad_base_model_is_a_clear_error(panel_csv, tmp_path):
    from laborllm.errors import UserError

    (tmp_path / "notamodel").mkdir()
    with pytest.raises(UserError, match="not a Hugging Face model folder"):
        api.fit("llm", panel_csv, tmp_path / "x", "quick", scheme="titles", base=str(tmp_path / "notamodel"))
    with pytest.raises(UserError, match="no such GGUF file"):
        api.fit("llm", panel_csv, tmp_path / "x", "quick", scheme="titles", base=str(tmp_path / "missing.gguf"))


def test_unnormalised_mode_is_labelled_and_matches_exact_true_state(panel_csv, tiny_base, tmp_path):
    from typer.testing import CliRunner

    from laborllm.cli import app

    api.fit("icl", panel_csv, tmp_path / "icl", "quick", scheme="titles", base=tiny_base, shots=1, precision="fp32")
    m = load_model(tmp_path / "icl")
    test = api.events_for(api.data_spec(panel_csv, scheme="titles")).test
    few = test.where(np.arange(len(test)) < 6)
    y = few.frame.target.to_numpy()
    np.testing.assert_allclose(m.true_log_probs(few), m.raw_log_probs(few)[np.arange(6), y], rtol=1e-5, atol=1e-4)
    r = CliRunner().invoke(app, ["evaluate", str(tmp_path / "icl"), "--unnormalised", "--json"])
    assert r.exit_code == 0, r.output
    row = json.loads(r.stdout)[0]
    assert row["normalization"].startswith("unnormalised") and row["top1"] is None


def test_packed_rows_give_the_unpacked_loss(tiny_base):
    import torch

    from laborllm.lm.training import _collate, _collate_packed, pack
    from laborllm.lm.loading import load_lm

    model, _ = load_lm(tiny_base)
    rng = np.random.default_rng(0)
    resumes = [rng.integers(0, 400, size=n).tolist() for n in (30, 12, 25, 7, 18)]
    rows = pack(resumes, 48)
    assert sum(len(r) for row in rows for r in row) == sum(map(len, resumes)) and len(rows) < len(resumes)

    def total(batch):
        out = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
        lp = torch.log_softmax(out[:, :-1].float(), -1)
        lab = batch["labels"][:, 1:]
        keep = lab != -100
        return float(-lp[keep].gather(-1, lab[keep][:, None]).sum())

    with torch.no_grad():
        packed = total(_collate_packed([{"input_ids": row} for row in rows]))
        plain = total(_collate([{"input_ids": r} for r in resumes]))
    assert abs(packed - plain) < 1e-3 * abs(plain)


def test_packed_training_runs(panel_csv, tiny_base, tmp_path):
    m = api.fit("llm", panel_csv, tmp_path / "packed", "quick", scheme="titles", base=tiny_base, lora=False,
                pack_tokens=512, **LLM_QUICK)
    assert (tmp_path / "packed" / "hf").exists()
    # the packed rows taught the model: the held-out loss fell (the packed and unpacked losses are
    # equal by test_packed_rows_give_the_unpacked_loss; this checks the Trainer really learns from them)
    events = api.events_for(api.data_spec(panel_csv, scheme="titles"))
    base = api.make_model("llm", "quick", base=tiny_base, epochs=0, precision="fp32").fit(events)
    assert held_out_loss(m, events) < held_out_loss(base, events) - 0.2


def test_packed_schedule_keeps_the_recipe_per_step(tiny_base, tmp_path):
    """Packed training counts steps after packing and takes about as many tokens per step as the
    unpacked recipe (batch_size resumes), so warm-up is warmup_ratio of the real steps."""
    import laborllm as ll
    from laborllm.models.llm import LLM
    from laborllm.lm.training import training_schedule
    from laborllm.lm.loading import load_lm

    _, tok = load_lm(tiny_base)
    events = ll.make_events(ll.load_panel("nlsy97"), seed=0)
    m = LLM()
    m.tok, m.work_dir = tok, tmp_path / "llm"
    lengths = [len(r) for r in m._resume_ids(events, "train", None)]
    cfg = LLM(**LLM.presets["full"]).settings
    assert cfg.pack_tokens == 2048 and cfg.batch_size == 32
    plain = training_schedule(lengths, dataclasses.replace(cfg, pack_tokens=0))
    packed = training_schedule(lengths, cfg)
    assert plain["steps"] == 3 * -(-len(lengths) // 32)
    assert packed["items"] < len(lengths) / 5  # many resumes per row
    assert 0.8 < packed["tokens_per_step"] / plain["tokens_per_step"] < 1.25
    assert 0.8 < packed["steps"] / plain["steps"] < 1.25
    assert packed["warmup_steps"] == round(0.05 * packed["steps"])
    # two processes share a step's rows
    assert training_schedule(lengths, cfg, world=2)["per_device"] == packed["per_device"] // 2


def test_pooling_other_panels_into_llm_training(panel_csv, tiny_base, tmp_path):
    """--pool adds every person of another panel, in its own words, jointly or first; a bad or
    self-pooled panel is refused before anything is trained."""
    from typer.testing import CliRunner

    from laborllm.cli import app
    from laborllm.errors import UserError

    quick = {**LLM_QUICK, "max_steps": 4}
    joint = api.fit("llm", panel_csv, tmp_path / "joint", "quick", scheme="titles", base=tiny_base, lora=False,
                    pool=["nlsy79-males"], **quick)
    assert joint.meta["pool_persons"] == 545 and joint.meta["train_persons"] == 40
    assert "545 pooled from nlsy79-males (joint)" in joint.describe()
    assert "pooled into training: every person of nlsy79-males" in (tmp_path / "joint" / "README.md").read_text()
    seq = api.fit("llm", panel_csv, tmp_path / "seq", "quick", scheme="titles", base=tiny_base, lora=False,
                  pool="nlsy79-males", pool_mode="sequential", pool_persons=100, **quick)
    assert seq.meta["pool_persons"] == 100 and "100 pooled from" in seq.describe()
    assert "a seeded sample of 100 people from each of nlsy79-males" in (tmp_path / "seq" / "README.md").read_text()
    assert seq.meta["pool_stage"]["train_steps"] == 4 and seq.meta["train_steps"] == 4
    assert not list(tmp_path.glob(".seq.checkpoints*"))  # both stages' checkpoints cleaned up
    with pytest.raises(UserError, match="pool 'no-such-panel'"):
        api.fit("llm", panel_csv, tmp_path / "bad", "quick", scheme="titles", base=tiny_base, pool=["no-such-panel"], **quick)
    with pytest.raises(UserError, match="target panel itself"):
        api.fit("llm", panel_csv, tmp_path / "self", "quick", scheme="titles", base=tiny_base, pool=[panel_csv], **quick)
    r = CliRunner().invoke(app, ["fit", "llm", "--data", panel_csv, "--scheme", "titles", "--out", str(tmp_path / "c"),
                                 "--pool", "nope.csv", "--set", f"base={tiny_base}"])
    assert r.exit_code != 0 and "nope.csv" in str(r.exception or r.output)


def test_llm_scoring_resumes_from_finished_people(panel_csv, tiny_base, tmp_path, monkeypatch):
    """Scoring killed part-way continues from the people it finished (kept on disk), gives the same
    matrix as one uninterrupted pass, and never reads parts scored by another model."""
    import laborllm.scoring.partial as partial
    from laborllm.scoring.exact import ExactScorer

    monkeypatch.setattr(partial, "FLUSH_SECONDS", 0)  # write every finished person at once
    m = api.fit("icl", panel_csv, tmp_path / "icl", "quick", scheme="titles", base=tiny_base, shots=1,
                precision="fp32", scoring="constrained")
    test = api.events_for(api.data_spec(panel_csv, scheme="titles")).test.sample_persons(8, 0)
    whole = m.log_probs(test)
    score, calls = ExactScorer.score, []

    def dies_after_three(self, ids, ends):
        calls.append(1)
        if len(calls) > 3:
            raise KeyboardInterrupt
        return score(self, ids, ends)

    monkeypatch.setattr(ExactScorer, "score", dies_after_three)
    with pytest.raises(KeyboardInterrupt):
        m.log_probs_and_figures(test, tmp_path / "parts")
    calls.clear()
    monkeypatch.setattr(ExactScorer, "score", lambda self, ids, ends: (calls.append(1), score(self, ids, ends))[1])
    # continued on a CPU with native bf16, where precision "auto" would score in bf16: it keeps the
    # precision its finished people were scored in rather than throwing them away
    import laborllm.lm.precision as precision

    monkeypatch.setattr(precision, "machine_bf16", lambda purpose: True)
    lp, figures = m.read_as(precision="auto").log_probs_and_figures(test, tmp_path / "parts")
    assert len(calls) == 8 - 3  # only the people not finished before the kill
    np.testing.assert_allclose(lp, whole, atol=1e-12)
    # the scores say their precision and the time of the piece before (kept in the parts)
    assert figures["score_precision"] == "fp32" and figures["score_seconds_earlier"] > 0
    # another model (refitted: a new id) starts over rather than mixing in the first one's rows
    other = api.fit("icl", panel_csv, tmp_path / "icl", "quick", scheme="titles", base=tiny_base, shots=1,
                    precision="fp32", scoring="constrained")
    assert other.fingerprint() != m.fingerprint()
    calls.clear()
    other.log_probs_and_figures(test, tmp_path / "parts")
    assert len(calls) == 8


def test_same_seed_same_lora_model(panel_csv, tiny_base, tmp_path):
    """The adapters' initial weights come from the seed: two fits with one seed give one model."""
    fits = [api.fit("llm", panel_csv, tmp_path / f"m{i}", "quick", scheme="titles", base=tiny_base, lora=True,
                    **{**LLM_QUICK, "max_steps": 2}) for i in range(2)]
    few = api.events_for(api.data_spec(panel_csv, scheme="titles")).test.sample_persons(3, 0)
    np.testing.assert_array_equal(fits[0].log_probs(few), fits[1].log_probs(few))
    card = (tmp_path / "m0" / "README.md").read_text()
    assert "precision (train): fp32 (asked for)" in card


def test_career_resumes_after_the_last_finished_epoch(small_events, tmp_path, monkeypatch):
    """A CAREER fit killed after an epoch continues from it and ends where an uninterrupted fit ends."""
    settings = dict(layers=1, d=32, heads=2, ff=64, epochs=4, patience=10, lr=3e-3, warmup_steps=5)
    whole = Career(**settings).fit(small_events)
    save, calls = Career._save_checkpoint, []

    def killed_after_two_epochs(self, *a, **k):
        save(self, *a, **k)
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(Career, "_save_checkpoint", killed_after_two_epochs)
    m = Career(**settings)
    m.work_dir = tmp_path / "career"
    with pytest.raises(KeyboardInterrupt):
        m.fit(small_events)
    monkeypatch.setattr(Career, "_save_checkpoint", save)
    score, epochs_run = Career.log_probs, []
    monkeypatch.setattr(Career, "log_probs", lambda self, ev: (epochs_run.append(1), score(self, ev))[1])
    again = Career(**settings)
    again.work_dir = tmp_path / "career"
    again.fit(small_events)
    assert again.meta["fit_epochs"] == 4 and len(epochs_run) == 2  # only epochs 3 and 4 ran again
    monkeypatch.setattr(Career, "log_probs", score)
    test = small_events.test
    np.testing.assert_allclose(again.log_probs(test), whole.log_probs(test), atol=1e-5)
    again.save(tmp_path / "career", {"data": "x"})
    assert not (tmp_path / ".career.checkpoints").exists()  # spent once the model is saved


@pytest.mark.parametrize("arch", [a for a in ARCHITECTURES if a != "llama"])  # llama: the default
def test_lora_fine_tune_of_other_architectures(panel_csv, tmp_path, arch):
    """`--base FOLDER` of a Qwen2, Mistral or Gemma 3 model (tiny, random, made here): LoRA on its
    attention and MLP projections lowers the held-out loss, and the saved adapter scores the same."""
    from laborllm.lm.tiny import tiny_model_folder
    from laborllm.text.templates import ResumeTemplate, state_codes

    events = api.events_for(api.data_spec(panel_csv, scheme="titles"))
    codes = state_codes(events.states, events.panel.scheme)
    texts = [ResumeTemplate("titles").text(g, codes) for _, g in events.panel.frame.groupby("person_id")]
    base = str(tiny_model_folder(tmp_path / arch, texts, vocab_size=500, hidden=48, arch=arch))
    m = api.fit("llm", panel_csv, tmp_path / "llm", "quick", scheme="titles", base=base, lora=True,
                **{**LLM_QUICK, "lr": 1e-2})
    before = api.make_model("llm", "quick", base=base, epochs=0, precision="fp32").fit(events)
    assert held_out_loss(m, events) < held_out_loss(before, events) - 0.1
    few = events.test.where(np.arange(len(events.test)) < 6)
    np.testing.assert_allclose(load_model(tmp_path / "llm").log_probs(few), m.log_probs(few), atol=1e-5)


def test_scoring_split_across_two_processes_equals_one(panel_csv, tiny_base, tmp_path):
    """`torchrun --nproc_per_node 2 -m laborllm.cli evaluate` (gloo, CPU): each process scores a share
    of the people and the gathered log-probabilities equal one process's."""
    import shutil

    from laborllm.files import read_log_probs

    api.fit("llm", panel_csv, tmp_path / "one", "quick", scheme="titles", base=tiny_base, epochs=0,
            precision="fp32", scoring="constrained")
    shutil.copytree(tmp_path / "one", tmp_path / "two")
    api.evaluate([tmp_path / "one"], "test", n_boot=10)
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                        "--master_addr", "127.0.0.1", "--master_port", port,
                        "-m", "laborllm.cli", "evaluate", str(tmp_path / "two"), "--json"],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert len(json.loads(r.stdout)) == 1  # one process reported (two would print two JSON documents)
    one, _ = read_log_probs(tmp_path / "one" / "logprobs-test.parquet")
    two, _ = read_log_probs(tmp_path / "two" / "logprobs-test.parquet")
    np.testing.assert_allclose(two, one, atol=1e-6)
    assert not list((tmp_path / "two").glob("*.partial*"))  # each process's parts cleaned up


def test_reading_a_fitted_llm_another_way_leaves_it_as_fitted(panel_csv, tiny_base, tmp_path):
    """`read_as` (how `predict`, `run` and the benchmarks choose the scoring mode and precision) gives
    a copy read the other way; the fitted model, its settings and its scores are unchanged, and a
    setting that defines the fit cannot be changed after it."""
    from laborllm.errors import UserError

    m = api.fit("llm", panel_csv, tmp_path / "llm", "quick", scheme="titles", base=tiny_base, epochs=0,
                precision="fp32", scoring="renormalised")
    test = api.events_for(api.data_spec(panel_csv, scheme="titles")).test
    few = test.where(np.arange(len(test)) < 6)
    before = m.log_probs(few)
    c = m.read_as(scoring="constrained")
    assert m.config["scoring"] == "renormalised" and c.config["scoring"] == "constrained"
    assert c.normalization.startswith("exact, constrained") and not m.normalization.startswith("exact, constrained")
    assert np.abs(c.log_probs(few) - before).max() > 1e-4  # really read the other way
    np.testing.assert_array_equal(m.log_probs(few), before)
    with pytest.raises(UserError, match="cannot change after fitting"):
        m.read_as(lr=1.0)
    with pytest.raises(UserError, match="cannot change after fitting"):
        Markov().read_as(order=2)


def test_a_fitted_lora_llm_packaged_with_its_results_gives_its_probabilities(panel_csv, tiny_base, tmp_path, monkeypatch):
    """scripts/package_model.py: the adapter in bf16, the run's test results in the card, the same
    probabilities as the fitted folder (to bf16 rounding), and an existing package kept unless replaced."""
    from safetensors.torch import load_file

    src = tmp_path / "run" / "models" / "llm-titles"
    api.fit("llm", panel_csv, src, "quick", scheme="titles", base=tiny_base, lora=True, **LLM_QUICK)
    rows = api.evaluate([src], "test", n_boot=20)
    (tmp_path / "run" / "metrics.json").write_text(json.dumps(rows))
    script = [sys.executable, str(Path(__file__).parents[1] / "scripts" / "package_model.py"), str(src), "tiny-titles",
              "--run", str(tmp_path / "run"), "--dest", str(tmp_path / "assets")]
    r = subprocess.run(script, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "loads only where that exists" in r.stderr  # a base of this machine's: said, not hidden
    out = tmp_path / "assets" / "tiny-titles"
    assert {str(t.dtype) for t in load_file(out / "adapter" / "adapter_model.safetensors").values()} == {"torch.bfloat16"}
    assert "base_dir" not in json.loads((out / "model.json").read_text())
    assert f"test perplexity {rows[0]['perplexity']:.3f}" in (out / "README.md").read_text()
    test = api.events_for(api.data_spec(panel_csv, scheme="titles")).test
    few = test.where(np.arange(len(test)) < 20)
    np.testing.assert_allclose(load_model(out).log_probs(few), load_model(src).log_probs(few), atol=0.02)
    # and by name, as `laborllm predict NAME` loads it (on the base its settings name)
    from laborllm.models import packaged

    monkeypatch.setattr(packaged, "PACKAGED", {"tiny-titles": "a test model"})
    monkeypatch.setattr(packaged, "PACKAGED_DIR", tmp_path / "assets")
    np.testing.assert_array_equal(load_model("tiny-titles").log_probs(few), load_model(out).log_probs(few))
    card = (out / "README.md").read_text()
    r = subprocess.run(script, capture_output=True, text=True)
    assert r.returncode == 2 and "--replace" in r.stderr and (out / "README.md").read_text() == card
    # a name that is not one plain folder name never makes --dest, or its parent, the folder replaced
    (tmp_path / "assets" / "important.txt").write_text("mine")
    for name in ("", "..", ".", "a/b"):
        bad = script[:3] + [name] + script[4:] + ["--replace"]
        r = subprocess.run(bad, capture_output=True, text=True)
        assert r.returncode == 2 and "one plain folder name" in r.stderr and "Traceback" not in r.stderr
    assert (tmp_path / "assets" / "important.txt").read_text() == "mine" and (out / "README.md").is_file()
    r = subprocess.run(script[:2] + [str(tmp_path / "nothere"), "x"], capture_output=True, text=True)
    assert r.returncode == 2 and "not a laborllm model folder" in r.stderr and "Traceback" not in r.stderr


def test_base_identity_is_its_weights_not_the_library_that_wrote_them(tiny_base, tmp_path):
    """A fresh install with another transformers rewrites `transformers_version` in the converted
    base's config: the base, and every model fitted on it, must keep its identity. A changed weight
    must change it."""
    import shutil

    from safetensors.torch import load_file, save_file

    from laborllm.lm.loading import base_fingerprint

    copy_ = Path(shutil.copytree(tiny_base, tmp_path / "copy"))
    assert base_fingerprint(str(copy_)) == base_fingerprint(tiny_base)  # by content, whatever the path
    cfg = json.loads((copy_ / "config.json").read_text())
    cfg["transformers_version"] = "9.99.0"
    (copy_ / "config.json").write_text(json.dumps(cfg, indent=4))  # other layout, other writer
    weights = copy_ / "model.safetensors"
    tensors = load_file(weights)
    save_file(dict(reversed(list(tensors.items()))), weights, metadata={"format": "pt", "writer": "other"})
    assert base_fingerprint(str(copy_)) == base_fingerprint(tiny_base)
    name = sorted(tensors)[0]
    tensors[name] = tensors[name].clone()
    tensors[name].view(-1)[0] += 1e-3
    save_file(tensors, weights, metadata={"format": "pt"})
    assert base_fingerprint(str(copy_)) != base_fingerprint(tiny_base)
    cfg["rms_norm_eps"] = 1e-3  # a setting that changes what the weights compute
    save_file(load_file(Path(tiny_base) / "model.safetensors"), weights)
    (copy_ / "config.json").write_text(json.dumps(cfg))
    assert base_fingerprint(str(copy_)) != base_fingerprint(tiny_base)


def test_career_refuses_to_pretrain_on_the_target_panel(tmp_path):
    from laborllm.models.career import Career

    csv = men_csv(tmp_path / "men.csv")
    events = api.events_for(api.data_spec(str(csv), scheme="titles"))
    for pre in (str(csv), "nlsy79-males"):  # the file itself, and the same people under their embedded name
        with pytest.raises(UserError, match="is the target panel itself"):
            Career(layers=1, d=16, heads=2, ff=32, epochs=1, pretrain_data=pre).fit(events)


def test_pool_equal_to_the_target_is_refused_however_the_path_is_written(tmp_path, monkeypatch):
    from laborllm.models.llm import LLM

    csv = men_csv(tmp_path / "panel.csv")
    monkeypatch.chdir(tmp_path)
    events = api.events_for(api.data_spec("panel.csv", scheme="titles"))
    for pool in ("panel.csv", "./panel.csv", str(csv), "nlsy79-males"):
        with pytest.raises(UserError, match="is the target panel itself"):
            LLM(pool=[pool])._pool_panels(events)


def test_pooling_numeric_codes_across_titles_panels_is_refused():
    from laborllm.models.llm import LLM

    events = api.events_for(api.data_spec("nlsy79-males"))
    with pytest.raises(UserError, match="codes mean different occupations"):
        LLM(variant="codes", pool=["nlswork"])._pool_panels(events)
    assert LLM(variant="titles", pool=["nlswork"])._pool_panels(events)  # titles: accepted


def test_crosswalk_rows_must_name_real_states_on_both_sides(tmp_path):
    from laborllm.models.career import Career

    x = tmp_path / "x.csv"
    x.write_text("state,target\nClerical workers,Clerical\ncraftsmen,Craftsmen and Foremen\n")  # wrong case
    men = ll.load_panel("nlsy79-males")
    with pytest.raises(UserError, match=r"state state\(s\) not in the pretraining panel: craftsmen \(line\(s\) 3\)"):
        Career(pretrain_data="nlswork", pretrain_states=str(x))._pretrain_panel(men)


def test_a_damaged_checkpoint_falls_back_to_the_one_before(tmp_path, caplog):
    from laborllm.lm.checkpoints import set_aside, latest_checkpoint

    ckpts = tmp_path / ".m.checkpoints"
    for step in (4, 8):
        (ckpts / f"checkpoint-{step}").mkdir(parents=True)
        (ckpts / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    assert latest_checkpoint(ckpts).name == "checkpoint-8"
    assert set_aside(latest_checkpoint(ckpts), EOFError("truncated optimizer.pt"), "m").name == "checkpoint-4"
    assert (ckpts / "damaged-checkpoint-8").is_dir() and "cannot be read" in caplog.text
    with pytest.raises(UserError, match="only checkpoint cannot be read"):
        set_aside(ckpts / "checkpoint-4", EOFError("x"), "m")


def test_one_precision_decision_for_training_scoring_and_features(monkeypatch):
    """Asked for wins; under auto a started piece of the same work keeps its precision, else the
    machine decides, for training (AMX) apart from scoring (native bf16)."""
    import laborllm.lm.precision as precision
    from laborllm.lm.precision import choose_precision

    monkeypatch.setattr(precision, "machine_bf16", lambda purpose: purpose == "score")  # native bf16, no AMX
    monkeypatch.setattr(precision.torch.cuda, "is_available", lambda: False)
    assert choose_precision("fp32", "score", started=True) == (False, "fp32 (asked for)")
    assert choose_precision("auto", "train")[0] is False and choose_precision("auto", "score")[0] is True
    assert choose_precision("auto", "score", started=False) == (False, "fp32 (continues a run started in it)")
    assert "without AMX" in choose_precision("auto", "train")[1]
    with pytest.raises(UserError, match="unknown precision 'fp16'"):
        choose_precision("fp16")
