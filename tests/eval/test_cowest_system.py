"""The `cowest` eval system with a real aligned adapter: it drafts with that adapter, the strong model gets
the question and the draft and nothing else (no gold), and the bootstrap pairs systems by question id."""

import json
from pathlib import Path

from cowest.config import load_config
from cowest.eval.evaluate import run_eval, summarise
from cowest.stats import paired_bootstrap
from cowest.inference.prompts import collab_messages, weak_messages
from cowest.tasks import get_task
from cowest.tasks.base import Example
from cowest.testing.openai_server import OpenAITestServer
from support.tiny import save_aligned_adapter

IFQA = Path(__file__).resolve().parents[1] / "fixtures" / "tasks" / "ifqa"


def test_cowest_drafts_with_the_aligned_adapter_and_sends_no_gold(tmp_path, tiny_model_dir):
    from cowest.weights import load_aligned_weak_model
    from cowest.models.weak import WeakModel

    cfg = load_config(None, [
        f"output_dir={tmp_path}", "name=aligned", "task.name=ifqa", f"task.data={IFQA}", "weak.max_new_tokens=8",
        f"weak.model={tiny_model_dir}", "weak.dtype=float32", "strong.api_key_env=null",
        "eval.systems=[collab,cowest]",
    ])
    save_aligned_adapter(cfg, tiny_model_dir)
    task = get_task(cfg.task)
    examples = task.load("dev")
    golds = {ex.id: ex.gold for ex in examples}
    by_question = {ex.question: ex for ex in examples}
    seen: list[str] = []

    def strong(messages, body):
        text = messages[-1]["content"]
        seen.append(text)
        ex = next(e for q, e in by_question.items() if q in text)
        # right or wrong by the draft, so cowest and collab score differently per question
        return f"Answer: {ex.gold[0]}" if len(text) % 2 else "Answer: nobody"

    model, tok = load_aligned_weak_model(cfg, 1)
    expected = WeakModel(model, tok, cfg.weak).generate([weak_messages(task, ex, cfg.task.format) for ex in examples])
    with OpenAITestServer(strong) as srv:
        cfg.strong.base_url = srv.base_url
        summary = run_eval(cfg, show=False)

    rows = {s: {r["id"]: r for r in _rows(cfg, s)} for s in ("collab", "cowest")}
    for ex, (draft,) in zip(examples, expected):
        row = rows["cowest"][ex.id]
        assert row["weak_draft"] == draft  # the aligned model's greedy draft
        assert row["prompt"] == collab_messages(task, ex, draft, cfg.task.format)
    assert any(rows["cowest"][i]["weak_draft"] != rows["collab"][i]["weak_draft"] for i in golds)  # not the base
    for text in seen:  # a gold string reaches the strong model only where the question itself holds it
        ex = next(e for q, e in by_question.items() if q in text)
        draft = next(r["weak_draft"] for s in rows for r in rows[s].values() if r["id"] == ex.id and r["weak_draft"] in text)
        for g in golds[ex.id]:
            assert text.count(g) == ex.question.count(g) + draft.count(g)
    ids = [ex.id for ex in examples]
    per = {s: [rows[s][i]["scores"]["em"] for i in ids] for s in rows}
    assert summary["systems"]["collab"]["delta_vs_cowest"] == list(paired_bootstrap(per["collab"], per["cowest"]))


def _rows(cfg, system):
    path = cfg.run_dir / "eval" / "predictions" / f"{system}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_summarise_pairs_rows_by_question_id_not_by_file_order():
    task = get_task(load_config(None, ["task.name=demo"]).task)
    examples = [Example(id=str(i), question=f"q{i}", gold=["A"]) for i in range(6)]
    right = [1, 1, 1, 0, 0, 0]

    def rows(order):
        return [{"id": str(i), "prediction": "A" if right[i] else "B",
                 "scores": {"accuracy": float(right[i])}} for i in order]

    summary = summarise(task, "dev", {"collab": rows(range(6)), "cowest": rows(reversed(range(6)))}, examples)
    # identical per question: every paired resample differs by exactly 0
    assert summary["systems"]["collab"]["delta_vs_cowest"] == [0.0, 0.0, 0.0]
    # no disagreement seen: the detectable difference is that of one question in six, not 0
    assert summary["systems"]["collab"]["detectable_vs_cowest"] > 0


def test_collab_and_cowest_prompts_of_a_question_reach_the_server_side_by_side(tmp_path, tiny_model_dir):
    """One slot (llama.cpp's case): a question's two refine prompts arrive one after the other, so the server's
    KV cache of the shared prefix serves both; calls paid per system are those of two separate runs, and
    without a cache the systems run one after the other (prefetching would pay twice)."""
    def run(name, *extra):
        cfg = load_config(None, [
            f"output_dir={tmp_path}", f"name={name}", "task.name=ifqa", f"task.data={IFQA}", "weak.max_new_tokens=8",
            f"weak.model={tiny_model_dir}", "weak.dtype=float32", "strong.api_key_env=null",
            "strong.max_concurrency=1", "eval.systems=[collab,cowest]", *extra,
        ])
        save_aligned_adapter(cfg, tiny_model_dir)
        seen: list[str] = []

        def strong(messages, body):
            seen.append(messages[-1]["content"])
            return "Answer: nobody"

        with OpenAITestServer(strong) as srv:
            cfg.strong.base_url = srv.base_url
            summary = run_eval(cfg, show=False)
        return cfg, summary, seen

    cfg, summary, seen = run("together")
    rows = {s: {r["id"]: r for r in _rows(cfg, s)} for s in ("collab", "cowest")}
    task = get_task(cfg.task)
    examples = task.load("dev")
    expected = []
    for ex in examples:
        drafts = [rows["collab"][ex.id]["weak_draft"], rows["cowest"][ex.id]["weak_draft"]]
        expected += [collab_messages(task, ex, d, cfg.task.format)[-1]["content"] for d in dict.fromkeys(drafts)]
    assert seen == expected
    assert len(expected) > len(examples)  # some drafts differ, so some questions were asked twice in a row
    paid = {s: summary["systems"][s]["strong_calls_paid"] for s in ("collab", "cowest")}
    assert paid["collab"] == len(examples) and paid["collab"] + paid["cowest"] == len(expected)

    cfg2, summary2, seen2 = run("apart", "strong.cache=false")
    first_cowest = len(examples)  # without a cache: every collab prompt first, then every cowest prompt
    assert seen2[:first_cowest] == [collab_messages(task, ex, rows["collab"][ex.id]["weak_draft"], cfg.task.format)[-1]["content"]
                                    for ex in examples]
    assert len(seen2) == 2 * len(examples)
