"""Feedback end to end: the tiny weak model drafts, a local OpenAI-protocol server plays the strong model.

The server's strong model answers a question correctly only when the weak draft it is shown contains
the gold letter; alone it is always wrong. So Δ = 1 exactly for drafts that contain the gold letter
and 0 otherwise, which the test can check draft by draft.

The draft-journal tests (fast, not marked slow) draft with a stub weak model whose drafts change with
every call: the fault a real weak model shows on some CPUs (bf16 sampling not bit-reproducible across
processes), which cannot be produced here on demand.
"""

import json
import re

import pytest

from cowest.config import load_config
from cowest.io import read_jsonl
from cowest.models.strong import StrongAPIError
from cowest.tasks import get_task
from cowest.testing.openai_server import OpenAITestServer

slow = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    """The tiny model with its 600-token built-in tokenizer: a 49k-token vocabulary would make the
    logits, and so every training step, ~40x bigger."""
    from support.tiny import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny_small_vocab"), tokenizer="builtin")

N_TRAIN = 8


def _gold_by_question():
    task = get_task(load_config(None, ["task.name=demo"]).task)
    return {ex.question.strip(): ex.gold[0] for ex in task.load("train")}


GOLD = _gold_by_question()


def helps(draft, gold):
    return gold.lower() in draft.lower()


def responder(messages, body):
    user = messages[-1]["content"]
    question = next(q for q in GOLD if q in user)
    gold = GOLD[question]
    wrong = "A" if gold != "A" else "B"
    m = re.search(r"<draft>\n(.*?)\n</draft>", user, re.S)
    if m is None:  # the strong model alone
        return f"Thinking it over.\nAnswer: {wrong}"
    return f"Using the draft.\nAnswer: {gold if helps(m.group(1), gold) else wrong}"


def _cfg(tmp_path, tiny_model_dir, base_url, name="fb", *extra):
    return load_config(None, [
        "task.name=demo", f"task.n_train={N_TRAIN}", f"weak.model={tiny_model_dir}", f"output_dir={tmp_path}",
        f"name={name}", "weak.max_new_tokens=12", "weak.batch_size=4", "feedback.k=4", "feedback.temperature=1.0",
        f"strong.base_url={base_url}", "strong.api_key_env=null", "strong.max_concurrency=1", "strong.max_retries=0",
        "sft.max_steps=1", "sft.batch_size=2", "sft.max_length=512", "sft.lora_r=4", *extra,
    ])


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory, tiny_model_dir):
    """One SFT run (1 step) whose adapter the feedback tests draft with."""
    from cowest.sft.train import run_sft

    root = tmp_path_factory.mktemp("fb_runs")
    cfg = _cfg(root, tiny_model_dir, "http://127.0.0.1:9/v1", name="base")
    run_sft(cfg)
    return cfg.run_dir


def _with_sft(tmp_path, sft_run, cfg):
    import shutil

    shutil.copytree(sft_run / "sft", cfg.run_dir / "sft")
    return cfg


@slow
def test_feedback_end_to_end(tmp_path, tiny_model_dir, sft_run):
    from cowest.feedback.collect import run_feedback
    from cowest.feedback.pairs import make_pairs

    with OpenAITestServer(responder) as srv:
        cfg = _with_sft(tmp_path, sft_run, _cfg(tmp_path, tiny_model_dir, srv.base_url))
        stats = run_feedback(cfg, 1, chunk_size=3)
        n_requests = srv.requests_total
    stage = cfg.run_dir / "feedback" / "round1"
    records = read_jsonl(stage / "records.jsonl")
    assert len(records) == N_TRAIN and len({r["id"] for r in records}) == N_TRAIN
    n_collab = 0
    for r in records:
        assert len(r["drafts"]) == 4 and len(r["collab_outputs"]) == 4 and len(r["deltas"]) == 4
        assert r["z_scores"] == [0.0] and r["z_mean"] == 0.0  # strong alone: always wrong
        for d, delta, label in zip(r["drafts"], r["deltas"], r["labels"]):
            want = 1.0 if helps(d, r["gold"][0]) else 0.0
            assert delta == want
            assert label == ("chosen" if want > 0 else "rejected")
        n_collab += len(set(r["drafts"]))
    # every paid request: one z per question plus one per distinct draft
    assert n_requests == N_TRAIN + n_collab
    assert stats["strong_calls"] == n_requests
    assert stats["strong_calls_by_tag"] == {"feedback_z": N_TRAIN, "feedback_collab": n_collab}
    assert stats["chosen"] + stats["rejected"] == 4 * N_TRAIN
    assert stats["chosen"] == sum(1 for r in records for d in r["deltas"] if d > 0)
    # pairs follow the records
    pairs = read_jsonl(stage / "pairs.jsonl")
    assert pairs == json.loads(json.dumps(make_pairs(records, "all", 0.0, 4, None, cfg.seed)))
    assert stats["pairs"] == len(pairs)
    mixed = [r for r in records if 0 < sum(1 for d in r["deltas"] if d > 0) < 4]
    assert stats["questions_with_pairs"] == len(mixed) > 0
    for p in pairs:
        assert helps(p["chosen"][0]["content"], GOLD[_q(p)]) and not helps(p["rejected"][0]["content"], GOLD[_q(p)])
    assert sum(stats["no_pair"].values()) + stats["questions_with_pairs"] == N_TRAIN
    assert sum(stats["delta_histogram"]["counts"]) == 4 * N_TRAIN
    # each draft's own answer is scored: the pair signal counts every pair on one side
    for r in records:
        assert r["draft_scores"] == [float(a == r["gold"][0]) for a in r["draft_answers"]]
    sig = stats["pair_signal"]
    assert sig["pairs"] == len(pairs) == sig["chosen_answers_better"] + sig["as_well"] + sig["chosen_answers_worse"]
    on_disk = json.loads((stage / "feedback_stats.json").read_text())
    assert on_disk["pairs"] == stats["pairs"] and (stage / ".done.json").exists()
    # finished: a second call makes no request at all
    with OpenAITestServer(responder) as srv2:
        cfg2 = _cfg(tmp_path, tiny_model_dir, srv2.base_url)
        assert run_feedback(cfg2, 1)["pairs"] == stats["pairs"]
        assert srv2.requests_total == 0
    assert sum(stats["pair_labels"]["chosen"].values()) == len(pairs) == sum(stats["pair_labels"]["rejected"].values())
    # another pairing rule re-derives the pairs from the records: no request either
    with OpenAITestServer(responder) as srv3:
        cfg3 = _cfg(tmp_path, tiny_model_dir, srv3.base_url, "fb", "feedback.pairing=label_balanced")
        balanced = run_feedback(cfg3, 1)
        assert srv3.requests_total == 0
    assert balanced["pairing"]["rule"] == "label_balanced" and balanced["pairs"] <= stats["pairs"]
    assert read_jsonl(stage / "pairs.jsonl") == json.loads(json.dumps(
        make_pairs(records, "label_balanced", 0.0, 4, None, cfg.seed)))


def _q(pair):
    user = pair["prompt"][-1]["content"]
    return next(q for q in GOLD if q in user)


@slow
def test_resume_after_a_failure_pays_for_nothing_twice(tmp_path, tiny_model_dir, sft_run):
    from cowest.feedback.collect import run_feedback

    fail_after = 20  # past the first chunk (at most 3 + 3*4 requests), before the end
    with OpenAITestServer(responder, faults=lambda n, body: "ok" if n < fail_after else "400") as srv:
        cfg = _with_sft(tmp_path, sft_run, _cfg(tmp_path, tiny_model_dir, srv.base_url))
        with pytest.raises(StrongAPIError):
            run_feedback(cfg, 1, chunk_size=3)
        answered = [_key(b) for b in srv.bodies[:fail_after]]
    stage = cfg.run_dir / "feedback" / "round1"
    done = read_jsonl(stage / "records.jsonl")
    assert 0 < len(done) < N_TRAIN and len(done) % 3 == 0  # whole chunks only
    assert not (stage / ".done.json").exists()
    with OpenAITestServer(responder) as srv:
        cfg = _cfg(tmp_path, tiny_model_dir, srv.base_url)
        stats = run_feedback(cfg, 1, chunk_size=3)
        again = [_key(b) for b in srv.bodies]
    assert not set(answered) & set(again), "a request answered before the failure was sent again"
    records = read_jsonl(stage / "records.jsonl")
    # the half-done chunk reused its journaled drafts: its answered requests are used, not replaced
    needed = N_TRAIN + sum(len(set(r["drafts"])) for r in records)
    assert len(again) == needed - fail_after
    assert stats["questions"] == N_TRAIN and stats["questions_resumed"] == len(done)
    assert [r["id"] for r in records[: len(done)]] == [r["id"] for r in done]
    assert len({r["id"] for r in records}) == N_TRAIN


def _key(body):
    return json.dumps([body["messages"], body.get("temperature")], sort_keys=True)


@slow
def test_changed_config_refuses_to_resume(tmp_path, tiny_model_dir, sft_run):
    from cowest.errors import ConfigError
    from cowest.feedback.collect import run_feedback

    with OpenAITestServer(responder, faults=lambda n, body: "ok" if n < 3 else "400") as srv:
        cfg = _with_sft(tmp_path, sft_run, _cfg(tmp_path, tiny_model_dir, srv.base_url))
        with pytest.raises(StrongAPIError):
            run_feedback(cfg, 1, chunk_size=3)
        with pytest.raises(ConfigError, match="different config"):
            run_feedback(_cfg(tmp_path, tiny_model_dir, srv.base_url, "fb", "feedback.k=2"), 1)


@slow
def test_missing_sft_model_is_a_clear_error(tmp_path, tiny_model_dir):
    from cowest.errors import CowestError
    from cowest.feedback.collect import run_feedback

    cfg = _cfg(tmp_path, tiny_model_dir, "http://127.0.0.1:9/v1", "nosft")
    with pytest.raises(CowestError, match="cowest sft"):
        run_feedback(cfg, 1)


def judge_responder(messages, body):
    """The responder above, plus an LLM judge: 9/10 for the gold answer, 2/10 otherwise."""
    user = messages[-1]["content"]
    if "Gold answer:" not in user:
        return responder(messages, body)
    gold = re.search(r"Gold answer: (\S+)", user).group(1)
    cand = re.search(r"<response>\n(.*?)\n</response>", user, re.S).group(1)
    return "Checked.\nScore: 9/10" if cand.rstrip().endswith(f"Answer: {gold}") else "Wrong.\nScore: 2/10"


@slow
def test_feedback_with_the_llm_judge(tmp_path, tiny_model_dir, sft_run):
    from cowest.feedback.collect import run_feedback

    with OpenAITestServer(judge_responder) as srv:
        cfg = _with_sft(tmp_path, sft_run, _cfg(tmp_path, tiny_model_dir, srv.base_url, "fb", "feedback.evaluator=judge"))
        stats = run_feedback(cfg, 1)
    records = read_jsonl(cfg.run_dir / "feedback" / "round1" / "records.jsonl")
    lo, hi = (2 - 1) / 9, (9 - 1) / 9
    for r in records:
        assert r["z_scores"] == [pytest.approx(lo)]
        for d, delta in zip(r["drafts"], r["deltas"]):
            assert delta == pytest.approx(hi - lo if helps(d, r["gold"][0]) else 0.0)
        assert all(texts[-1].startswith(("Checked.", "Wrong.")) for texts in r["judge"]["collab"])
    # one judge call per distinct output (z outputs and collab outputs repeat a lot here)
    assert 0 < stats["strong_calls_by_tag"]["feedback_judge"] <= len(records) * 5
    assert stats["evaluator"] == "judge" and stats["missing_scores"] == 0


# --------------------------------------------------------------------------------------------------
# the draft journal (fast: a stub weak model, the local server as the strong model)

CHUNK = 3  # 8 questions: chunks of 3, 3, 2; K=4 distinct drafts each: 15, 15, 10 requests (z first)


class StubWeak:
    """A weak model whose drafts differ on every call (as bf16 sampling does across processes on some
    CPUs), so a resumed run that redrafted would ask for other strong requests than the killed one."""

    def __init__(self, tag):
        self.tag, self.seeds = tag, []

    def generate(self, prompts, *, n, seed, **kw):
        self.seeds.append(seed)
        return [[f"{self.tag} call {len(self.seeds)} q{qi} sample {j}" for j in range(n)] for qi in range(len(prompts))]


def _stub_cfg(tmp_path, base_url, *extra):
    return _cfg(tmp_path, "/nonexistent/stub-weak-model", base_url, "journal", *extra)


def _loader(monkeypatch, tag="resumed"):
    """Replace the weak-model loader with one that counts loads and hands out a fresh StubWeak."""
    from cowest.feedback import collect

    loaded = []

    def load(cfg, kind, round_):
        assert kind == "feedback"
        loaded.append(StubWeak(tag))
        return loaded[-1]

    monkeypatch.setattr(collect, "weak_for", load)
    return loaded


def _killed_run(tmp_path, fail_after, chunk_size=CHUNK):
    """A first run, stopped by a 400 at request ``fail_after``; returns (cfg, stub, answered request keys)."""
    from cowest.feedback.collect import run_feedback

    first = StubWeak("killed")
    with OpenAITestServer(responder, faults=lambda n, body: "ok" if n < fail_after else "400") as srv:
        cfg = _stub_cfg(tmp_path, srv.base_url)
        with pytest.raises(StrongAPIError):
            run_feedback(cfg, 1, weak=first, chunk_size=chunk_size)
        answered = [_key(b) for b in srv.bodies[:fail_after]]
    return cfg, first, answered


def _resume(cfg, chunk_size=CHUNK, **kw):
    from cowest.feedback.collect import run_feedback

    with OpenAITestServer(responder) as srv:
        cfg = _stub_cfg(cfg.output_dir, srv.base_url, *kw.pop("extra", ()))
        stats = run_feedback(cfg, 1, chunk_size=chunk_size, **kw)
        return stats, list(srv.bodies)


def _collab_draft(body):
    """(question, draft) of a strong+draft request; None for the strong model alone."""
    user = body["messages"][-1]["content"]
    m = re.search(r"<draft>\n(.*?)\n</draft>", user, re.S)
    return None if m is None else (next(q for q in GOLD if q in user), m.group(1))


def _stage(cfg):
    return cfg.run_dir / "feedback" / "round1"


def _check_every_request_is_used(records, *key_lists):
    """Every strong+draft request asked for is one of the final records' drafts (none thrown away)."""
    used = {(r["question"].strip(), d) for r in records for d in r["drafts"]}
    for keys in key_lists:
        for k in keys:
            messages, _ = json.loads(k)
            qd = _collab_draft({"messages": messages})
            assert qd is None or qd in used, f"paid for a draft the records do not use: {qd}"


def test_resume_reuses_journaled_drafts_not_redrafts(tmp_path, monkeypatch):
    # 15 (chunk 0) + 3 z + 2 collab of chunk 1 answered, then the run dies inside chunk 1's strong calls.
    fail_after = 20
    cfg, first, answered = _killed_run(tmp_path, fail_after)
    stage = _stage(cfg)
    assert len(read_jsonl(stage / "records.jsonl")) == CHUNK
    journal = read_jsonl(stage / "drafts.jsonl")
    assert [row["chunk"] for row in journal] == [0, 1]  # chunk 1 was journaled before its strong calls
    assert first.seeds == [row["seed"] for row in journal]

    loaded = _loader(monkeypatch)  # a resumed weak model would now draft differently
    stats, bodies = _resume(cfg)
    again = [_key(b) for b in bodies]
    records = read_jsonl(stage / "records.jsonl")
    assert [r["id"] for r in records[CHUNK:2 * CHUNK]] == journal[1]["ids"]
    assert [r["drafts"] for r in records[CHUNK:2 * CHUNK]] == journal[1]["drafts"]  # the journaled drafts, reused
    # only chunk 2 was drafted on resume (one load, one generate call with chunk 2's seed)
    assert len(loaded) == 1 and loaded[0].seeds == [journal[1]["seed"] + 1]
    assert all(d.startswith("resumed ") for r in records[2 * CHUNK:] for d in r["drafts"])
    # the resumed run asked for exactly what was still missing: nothing twice, nothing for a discarded draft
    assert not set(answered) & set(again)
    needed = N_TRAIN + sum(len(set(r["drafts"])) for r in records)
    assert len(again) == len(set(again)) == needed - fail_after
    _check_every_request_is_used(records, answered, again)
    assert stats["questions"] == N_TRAIN and stats["questions_resumed"] == CHUNK
    assert [row["chunk"] for row in read_jsonl(stage / "drafts.jsonl")] == [0, 1, 2]


def test_resume_without_the_weak_model_when_every_chunk_is_journaled(tmp_path, monkeypatch):
    # chunks 0 and 1 done (30), chunk 2's 2 z + 3 collab answered: the last chunk is half done.
    fail_after = 35
    cfg, first, answered = _killed_run(tmp_path, fail_after)
    loaded = _loader(monkeypatch)
    stats, bodies = _resume(cfg)
    assert loaded == [], "the weak model was loaded although every unfinished chunk had journaled drafts"
    records = read_jsonl(_stage(cfg) / "records.jsonl")
    assert len(records) == N_TRAIN and all(d.startswith("killed ") for r in records for d in r["drafts"])
    again = [_key(b) for b in bodies]
    assert not set(answered) & set(again)
    assert len(again) == N_TRAIN + 4 * N_TRAIN - fail_after
    _check_every_request_is_used(records, answered, again)


def test_a_torn_journal_line_is_redrafted(tmp_path, monkeypatch):
    # The kill hit while chunk 1's drafts were being journaled: no strong call for chunk 1 was made yet.
    fail_after = 15
    cfg, first, answered = _killed_run(tmp_path, fail_after)
    path = _stage(cfg) / "drafts.jsonl"
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) - 40])  # chunk 1's line cut short, no newline
    loaded = _loader(monkeypatch)
    stats, bodies = _resume(cfg)
    assert len(loaded) == 1 and len(loaded[0].seeds) == 2  # chunks 1 and 2 drafted again
    records = read_jsonl(_stage(cfg) / "records.jsonl")
    assert len(records) == N_TRAIN and stats["questions_resumed"] == CHUNK
    again = [_key(b) for b in bodies]
    assert not set(answered) & set(again)
    _check_every_request_is_used(records, answered, again)
    journal = read_jsonl(path)  # strict read: the torn line was cut off, not kept
    assert [row["chunk"] for row in journal] == [0, 1, 2]
    assert journal[1]["drafts"] == [r["drafts"] for r in records[CHUNK:2 * CHUNK]]


def test_journaled_drafts_for_other_questions_are_not_used(tmp_path, monkeypatch):
    # Journaled with chunks of 3; resumed with chunks of 4, whose ids differ: chunks 0 and 1 are redrafted.
    cfg, first, answered = _killed_run(tmp_path, 20)
    before = read_jsonl(_stage(cfg) / "drafts.jsonl")
    loaded = _loader(monkeypatch)
    _resume(cfg, chunk_size=4)
    assert len(loaded) == 1 and len(loaded[0].seeds) == 2
    records = read_jsonl(_stage(cfg) / "records.jsonl")
    assert len(records) == N_TRAIN
    assert [r["drafts"] for r in records[:CHUNK]] == before[0]["drafts"]  # finished records are kept as they were
    assert all(d.startswith("resumed ") for r in records[CHUNK:] for d in r["drafts"])
    journal = read_jsonl(_stage(cfg) / "drafts.jsonl")
    assert journal[:2] == before and [len(row["ids"]) for row in journal[2:]] == [4, 4]


def test_journal_lookup_checks_chunk_ids_seed_and_shape(tmp_path):
    from cowest.feedback.collect import journal_drafts, journaled_drafts
    from cowest.io import JsonlAppender

    with JsonlAppender(tmp_path / "drafts.jsonl", key_field="key") as j:
        journal_drafts(j, 1, ["a", "b"], 7, [["x", "y"], ["z", "w"]])
        assert journaled_drafts(j, 1, ["a", "b"], 7, 2) == [["x", "y"], ["z", "w"]]
        assert journaled_drafts(j, 1, ["a", "c"], 7, 2) is None  # other questions
        assert journaled_drafts(j, 0, ["a", "b"], 7, 2) is None  # other chunk
        assert journaled_drafts(j, 1, ["a", "b"], 8, 2) is None  # other seed
        assert journaled_drafts(j, 1, ["a", "b"], 7, 3) is None  # other K
    with JsonlAppender(tmp_path / "drafts.jsonl", key_field="key") as j:  # reopened: read back from disk
        assert journaled_drafts(j, 1, ["a", "b"], 7, 2) == [["x", "y"], ["z", "w"]]


def test_overwrite_under_another_config_clears_the_journal(tmp_path, monkeypatch):
    cfg, first, answered = _killed_run(tmp_path, 20)
    loaded = _loader(monkeypatch)
    _resume(cfg, extra=("feedback.k=2",), overwrite=True)
    journal = read_jsonl(_stage(cfg) / "drafts.jsonl")
    assert len(loaded[0].seeds) == 3 and [row["chunk"] for row in journal] == [0, 1, 2]
    assert all(len(ds) == 2 and d.startswith("resumed ") for row in journal for ds in row["drafts"] for d in ds)


def test_another_n_eval_resumes_and_so_does_a_run_with_the_legacy_fingerprint(tmp_path, monkeypatch):
    """task.n_eval only picks evaluation questions: a killed feedback run resumes under another n_eval (and a
    run started before n_eval left the fingerprint, whose marker holds the legacy one) without paying twice."""
    from cowest.feedback.collect import collection_fingerprint, stage_fingerprint
    from cowest.io import write_json

    cfg, first, answered = _killed_run(tmp_path, 20)
    old = _stub_cfg(tmp_path, "http://127.0.0.1:9/v1", "task.n_eval=7")  # an older run's n_eval
    assert collection_fingerprint(old, 1, legacy=True) != collection_fingerprint(old, 1) == collection_fingerprint(cfg, 1)
    write_json(_stage(cfg) / ".started.json", {"fingerprint": collection_fingerprint(old, 1, legacy=True)})
    _loader(monkeypatch)
    stats, bodies = _resume(cfg, extra=("task.n_eval=7",))
    assert stats["questions"] == N_TRAIN and stats["questions_resumed"] == CHUNK
    assert not set(answered) & {_key(b) for b in bodies}
    # finished: another n_eval is the same stage
    stats2, bodies2 = _resume(cfg, extra=("task.n_eval=9",))
    assert bodies2 == [] and stats2 == stats
    # a finished older run (legacy .done.json) is done as it stands: not re-marked, which would make the
    # DPO stage built on it (its fingerprint chains this one) look stale
    legacy_done = {"fingerprint": stage_fingerprint(old, 1, legacy=True)}
    write_json(_stage(cfg) / ".done.json", legacy_done)
    assert _resume(cfg, extra=("task.n_eval=7",))[1] == []
    assert json.loads((_stage(cfg) / ".done.json").read_text()) == legacy_done


def test_a_question_s_drafts_are_asked_one_after_another(tmp_path):
    """One slot: a chunk's strong-alone prompts, then each question's drafts together. The drafts of a question
    share everything before the draft, which a server that keeps its last prompt's KV cache then reads once."""
    from cowest.feedback.collect import run_feedback

    with OpenAITestServer(responder) as srv:
        stats = run_feedback(_stub_cfg(tmp_path, srv.base_url), 1, weak=StubWeak("t"), chunk_size=CHUNK)
        bodies = list(srv.bodies)
    asked = [(next(q for q in GOLD if q in b["messages"][-1]["content"]), _collab_draft(b) is None) for b in bodies]
    chunks, i = [], 0
    while i < len(asked):  # z requests of a chunk, then K=4 drafts per question of the chunk
        n = min(CHUNK, N_TRAIN - len(chunks) * CHUNK)
        zs, ds = asked[i:i + n], asked[i + n:i + 5 * n]
        assert all(z for _, z in zs) and [q for q, _ in ds] == [q for q, _ in zs for _ in range(4)]
        chunks.append(n)
        i += 5 * n
    assert sum(chunks) == N_TRAIN
    assert stats["strong_calls_by_tag"] == {"feedback_z": N_TRAIN, "feedback_collab": 4 * N_TRAIN}


def test_records_from_before_draft_scores_get_them_without_a_call():
    from cowest.feedback.collect import with_draft_scores

    task = get_task(load_config(None, ["task.name=demo"]).task)
    ex = task.load("train")[0]
    wrong = "A" if ex.gold[0] != "A" else "B"
    old = {"id": ex.id, "drafts": ["d1", "d2", "d3"], "draft_answers": [ex.gold[0], wrong, None]}
    new = {**old, "draft_scores": [0.5, 0.5, 0.5]}  # recorded: kept as is
    assert [r["draft_scores"] for r in with_draft_scores([old, new], task, [ex], "auto")] == \
        [[1.0, 0.0, 0.0], [0.5, 0.5, 0.5]]
    assert "draft_scores" not in old  # the record read from disk is not changed


@pytest.mark.parametrize("in_flight, calls_before_each_draft", [(1, [0, 15, 30]), (6, [0, 0, 30])])
def test_a_wave_of_chunks_fills_the_strong_side_s_slots(tmp_path, in_flight, calls_before_each_draft):
    """Chunks of 3 questions (15 strong calls each): at 6 in flight two chunks are drafted, and journaled, before
    their 30 calls go out together; at one in flight each chunk's calls go alone, as before."""
    from cowest.feedback.collect import run_feedback

    with OpenAITestServer(responder) as srv:
        weak = StubWeak("w")
        drafted_at = []
        generate = weak.generate
        weak.generate = lambda prompts, **kw: drafted_at.append(len(srv.bodies)) or generate(prompts, **kw)
        cfg = _stub_cfg(tmp_path, srv.base_url, f"strong.max_concurrency={in_flight}")
        stats = run_feedback(cfg, 1, weak=weak, chunk_size=CHUNK)
        tags = [json.loads(line)["tag"] for line in (cfg.run_dir / "usage.journal.jsonl").read_text().splitlines()
                if "tag" in line]
    assert drafted_at == calls_before_each_draft
    assert len(srv.bodies) == N_TRAIN + 4 * N_TRAIN and stats["questions"] == N_TRAIN
    assert tags.count("feedback_z") == N_TRAIN and tags.count("feedback_collab") == 4 * N_TRAIN
