"""The likelihood evaluator: p(gold option) at the strong model's answer, from the answer's own log-probs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from cowest.config import StrongConfig, TaskConfig
from cowest.errors import ConfigError, StrongAPIError
from cowest.feedback.evaluators import Evaluator, check_evaluator
from cowest.feedback.likelihood import gold_probability
from cowest.models.strong import ChatRequest, StrongClient
from cowest.tasks import get_task
from cowest.tasks.base import Example
from cowest.testing.openai_server import OpenAITestServer, logprobs_content, tokenize

LETTERS = ("A", "B", "C", "D")


def _lp(text, alts=None):
    """The client's compact form of the fake server's log-probs."""
    return [{"token": t["token"], "logprob": t["logprob"], "top": [[a["token"], a["logprob"]] for a in t["top_logprobs"]]}
            for t in logprobs_content(text, alts)]


@pytest.mark.parametrize("text, alts_at, answer", [
    ("Thinking.\nAnswer: B", " B", "B"),
    ("Thinking.\nAnswer: **B**", "B", "B"),
    ("Thinking.\nAnswer: (B) the refund team", "B", "B"),
    ("The answer is B. Answer: the refund team B", " B", "B"),  # the last marker states no letter: the one before
    ("I would pick B here.", " B", "B"),  # no marker: the parsed letter's last token
])
def test_probability_of_the_gold_letter_at_the_answer(text, alts_at, answer):
    assert alts_at in tokenize(text)
    lp = _lp(text, {alts_at: {alts_at: 0.6, alts_at.replace("B", "C"): 0.3, alts_at.replace("B", "A"): 0.1}})
    assert gold_probability(lp, "B", LETTERS, answer) == pytest.approx(0.6)
    assert gold_probability(lp, "C", LETTERS, answer) == pytest.approx(0.3)
    assert gold_probability(lp, "D", LETTERS, answer) == 0.0  # outside the alternatives: below all of them


def test_spellings_of_one_letter_add_up_and_no_answer_is_none():
    lp = _lp("Answer: B", {" B": {" B": 0.5, "B": 0.2, " C": 0.3}})
    assert gold_probability(lp, "B", LETTERS, "B") == pytest.approx(0.7)
    assert gold_probability(_lp("I cannot tell."), "B", LETTERS, None) is None
    # the sampled token counts even when the endpoint leaves it out of the alternatives
    lp = _lp("Answer: B", {" B": {" B": 0.4, " C": 0.6}})
    lp[-1]["top"] = [[" C", math.log(0.6)]]
    assert gold_probability(lp, "B", LETTERS, "B") == pytest.approx(0.4)


def _demo():
    task = get_task(TaskConfig(name="demo"))
    return task, task.load("train")[0]  # gold B


def test_evaluator_scores_from_the_endpoints_logprobs(tmp_path):
    task, ex = _demo()
    sure, unsure = "Sure.\nAnswer: B", "Unsure.\nAnswer: B"

    def responder(messages, body):
        text = messages[-1]["content"]
        p = 0.9 if text == "sure" else 0.55
        out = sure if text == "sure" else unsure if text == "unsure" else "no idea"
        return {"content": out, "logprobs": logprobs_content(out, {" B": {" B": p, " A": 1 - p}})}

    with OpenAITestServer(responder) as srv:
        cfg = StrongConfig(base_url=srv.base_url, model="m", api_key_env=None, max_retries=0)
        with StrongClient(cfg, cache_path=tmp_path / "c.sqlite", progress=False) as c:
            ev = Evaluator("likelihood")
            res = c.chat_batch([ChatRequest(messages=[{"role": "user", "content": q}], top_logprobs=ev.top_logprobs)
                                for q in ("sure", "unsure", "none")], tag="t")
    got = ev.score(task, [(ex, r.text) for r in res], logprobs=[r.logprobs for r in res])
    assert [s.metric for s in got] == [1.0, 1.0, 0.0]  # the 0/1 metric cannot tell the first two apart
    assert [s.score for s in got] == [pytest.approx(0.9), pytest.approx(0.55), 0.0]
    assert got[2].likelihood is None  # no readable option: the metric's 0
    with pytest.raises(StrongAPIError, match="log-probs .* returned none"):
        ev.score(task, [(ex, sure)], logprobs=[None])


def test_likelihood_needs_a_choice_task_and_metric_names_a_score():
    check_evaluator("likelihood", _demo()[0])
    ifqa = get_task(TaskConfig(name="ifqa"))
    with pytest.raises(ConfigError, match=r"^feedback.evaluator=likelihood needs a multiple-choice task .* 'ifqa' "
                                          r"has free-form answers"):
        check_evaluator("likelihood", ifqa)
    check_evaluator("metric", ifqa)


def test_metric_is_graded_token_f1_for_free_form_answers():
    ifqa = get_task(TaskConfig(name="ifqa"))
    ex = Example(id="1", question="q", gold=["Barack Obama"])
    out = [(ex, "Answer: Obama"), (ex, "Answer: Barack Obama"), (ex, "Answer: Bush")]
    assert [s.score for s in Evaluator("metric").score(ifqa, out)] == [pytest.approx(2 / 3), 1.0, 0.0]
    assert [s.score for s in Evaluator("metric", metric="em").score(ifqa, out)] == [0.0, 1.0, 0.0]
    with pytest.raises(ConfigError, match=r"^feedback.metric=accuracy is not a per-item score of task 'ifqa'; "
                                          r"valid: auto, em, f1"):
        Evaluator("metric", metric="accuracy").score(ifqa, out)
    with pytest.raises(ConfigError, match="feedback.metric=accuracy"):  # checked up front, before any drafting
        check_evaluator("metric", ifqa, "accuracy", ex)
    check_evaluator("metric", ifqa, "em", ex)


# --------------------------------------------------------------------------------------------------
# the feedback stage with it (a stub weak model, the local server as the strong model)


def _gold():
    task, _ = _demo()
    return {ex.question.strip(): ex.gold[0] for ex in task.load("train")}


GOLD = _gold()


class HintingWeak:
    """Sample 0 of each question names the gold letter, the other samples do not."""

    def generate(self, prompts, *, n, **kw):
        out = []
        for msgs in prompts:
            gold = next(g for q, g in GOLD.items() if q in msgs[-1]["content"])
            out.append([f"It is {gold}." if j == 0 else f"No idea {j}." for j in range(n)])
        return out


def graded_responder(messages, body):
    """Alone: a wrong letter, p(gold) = 0.3. With a draft naming the gold letter: the gold letter, p = 0.8; with
    another draft: the same wrong letter as alone, less sure of the gold one (p = 0.2)."""
    import re

    user = messages[-1]["content"]
    gold = next(g for q, g in GOLD.items() if q in user)
    wrong = "A" if gold != "A" else "C"
    m = re.search(r"<draft>\n(.*?)\n</draft>", user, re.S)
    helped = m is not None and f"It is {gold}." in m.group(1)
    p = 0.3 if m is None else 0.8 if helped else 0.2
    said = gold if helped else wrong
    text = f"Checked.\nAnswer: {said}"
    alts = {f" {said}": {f" {gold}": p, f" {wrong}": 1 - p}}
    return {"content": text, "logprobs": logprobs_content(text, alts)}


@pytest.mark.parametrize("evaluator", ["metric", "likelihood"])
def test_feedback_deltas_are_graded_and_the_evaluator_figures_recorded(tmp_path, evaluator, monkeypatch):
    import json

    import cowest.models.local_server as local_server
    from cowest.config import load_config
    from cowest.feedback.collect import run_feedback
    from cowest.io import read_jsonl

    asked_logprobs = []  # a managed llama.cpp server computes log-probs only for the stage that reads them
    real = local_server.strong_endpoint
    monkeypatch.setattr(local_server, "strong_endpoint",
                        lambda cfg, log_dir, *, logprobs=False: asked_logprobs.append(logprobs) or real(cfg, log_dir))

    with OpenAITestServer(graded_responder) as srv:
        cfg = load_config(None, [
            "task.name=demo", "task.n_train=4", "weak.model=/nonexistent/stub", f"output_dir={tmp_path}", "name=lk",
            "feedback.k=4", f"strong.base_url={srv.base_url}", "strong.api_key_env=null", "strong.max_retries=0",
            f"feedback.evaluator={evaluator}"])
        stats = run_feedback(cfg, 1, weak=HintingWeak())
        bodies = list(srv.bodies)
    records = read_jsonl(cfg.run_dir / "feedback" / "round1" / "records.jsonl")
    want = [1.0, 0.0, 0.0, 0.0] if evaluator == "metric" else [0.5, -0.1, -0.1, -0.1]
    for r in records:
        assert r["deltas"] == [pytest.approx(d) for d in want]
    assert all(b.get("logprobs") is (True if evaluator == "likelihood" else None) for b in bodies)
    assert asked_logprobs == [evaluator == "likelihood"]
    if evaluator == "likelihood":
        assert all(b["top_logprobs"] == 10 for b in bodies)
        assert records[0]["likelihood"]["z"] == [pytest.approx(0.3)] and stats["likelihood_fallbacks"] == 0
    # Δ = 0 for 3 drafts in 4 under the 0/1 metric, for none under the likelihood
    assert stats["delta_zero_share"] == (0.75 if evaluator == "metric" else 0.0)
    assert stats["pairs"] == 4 * 3 and stats["pairs_per_question"] == 3.0
    # per question: 1 strong-alone request and 4 distinct drafts, so 5 requests for 3 pairs
    assert stats["per_pair"] == {"strong_requests": round(5 / 3, 2), "strong_calls_paid": round(5 / 3, 2),
                                 "strong_tokens_paid": round(stats["strong_tokens"] / 12, 2)}
    assert json.loads((cfg.run_dir / "feedback" / "round1" / "feedback_stats.json").read_text())["per_pair"]


def test_a_free_form_task_is_refused_before_any_drafting(tmp_path):
    from cowest.config import load_config
    from cowest.feedback.collect import run_feedback

    class NeverDrafts:
        def generate(self, *a, **kw):
            raise AssertionError("drafted")

    data = Path(__file__).parents[1] / "fixtures" / "tasks" / "ifqa"
    cfg = load_config(None, ["task.name=ifqa", f"task.data={data}", f"output_dir={tmp_path}", "name=ff",
                             "feedback.evaluator=likelihood", "strong.api_key_env=null"])
    with pytest.raises(ConfigError, match="needs a multiple-choice task"):
        run_feedback(cfg, 1, weak=NeverDrafts(), strong=object())
