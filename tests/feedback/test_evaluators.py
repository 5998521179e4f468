import collections
import re
from dataclasses import replace

import pytest

from cowest.config import StrongConfig, TaskConfig
from cowest.feedback.evaluators import JUDGE_RETRIES, Evaluator
from cowest.models.strong import StrongClient
from cowest.tasks import get_task
from cowest.testing.openai_server import OpenAITestServer


@pytest.fixture(scope="module")
def task():
    return get_task(TaskConfig(name="demo"))


@pytest.fixture(scope="module")
def ex(task):
    return task.load("train")[0]  # gold B


def _candidate(messages):
    return re.search(r"<response>\n(.*?)\n</response>", messages[-1]["content"], re.S).group(1)


def judge_server():
    """A judge that answers 'Score: 9' for a correct candidate, 'Score: 2' for a wrong one, gibberish
    for a candidate containing 'GARBLE' (always) or 'ONCE' (first time only)."""
    seen = collections.Counter()

    def responder(messages, body):
        cand = _candidate(messages)
        seen[cand] += 1
        if "GARBLE" in cand or ("ONCE" in cand and seen[cand] == 1):
            return "The candidate is hard to assess."
        return "Fine.\nScore: 9" if cand.rstrip().endswith("Answer: B") else "Wrong letter.\nScore: 2"

    return OpenAITestServer(responder)


def client(srv, tmp_path):
    cfg = StrongConfig(base_url=srv.base_url, api_key_env=None, max_retries=0)
    return StrongClient(cfg, cache_path=tmp_path / "cache.sqlite", progress=False)


def test_metric_evaluator_uses_the_task_reward(task, ex):
    ev = Evaluator("metric")
    got = ev.score(task, [(ex, "x\nAnswer: B"), (ex, "x\nAnswer: A"), (ex, "no answer here")])
    assert [s.score for s in got] == [1.0, 0.0, 0.0]
    assert [s.answer for s in got] == ["B", "A", None]


def test_judge_scores_normalised_and_unparseable_retried_then_missing(task, ex, tmp_path):
    with judge_server() as srv:
        c = client(srv, tmp_path)
        ev = Evaluator("judge", judge_client=c)
        items = [(ex, "ok\nAnswer: B"), (ex, "hmm\nAnswer: A"), (ex, "ONCE\nAnswer: B"), (ex, "GARBLE\nAnswer: B")]
        got = ev.score(task, items)
        c.close()
        assert got[0].score == pytest.approx((9 - 1) / 9) and got[0].judge == 9.0
        assert got[1].score == pytest.approx((2 - 1) / 9)
        # unreadable once: asked again, then scored
        assert got[2].judge == 9.0 and len(got[2].judge_texts) == 2
        # never readable: asked 1 + JUDGE_RETRIES times, then missing (None), never 0
        assert got[3].score is None and got[3].judge is None
        assert len(got[3].judge_texts) == 1 + JUDGE_RETRIES
        assert srv.requests_total == 4 + 2 + 1  # first pass, retry 1 (two items), retry 2 (one item)
        # retries are new samples at a non-zero temperature (a greedy retry would repeat itself)
        assert [b.get("temperature") for b in srv.bodies[-1:]] == [0.7]


def test_both_mixes_judge_and_metric_with_configured_weight(task, ex, tmp_path):
    with judge_server() as srv:
        c = client(srv, tmp_path)
        ev = Evaluator("both", judge_client=c, judge_weight=0.25)
        wrong, right, garbled = ev.score(task, [(ex, "a\nAnswer: A"), (ex, "b\nAnswer: B"), (ex, "GARBLE\nAnswer: B")])
        c.close()
    assert wrong.score == pytest.approx(0.25 * (1 / 9) + 0.75 * 0.0)
    assert right.score == pytest.approx(0.25 * (8 / 9) + 0.75 * 1.0)
    assert garbled.score is None  # a missing judge score is missing, not metric-only


def test_identical_outputs_are_judged_once(task, ex, tmp_path):
    with judge_server() as srv:
        c = client(srv, tmp_path)
        got = Evaluator("judge", judge_client=c).score(task, [(ex, "same\nAnswer: B")] * 3)
        c.close()
        assert srv.requests_total == 1
    assert [s.judge for s in got] == [9.0] * 3


def test_judge_needs_a_client():
    with pytest.raises(ValueError):
        Evaluator("judge")


def test_a_question_s_answers_are_judged_one_after_another(task, tmp_path):
    """Feedback scores every z first, then the drafts' answers; the judge asks question by question, so the
    prompts that share a question and its gold reach a one-slot server next to each other."""
    a, b = task.load("train")[:2]
    items = [(a, "z\nAnswer: B"), (b, "z\nAnswer: A"), (a, "d1\nAnswer: A"), (a, "d2\nAnswer: C"), (b, "d1\nAnswer: D")]
    with judge_server() as srv:
        cfg = StrongConfig(base_url=srv.base_url, api_key_env=None, max_retries=0, max_concurrency=1)
        with StrongClient(cfg, progress=False) as c:
            got = Evaluator("judge", judge_client=c).score(task, items)
        asked = [_candidate(body["messages"]) for body in srv.bodies]
    assert asked == [items[i][1] for i in (0, 2, 3, 1, 4)]
    assert [s.judge for s in got] == [9.0, 2.0, 2.0, 2.0, 2.0]  # results still in the items' order
