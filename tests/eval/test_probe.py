"""``cowest probe`` end to end: a tiny aligned run, two scripted OpenAI test servers (one corrects every wrong
draft, one repeats the draft), the table that tells them apart, resuming that pays nothing twice, and the
endpoint syntax's errors."""

import json
import re

import pytest

from cowest.config import load_config
from cowest.errors import ConfigError, StrongAPIError
from cowest.eval.probe import Endpoint, endpoint_configs, parse_endpoint, run_probe, shown
from cowest.rundir import RunDir
from cowest.tasks import get_task
from cowest.tasks.splits import train_examples
from cowest.testing.openai_server import OpenAITestServer
from support.tiny import save_aligned_adapter

N = 6
SECRET = "sk-probe-secret-0123456789"
TASK = get_task(load_config(None, ["task.name=demo"]).task)
TRAIN = {ex.question.strip(): ex for ex in TASK.load("train")}


def _example(text):
    return next(ex for q, ex in TRAIN.items() if q in text)


def _wrong(ex):
    return next(lab for lab in "ABCD" if lab != ex.gold[0])


def scripted(corrects: bool):
    """Strong alone: right on even-numbered questions. From a draft: the gold answer (``corrects``) or the
    draft's own answer (a wrong letter when the draft has none)."""

    def respond(messages, body):
        text = messages[-1]["content"]
        ex = _example(text)
        if "<draft>" not in text:
            right = int(re.sub(r"\D", "", ex.id)) % 2 == 0
            return f"Alone.\nAnswer: {ex.gold[0] if right else _wrong(ex)}"
        if corrects:
            return f"Fixed.\nAnswer: {ex.gold[0]}"
        draft = text.split("<draft>")[1].split("</draft>")[0]
        return f"As drafted.\nAnswer: {TASK.parse_answer(draft, example=ex) or _wrong(ex)}"

    return respond


def _cfg(tmp_path, tiny_model_dir, *extra):
    return load_config(None, [
        f"output_dir={tmp_path}", "name=probe", "task.name=demo", "task.n_train=16", f"weak.model={tiny_model_dir}",
        "weak.dtype=float32", "weak.max_new_tokens=8", "strong.api_key_env=COWEST_PROBE_KEY", *extra])


def _endpoints(good, bad):
    return [parse_endpoint(f"good=strong.base_url={good.base_url},price_prompt_per_1k=2.0"),
            parse_endpoint(f"bad=base_url={bad.base_url}")]


def _lines(path):
    return path.read_text().splitlines()


def test_two_endpoints_table_resume_and_no_secret(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("COWEST_PROBE_KEY", SECRET)
    cfg = _cfg(tmp_path, tiny_model_dir)
    save_aligned_adapter(cfg, tiny_model_dir)
    out = RunDir(cfg).probe
    with OpenAITestServer(scripted(True), api_key=SECRET) as good, OpenAITestServer(scripted(False), api_key=SECRET) as bad:
        result = run_probe(cfg, _endpoints(good, bad), questions=N, show=False)
        assert good.outcomes == {"ok": 2 * N} and bad.outcomes == {"ok": 2 * N}  # alone + collab, key accepted

        drafts = [json.loads(x) for x in _lines(out / "drafts.jsonl")]
        assert result["drafting_model"]["kind"] == "aligned" and len(drafts) == N == result["n"]
        trained = {ex.id for ex in train_examples(cfg)[1]}
        assert all(d["id"].startswith("train") and d["id"] not in trained for d in drafts)  # held out, not eval
        weak_wrong = sum(d["weak_prediction"] != d["gold"][0] for d in drafts)
        assert weak_wrong > 0

        e = {x["name"]: x for x in result["endpoints"]}
        assert (e["good"]["vs_weak"]["corrected"], e["good"]["vs_weak"]["weak_wrong"]) == (weak_wrong, weak_wrong)
        assert (e["bad"]["vs_weak"]["corrected"], e["bad"]["vs_weak"]["corrupted"]) == (0, 0)
        assert e["good"]["collab_accuracy"][0] == 100.0
        assert e["bad"]["collab_accuracy"][0] == pytest.approx(100.0 * (N - weak_wrong) / N)
        assert e["good"]["strong_accuracy"] == e["bad"]["strong_accuracy"]  # the same answers alone
        (cmp,) = result["comparisons"]
        assert (cmp["endpoint"], cmp["reference"]) == ("bad", "good")
        assert cmp["delta"][0] == pytest.approx(-100.0 * weak_wrong / N) and cmp["detectable"] > 0
        good_tokens = e["good"]["cost"]["collab"]["prompt_tokens"]
        assert e["good"]["cost"]["collab"]["cost_usd"] == pytest.approx(2.0 * good_tokens / 1000)
        assert e["bad"]["cost"]["collab"]["cost_usd"] is None and e["good"]["paid_this_run"] == {"strong": N, "collab": N}

        md = (out / "probe.md").read_text()
        assert f"| good | {N} |" in md and f"{weak_wrong}/{weak_wrong} = 100.0%" in md
        assert f"| bad | {N} |" in md and f"0/{weak_wrong} = 0.0%" in md
        assert (out / "probe.png").read_bytes()[:4] == b"\x89PNG"
        for f in out.rglob("*"):
            if f.is_file() and f.suffix != ".sqlite":
                assert SECRET not in f.read_text(errors="replace"), f

        # a rerun reads rows and drafts: no request, no weak model
        import cowest.weights

        monkeypatch.setattr(cowest.weights, "weak_for", lambda *a, **k: pytest.fail("the weak model was loaded again"))
        again = run_probe(cfg, _endpoints(good, bad), questions=N, show=False)
        assert good.requests_total == 2 * N and bad.requests_total == 2 * N
        assert again["endpoints"][0]["vs_weak"] == result["endpoints"][0]["vs_weak"]
        assert again["endpoints"][0]["paid_this_run"] == {"strong": 0, "collab": 0}

        # rows lost (a kill): only they are asked again, even with the cache off
        rows = out / "bad" / "collab.jsonl"
        rows.write_text("\n".join(_lines(rows)[:-2]) + "\n")
        cfg2 = _cfg(tmp_path, tiny_model_dir, "strong.cache=false")
        again = run_probe(cfg2, _endpoints(good, bad), questions=N, show=False)
        assert (good.requests_total, bad.requests_total) == (2 * N, 2 * N + 2)
        assert len(_lines(rows)) == N and again["endpoints"][1]["vs_weak"] == result["endpoints"][1]["vs_weak"]

        # an endpoint that fails is left out with a note; the others' figures stand
        dead = parse_endpoint("dead=base_url=http://127.0.0.1:9/v1,max_retries=0")
        partial = run_probe(cfg, [*_endpoints(good, bad), dead], questions=N, show=False)
        assert [x["name"] for x in partial["endpoints"]] == ["good", "bad"]
        assert "left out" in partial["notes"]["endpoint dead"] and "dead" in (out / "probe.md").read_text()
        with pytest.raises(StrongAPIError):
            run_probe(cfg, [dead], questions=N, show=False)

        # the same name on another endpoint is refused, not mixed, before any endpoint is asked
        with pytest.raises(ConfigError, match="endpoint 'good'.*pass --overwrite"):
            run_probe(cfg, [parse_endpoint(f"new=base_url={good.base_url}"), parse_endpoint(f"good=base_url={bad.base_url}")],
                      questions=N, show=False)
        assert (good.requests_total, bad.requests_total) == (2 * N, 2 * N + 2)
        # with --overwrite its rows are asked again, of the new endpoint: the cache is per endpoint, so they come
        # from the answers that server gave before (no request), never from the old endpoint's
        swapped = run_probe(cfg, [parse_endpoint(f"good=base_url={bad.base_url}")], questions=N, overwrite=True,
                            show=False)
        assert (good.requests_total, bad.requests_total) == (2 * N, 2 * N + 2)
        assert swapped["endpoints"][0]["vs_weak"]["corrected"] == 0
        assert len(_lines(out / "good" / "collab.jsonl")) == N


@pytest.mark.parametrize("spec, message", [
    ("", "the name must be"),
    ("a/b=max_tokens=3", "the name must be"),
    ("x=", "nothing after 'x='"),
    ("x=max_tokens", "is not KEY=VALUE"),
    ("x=weak.model=other", "only the strong section"),
])
def test_bad_endpoint_spec(spec, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_endpoint(spec)


def test_endpoint_specs_parse_and_check():
    assert parse_endpoint("a") == Endpoint("a")
    assert parse_endpoint("b=max_tokens=3, strong.local.gguf=x.gguf,model=m").overrides == (
        "strong.max_tokens=3", "strong.local.gguf=x.gguf", "strong.model=m")
    assert parse_endpoint("c=base_url=http://h/v1?a=1,2").overrides == ("strong.base_url=http://h/v1?a=1,2",)
    cfg = load_config(None, [])
    got = endpoint_configs(cfg, [parse_endpoint("a"), parse_endpoint("b=max_tokens=3")])
    assert got["a"].strong == cfg.strong and got["b"].strong.max_tokens == 3 and got["b"].weak == cfg.weak
    with pytest.raises(ConfigError, match="--endpoint b: unknown config key 'strong.max_token'; valid keys under strong:.*max_tokens"):
        endpoint_configs(cfg, [parse_endpoint("b=max_token=3")])
    with pytest.raises(ConfigError, match="--endpoint b: strong.max_tokens must be"):
        endpoint_configs(cfg, [parse_endpoint("b=max_tokens=0")])
    with pytest.raises(ConfigError, match="unknown config key 'strong.b'"):  # ",KEY=" always starts a new key
        endpoint_configs(cfg, [parse_endpoint("c=base_url=http://h/v1?a=1,b=2")])
    with pytest.raises(ConfigError, match="given twice"):
        endpoint_configs(cfg, [parse_endpoint("a"), parse_endpoint("a=max_tokens=3")])
    with pytest.raises(ConfigError, match="at least one --endpoint"):
        endpoint_configs(cfg, [])


def test_reports_show_no_credentials_in_an_endpoint_url():
    ep = parse_endpoint("x=base_url=https://user:sk-secret@api.example.com/v1?key=sk-other,max_tokens=9")
    assert shown(ep.overrides) == ["strong.base_url=https://api.example.com/v1", "strong.max_tokens=9"]


def test_knowledge_format_has_no_corrections_but_keeps_the_rest():
    from cowest.eval.probe import summarise_endpoint
    from cowest.eval.probe_report import markdown
    from cowest.tasks.base import Example

    cfg = load_config(None, ["task.name=demo", "task.format=knowledge"])
    exs = [Example(id=f"q{i}", question=f"q{i}", gold=["A"]) for i in range(4)]
    drafts = {ex.id: {"weak_draft": "Background: ...", "weak_prediction": None} for ex in exs}

    def rows(system, right):
        return [{"id": ex.id, "prediction": "A" if r else "B", "strong_output": "x", "scores": {"accuracy": float(r)},
                 "prompt_tokens": 10, "completion_tokens": 2, **({"weak_draft": "Background: ..."} if system == "collab" else {})}
                for ex, r in zip(exs, right)]

    e = summarise_endpoint(cfg, "k", (), TASK, {"strong": rows("strong", [1, 0, 0, 0]), "collab": rows("collab", [1, 1, 0, 0])},
                           drafts, exs, {})
    assert e["vs_weak"] is None and (e["vs_strong"]["helped"], e["vs_strong"]["misled"]) == (1, 0)
    assert e["collab_accuracy"][0] == 50.0 and e["cost"]["collab"] == {
        "calls": 4, "prompt_tokens": 40, "completion_tokens": 8, "cost_usd": None}
    result = {"task": "demo", "questions": "4", "n": 4, "drafting_model": {"kind": "sft", "adapter": None},
              "right": "right = per-item accuracy equals 1", "endpoints": [e], "comparisons": [], "notes": {}}
    assert "| k | 4 | 25.0 [4.6, 69.9] | 50.0 [15.0, 85.0] | — | — | 1/3 = 33.3%" in markdown(result)
