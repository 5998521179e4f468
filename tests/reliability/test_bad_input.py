"""Bad input through the real CLI (a subprocess each): exit code 2, one `error: ...` line on stderr that names
the file:line, config key or endpoint, and never a traceback. Progress-bar refreshes on stderr are not
counted as lines. Input that is odd but valid (a BOM, blank lines, a reply with no parseable answer) must
succeed.
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

from support.faults import RecordingServer, run_cowest

from .conftest import report

BOM = "\ufeff"
SERVER = "@SERVER@"  # replaced by the test server's base_url


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _eval(tmp: Path, *extra: str, base_url: str | None = None) -> list[str]:
    url = base_url or f"http://127.0.0.1:{_closed_port()}/v1"
    return ["eval", "task.name=demo", "task.n_eval=3", f"output_dir={tmp / 'runs'}", "name=bad",
            f"strong.base_url={url}", "strong.api_key_env=null", "eval.systems=[strong]", "strong.max_retries=1",
            "strong.backoff_base_s=0.01", "strong.backoff_max_s=0.02", "strong.timeout_s=5", *extra]


def _jsonl_task(tmp: Path, dev: str) -> list[str]:
    _write(tmp / "data" / "dev.jsonl", dev)
    return _eval(tmp, "task.name=jsonl", f"task.data={tmp / 'data'}")


def _score(tmp: Path, preds: str, *extra: str) -> list[str]:
    return ["score", "--task", "demo", *extra, str(_write(tmp / "preds.jsonl", preds))]


GOOD = '{"question": "What is 2+2?", "answer": "4"}\n'


@dataclass
class Case:
    name: str
    args: Callable[[Path], list[str]]
    expect: list[str]  # substrings of the error line (the file:line / key / endpoint first)
    server: dict | None = None  # RecordingServer kwargs; the command gets its base_url
    rc: int = 2
    check: Callable[[Path, str], None] | None = None
    extra: dict = field(default_factory=dict)


def _check_unparsed(tmp: Path, stdout: str) -> None:
    metrics = json.loads((tmp / "runs" / "bad" / "eval" / "metrics.json").read_text())
    assert metrics["systems"]["strong"]["unparsed"] == 3
    assert metrics["systems"]["strong"]["metrics"]["accuracy"] == 0.0


def _check_bom_score(tmp: Path, stdout: str) -> None:
    out = json.loads(stdout)
    assert out["n"] == 2 and out["metrics"]["em"] == 100.0 and out["missing"] == []


def _check_demo_score(tmp: Path, stdout: str) -> None:
    out = json.loads(stdout)
    assert out["n"] == 2 and out["unparsed"] == 1


CASES = [
    # -- a user's JSONL task -------------------------------------------------------------------------
    Case("jsonl task: bad JSON", lambda t: _jsonl_task(t, GOOD + '{"question": "q2", "answer": \n' + GOOD),
         ["dev.jsonl:2", "not valid JSON"]),
    Case("jsonl task: missing field", lambda t: _jsonl_task(t, GOOD + GOOD + '{"question": "q3"}\n'),
         ["dev.jsonl:3", "answer"]),
    Case("jsonl task: wrong type", lambda t: _jsonl_task(t, GOOD + '{"question": ["q", "2"], "answer": "4"}\n'),
         ["dev.jsonl:2", "question"]),
    Case("jsonl task: not an object", lambda t: _jsonl_task(t, GOOD + '["q", "4"]\n'),
         ["dev.jsonl:2", "object"]),
    Case("jsonl task: BOM and blank lines are accepted (score)",
         lambda t: (_write(t / "data" / "dev.jsonl", BOM + GOOD + "\n\n" + '{"question": "q2", "answer": "b"}\n\n'),
                    ["score", "--task", "jsonl", "--data", str(t / "data"),
                     str(_write(t / "p.jsonl", BOM + '{"id": 0, "prediction": "Answer: 4"}\n\n'
                                '{"id": "1", "prediction": "Answer: b"}\n\n'))])[1],
         [], rc=0, check=_check_bom_score),
    Case("empty dataset", lambda t: _jsonl_task(t, ""), ["dev.jsonl", "no examples"]),
    Case("empty dataset (blank lines only)", lambda t: _jsonl_task(t, "\n\n"), ["split 'dev'", "no examples"]),
    Case("jsonl task: data path missing", lambda t: _eval(t, "task.name=jsonl", f"task.data={t / 'nope'}"),
         ["nope", "task.data"]),
    # -- cowest score predictions --------------------------------------------------------------------
    Case("score: bad JSON", lambda t: _score(t, '{"id": "dev-0000", "prediction": "A"}\n{"id": "dev-0001", pred\n'),
         ["preds.jsonl:2", "not valid JSON"]),
    Case("score: missing field", lambda t: _score(t, '{"id": "dev-0000", "prediction": "A"}\n{"id": "dev-0001"}\n'),
         ["preds.jsonl:2", "prediction"]),
    Case("score: wrong type", lambda t: _score(t, '{"id": "dev-0000", "prediction": 7}\n'),
         ["preds.jsonl:1", "'prediction' must be a string"]),
    Case("score: unknown id", lambda t: _score(t, '{"id": "dev-9999", "prediction": "A"}\n'),
         ["preds.jsonl:1", "dev-9999"]),
    Case("score: duplicate id", lambda t: _score(t, '{"id": "dev-0000", "prediction": "A"}\n' * 2),
         ["preds.jsonl:2", "duplicate"]),
    Case("score: empty file", lambda t: _score(t, ""), ["preds.jsonl", "no predictions"]),
    Case("score: BOM, blank lines and an unparseable prediction are accepted",
         lambda t: _score(t, BOM + '\n{"id": "dev-0000", "prediction": "Answer: D"}\n\n'
                             '{"id": "dev-0001", "prediction": "no idea"}\n\n'),
         [], rc=0, check=_check_demo_score),
    Case("score: predictions file missing", lambda t: ["score", "--task", "demo", str(t / "none.jsonl")],
         ["none.jsonl", "no such file"]),
    Case("score: unknown task", lambda t: _score(t, '{"id": 1, "prediction": "A"}\n', "--task", "nope"),
         ["task.name", "'nope'"]),
    # -- config ----------------------------------------------------------------------------------------
    Case("unknown task", lambda t: _eval(t, "task.name=nope"), ["task.name", "'nope'", "demo"]),
    Case("unknown system (override)", lambda t: _eval(t, "eval.systems=[strong,bogus]"), ["eval.systems", "'bogus'"]),
    Case("unknown system (--systems)", lambda t: _eval(t, "--systems", "strong,bogus"), ["eval.systems", "'bogus'"]),
    Case("bad config value: type", lambda t: _eval(t, "task.n_eval=abc"), ["task.n_eval", "'abc'"]),
    Case("bad config value: range", lambda t: _eval(t, "strong.max_concurrency=0"), ["strong.max_concurrency", "0"]),
    Case("bad config value: choice", lambda t: _eval(t, "task.format=essay"), ["task.format", "'essay'"]),
    Case("bad config value: unknown key", lambda t: _eval(t, "strong.tmeout_s=3"), ["strong.tmeout_s"]),
    Case("bad config value: in a recipe",
         lambda t: ["eval", str(_write(t / "r.yaml", "name: r\ntask: {name: demo, n_eval: -1}\n"))],
         ["task.n_eval", "-1"]),
    Case("bad recipe YAML", lambda t: ["eval", str(_write(t / "r.yaml", "task: {name: demo\n"))], ["r.yaml", "YAML"]),
    Case("bad recipe YAML names the line", lambda t: ["eval", str(_write(t / "r.yaml", "a: 1\n b: 2\n"))],
         ["r.yaml:2", "YAML"]),
    Case("missing recipe", lambda t: ["eval", str(t / "nope" / "recipe.yaml"), "task.n_eval=3"],
         ["recipe not found", "recipe.yaml"]),
    Case("missing model path", lambda t: _eval(t, "weak.model=/nonexistent/model", "eval.systems=[weak]"),
         ["/nonexistent/model"]),
    # -- the endpoint ---------------------------------------------------------------------------------
    Case("endpoint down (closed port)", lambda t: _eval(t, base_url=f"http://127.0.0.1:{_closed_port()}/v1"),
         ["http://127.0.0.1:", "connection failed"]),
    Case("endpoint answers HTML", lambda t: _eval(t, base_url=SERVER), ["http://127.0.0.1:", "HTML"],
         server={"plan": lambda i, attempt, body: "html"}),
    Case("endpoint 404 (base_url without /v1)", lambda t: _eval(t, base_url=SERVER), ["http://127.0.0.1:", "404", "strong.base_url"],
         server={"plan": lambda i, attempt, body: "404"}),
    Case("reply with no parseable answer (not an error)", lambda t: _eval(t, base_url=SERVER), [], rc=0, check=_check_unparsed,
         server={"responder": lambda messages, body: "I would rather not say."}),
]


@pytest.mark.parametrize("case", [
    pytest.param(c, id=c.name, marks=[pytest.mark.xfail(strict=True, reason=c.extra["xfail"])] if "xfail" in c.extra else [])
    for c in CASES
])
def test_bad_input(tmp_path, case):
    args = case.args(tmp_path)
    if case.server is not None:
        with RecordingServer(**case.server) as srv:
            args = [a.replace(SERVER, srv.base_url) for a in args]
            run = run_cowest(args, timeout_s=120)
    else:
        run = run_cowest(args, timeout_s=120)
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    assert run.returncode == case.rc, (run.returncode, run.stderr[-3000:])
    lines = run.message_lines
    if case.rc == 0:
        assert not any(ln.startswith("error:") for ln in lines), lines
        if case.check:
            case.check(tmp_path, run.stdout)
        return
    assert len(lines) == 1, f"expected one error line on stderr, got {lines}"
    assert lines[0].startswith("error: "), lines
    for want in case.expect:
        assert want in lines[0], f"{want!r} not in {lines[0]!r}"
    report("bad_input_" + case.name.replace(" ", "_").replace(":", "").replace("/", "_"), lines[0])


def test_override_in_recipe_slot_keeps_url(tmp_path):
    """`cowest eval strong.base_url=http://...` (an override where the recipe goes) must keep the URL intact:
    the error then names the endpoint it could not reach, not a mangled 'http:/...'."""
    port = _closed_port()
    args = _eval(tmp_path)
    args.remove(next(a for a in args if a.startswith("strong.base_url=")))
    args.insert(1, f"strong.base_url=http://127.0.0.1:{port}/v1")  # first positional = the recipe slot
    run = run_cowest(args, timeout_s=120)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert run.message_lines == [run.message_lines[0]] and run.message_lines[0].startswith("error: ")
    assert f"http://127.0.0.1:{port}/v1" in run.message_lines[0]
