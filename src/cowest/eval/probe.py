"""``cowest probe``: choose the strong model before paying for a full eval.

    cowest probe recipes/ifqa_cpu.yaml --endpoint q15 --endpoint smol=strong.local.gguf=offline:smollm2-135m-instruct

On the run's *dev drafts* — ``--questions`` training-split questions the run never trained on
(``tasks.splits.heldout_train_examples``; never the eval split), drafted once by the model the run would
serve (``weights.serving_choice``: weak.adapter > aligned > SFT > base) with the eval decoding — each candidate
strong endpoint answers every question alone and from the draft. Per endpoint: strong-alone and collaboration
accuracy, correction and corruption rates (``eval.flips``), all with Wilson 95% CIs; the paired difference in
collaboration accuracy against the first endpoint (bootstrap CI, smallest detectable difference); calls,
tokens and cost (``strong.price_*``).

An endpoint is ``NAME`` (the recipe's strong section as it is) or ``NAME=KEY=VALUE[,KEY=VALUE...]``: overrides
of the ``strong`` section (``strong.`` may be left out; a comma followed by ``KEY=`` always starts the next
override, so a value cannot hold one). Each is opened in turn with ``endpoint.open_strong``
(which starts and stops a managed local server), with an answer cache of its own under ``probe/cache/``
(cached answers are keyed by request, not by server, so two servers must not share one).

Writes ``runs/<name>/probe/``: ``drafts.jsonl``, ``<endpoint>/strong.jsonl`` and ``collab.jsonl`` (one row per
question, appended as answers arrive: a rerun pays nothing twice), ``probe.json``, ``probe.md``, ``probe.png``.
Rows and reports hold the name of the API key's variable, never the key.
"""

from __future__ import annotations

import dataclasses
import gc
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cowest.config import RunConfig, with_overrides
from cowest.endpoint import open_strong
from cowest.errors import ConfigError, CowestError, ModelError, StrongAPIError
from cowest.eval.flips import is_right, rate, system_flips
from cowest.eval.probe_report import print_probe, write_probe
from cowest.inference import prompts
from cowest.inference.systems import weak_drafts
from cowest.io import JsonlAppender
from cowest.models.strong import ChatRequest
from cowest.rundir import RunDir, claim, done_fingerprint, fingerprint, heldout_identity, strong_identity
from cowest.stats import min_detectable_difference, paired_bootstrap
from cowest.tasks.splits import heldout_train_examples

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
SPEC = "NAME or NAME=KEY=VALUE[,KEY=VALUE...] (keys of the strong section)"
SECTIONS = tuple(f.name for f in dataclasses.fields(RunConfig) if f.name != "strong")


@dataclass(frozen=True)
class Endpoint:
    """A candidate strong model: a name and its overrides of the ``strong`` section (full dotted keys)."""

    name: str
    overrides: tuple[str, ...] = ()


def parse_endpoint(spec: str) -> Endpoint:
    """``NAME`` or ``NAME=KEY=VALUE[,KEY=VALUE...]``; keys are under ``strong`` (the prefix is optional)."""
    name, sep, rest = spec.partition("=")
    name = name.strip()
    if not NAME.match(name):
        raise ConfigError(f"--endpoint {spec!r}: the name must be letters, digits, '_', '.' or '-' "
                          f"(it names a folder); expected {SPEC}")
    items = [x.strip() for x in re.split(r",(?=\s*[A-Za-z_][\w.]*\s*=)", rest) if x.strip()] if sep else []
    if sep and not items:
        raise ConfigError(f"--endpoint {spec!r}: nothing after '{name}='; expected {SPEC}")
    overrides = []
    for item in items:
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise ConfigError(f"--endpoint {name}: {item!r} is not KEY=VALUE; expected {SPEC}")
        if key.split(".")[0] in SECTIONS:
            raise ConfigError(f"--endpoint {name}: {key!r} is not a strong-model setting; an endpoint overrides "
                              "only the strong section (the weak drafts are shared by every endpoint)")
        overrides.append(f"{key if key.startswith('strong.') else 'strong.' + key}={value}")
    return Endpoint(name, tuple(overrides))


def endpoint_configs(cfg: RunConfig, endpoints: list[Endpoint]) -> dict[str, RunConfig]:
    """Each endpoint's config (the run's with its overrides), checked before any work: unique names, known keys."""
    if not endpoints:
        raise ConfigError(f"cowest probe needs at least one --endpoint {SPEC}")
    out: dict[str, RunConfig] = {}
    for ep in endpoints:
        if ep.name in out:
            raise ConfigError(f"--endpoint {ep.name}: the name is given twice; endpoint names must be unique")
        try:
            out[ep.name] = with_overrides(cfg, list(ep.overrides))
        except ConfigError as e:
            raise ConfigError(f"--endpoint {ep.name}: {e}") from None
    return out


def endpoint_identity(cfg: RunConfig) -> str:
    """What an endpoint's answers depend on: the request settings and, for a remote server, where it is."""
    return fingerprint(strong_identity(cfg), None if cfg.strong.local.gguf else cfg.strong.base_url)


def shown(overrides: tuple[str, ...]) -> list[str]:
    """Overrides as reports show them: a URL without user:password or query string (they may hold secrets)."""
    from cowest.models.transport import safe_endpoint

    out = []
    for o in overrides:
        key, _, value = o.partition("=")
        out.append(f"{key}={safe_endpoint(value)}" if key == "strong.base_url" else o)
    return out


def describe(cfg: RunConfig) -> str:
    """Where an endpoint is, for reports: the managed model file, or the URL without credentials."""
    from cowest.models.transport import safe_endpoint

    s = cfg.strong
    if s.local.gguf:
        return f"local {s.local.gguf} ({s.local.engine})"
    return f"{safe_endpoint(s.base_url)} model={s.model}"


# --------------------------------------------------------------------------------------------------
# drafts


def drafting_model(cfg: RunConfig) -> tuple[str, str | None, str]:
    """(kind, adapter, fingerprint) of the model the run would serve, and what its drafts depend on."""
    from cowest.weights import serving_choice

    kind, adapter = serving_choice(cfg)
    stage = done_fingerprint(Path(adapter).parent) if kind in ("aligned", "sft") and adapter else adapter
    w = cfg.weak
    task = dataclasses.replace(cfg.task, n_eval=None)  # n_train stays: it decides which questions are held out
    decoding = (w.model, w.gguf_file, w.max_new_tokens, w.max_prompt_tokens, w.temperature, w.top_p, cfg.seed)
    return kind, adapter, fingerprint(task, decoding, kind, stage, *heldout_identity(cfg))


def claim_outputs(cfg: RunConfig, configs: dict[str, RunConfig], out_dir: Path, *, overwrite: bool) -> None:
    """Before any work: the drafts and every endpoint's rows must have been made as this run would make them
    (else refused, or cleared with ``overwrite``), so a refusal never comes after paid calls."""
    drafts_fp = drafting_model(cfg)[2]
    claim(out_dir / "drafts.fingerprint", drafts_fp, overwrite=overwrite,
          clear=lambda: (out_dir / "drafts.jsonl").unlink(missing_ok=True),
          refusal=f"the probe drafts in {out_dir} were made by another weak model or decoding; "
                  "pass --overwrite to redraft (and re-ask every endpoint)")
    for name, ecfg in configs.items():
        d = out_dir / name
        claim(d / "rows.fingerprint", fingerprint(endpoint_identity(ecfg), drafts_fp), overwrite=overwrite,
              clear=lambda d=d: [(d / f"{s}.jsonl").unlink(missing_ok=True) for s in ("strong", "collab")],
              refusal=f"endpoint {name!r}'s rows in {d} were asked of another endpoint or on other drafts; "
                      "pass --overwrite to ask again (or give this endpoint another name)")


def make_drafts(cfg: RunConfig, task: Any, examples: list[Any], out_dir: Path) -> dict[str, dict]:
    """The drafts of ``examples`` by id, made once (``drafts.jsonl``) and reused for every endpoint."""
    from cowest.weights import weak_for

    kind = drafting_model(cfg)[0]
    path = out_dir / "drafts.jsonl"
    with JsonlAppender(path, key_field="id") as out:
        todo = [ex for ex in examples if ex.id not in out.done]
        if todo:
            wm = weak_for(cfg, "aligned" if kind == "aligned" else "sft")
            w = cfg.weak
            d = weak_drafts(wm, task, todo, cfg.task.format, desc=f"probe: weak ({kind}) drafts", confidence=False,
                            temperature=w.temperature, top_p=w.top_p, seed=cfg.seed)
            for ex, text, answer in zip(todo, d.texts, d.answers):
                out.write({"id": ex.id, "weak_draft": text, "weak_prediction": answer, "gold": ex.gold})
            del wm, d
            gc.collect()  # free the weak model before a local strong server starts
        return {str(r["id"]): r for r in out.rows}


# --------------------------------------------------------------------------------------------------
# one endpoint


def ask_endpoint(cfg: RunConfig, name: str, task: Any, examples: list[Any], drafts: dict[str, dict],
                 out_dir: Path) -> tuple[dict[str, list[dict]], dict[str, Any]]:
    """The endpoint's strong-alone and collaboration rows for ``examples`` (asking only what is missing), and
    this run's usage by tag. Its rows were claimed first (:func:`claim_outputs`)."""
    files = {s: out_dir / name / f"{s}.jsonl" for s in ("strong", "collab")}
    if cfg.strong.cache and not cfg.strong.cache_path:
        own = out_dir / "cache" / f"{endpoint_identity(cfg)}.sqlite"
        cfg = dataclasses.replace(cfg, strong=dataclasses.replace(cfg.strong, cache_path=str(own)))
    rows: dict[str, list[dict]] = {}
    usage: dict[str, Any] = {}
    appenders = {s: JsonlAppender(p, key_field="id") for s, p in files.items()}
    try:
        todo = {s: [ex for ex in examples if ex.id not in a.done] for s, a in appenders.items()}
        if any(todo.values()):
            with open_strong(cfg, stage="probe") as client:
                for system, exs in todo.items():
                    _ask(client, task, cfg.task.format, system, name, exs, drafts, appenders[system])
                usage = client.usage.by_tag()
        for s, a in appenders.items():
            rows[s] = list(a.rows)
    finally:
        for a in appenders.values():
            a.close()
    return rows, usage


def _ask(client: Any, task: Any, fmt: str, system: str, name: str, exs: list[Any], drafts: dict[str, dict],
         out: JsonlAppender) -> None:
    if not exs:
        return
    if system == "strong":
        msgs = [prompts.strong_alone_messages(task, ex) for ex in exs]
    else:
        msgs = [prompts.collab_messages(task, ex, drafts[ex.id]["weak_draft"], fmt) for ex in exs]

    def done(i: int, res: Any) -> None:
        ex = exs[i]
        pred = task.parse_answer(res.text, example=ex)
        row = {"id": ex.id, "system": system, "endpoint": name, "strong_output": res.text, "prediction": pred,
               "gold": ex.gold, "scores": task.item_scores(pred, ex), "prompt_tokens": res.prompt_tokens,
               "completion_tokens": res.completion_tokens, "cached": res.cached}
        if system == "collab":
            row["weak_draft"] = drafts[ex.id]["weak_draft"]
        out.write(row)

    client.chat_batch([ChatRequest(messages=m) for m in msgs], tag=f"{name}/{system}", desc=f"{name}: {system}",
                      on_result=done)


# --------------------------------------------------------------------------------------------------
# the whole probe


def _cost(cfg: RunConfig, rows: list[dict]) -> dict[str, Any]:
    p = sum(int(r.get("prompt_tokens", 0)) for r in rows)
    c = sum(int(r.get("completion_tokens", 0)) for r in rows)
    s = cfg.strong
    priced = bool(s.price_prompt_per_1k or s.price_completion_per_1k)
    usd = (p * s.price_prompt_per_1k + c * s.price_completion_per_1k) / 1000 if priced else None
    return {"calls": len(rows), "prompt_tokens": p, "completion_tokens": c, "cost_usd": usd}


def summarise_endpoint(cfg: RunConfig, name: str, overrides: tuple[str, ...], task: Any, rows: dict[str, list[dict]],
                       drafts: dict[str, dict], examples: list[Any], usage: dict[str, Any]) -> dict[str, Any]:
    key = task.primary_item_key
    collab = [dict(r, weak_prediction=drafts[r["id"]]["weak_prediction"]) for r in rows["collab"]]
    flips = system_flips(task, cfg.task.format, collab, rows["strong"], examples)
    right = {s: sum(is_right(r, key) for r in rows[s]) for s in rows}
    paid = {s: int(usage.get(f"{name}/{s}", {}).get("calls", 0) - usage.get(f"{name}/{s}", {}).get("cached", 0))
            for s in rows}
    return {
        "name": name,
        "overrides": shown(overrides),
        "endpoint": describe(cfg),
        "n": len(examples),
        "strong_accuracy": rate(right["strong"], len(rows["strong"])),
        "collab_accuracy": rate(right["collab"], len(rows["collab"])),
        "vs_strong": flips["vs_strong"],
        "vs_weak": flips["vs_weak"],
        "cost": {s: _cost(cfg, rows[s]) for s in rows},
        "paid_this_run": paid,
    }


def compare(names: list[str], rows: dict[str, dict[str, list[dict]]], examples: list[Any], key: str) -> list[dict]:
    """Each endpoint's collaboration accuracy minus the first one's, paired by question."""
    out = []
    ref = names[0]
    for other in names[1:]:
        a = {r["id"]: float(is_right(r, key)) for r in rows[other]["collab"]}
        b = {r["id"]: float(is_right(r, key)) for r in rows[ref]["collab"]}
        ids = [ex.id for ex in examples if ex.id in a and ex.id in b]
        x, y = [a[i] for i in ids], [b[i] for i in ids]
        mde = min_detectable_difference(x, y) if len(ids) > 1 else float("nan")
        out.append({"endpoint": other, "reference": ref, "n": len(ids),
                    "delta": list(paired_bootstrap(x, y)) if ids else None, "detectable": mde if mde == mde else None})
    return out


def run_probe(cfg: RunConfig, endpoints: list[Endpoint], *, questions: int = 64, overwrite: bool = False,
              show: bool = True) -> dict[str, Any]:
    """Probe every endpoint on the run's dev drafts; returns what ``probe.json`` holds."""
    from cowest.weights import serving_choice

    configs = endpoint_configs(cfg, endpoints)  # every spec checked before anything runs
    rd = RunDir(cfg)
    out_dir = rd.probe
    task, examples = heldout_train_examples(cfg, questions, purpose="cowest probe")
    kind, adapter = serving_choice(cfg)
    notes: dict[str, str] = {}
    if len(examples) < questions:
        notes["questions"] = (f"{questions} asked for, {len(examples)} held-out {cfg.task.train_split} questions "
                              "available (the rest are training questions or repeat them)")
    if kind == "base":
        notes["weak model"] = "the run has no SFT or aligned weak model: the drafts are the base model's"
    if cfg.task.format == "knowledge":
        notes["flips vs weak"] = "task.format=knowledge: the drafts hold knowledge, not an answer: no corrections"
    claim_outputs(cfg, configs, out_dir, overwrite=overwrite)
    drafts = make_drafts(cfg, task, examples, out_dir)
    examples = [ex for ex in examples if ex.id in drafts]
    rows: dict[str, dict[str, list[dict]]] = {}
    usage: dict[str, dict[str, Any]] = {}
    failed: list[CowestError] = []
    for ep in endpoints:
        try:
            rows[ep.name], usage[ep.name] = ask_endpoint(configs[ep.name], ep.name, task, examples, drafts, out_dir)
        except (StrongAPIError, ModelError) as e:  # one endpoint down must not lose the others' figures
            failed.append(e)
            notes[f"endpoint {ep.name}"] = f"left out: {e} (its finished rows are kept: run again to resume)"
    if not rows:
        raise failed[0]
    endpoints = [ep for ep in endpoints if ep.name in rows]
    # every endpoint on the same questions: those each of them answered both ways
    common = {ex.id for ex in examples}
    for r in rows.values():
        for s in r.values():
            common &= {str(x["id"]) for x in s}
    examples = [ex for ex in examples if ex.id in common]
    rows = {n: {s: [x for x in r[s] if str(x["id"]) in common] for s in r} for n, r in rows.items()}
    key = task.primary_item_key
    result = {
        "task": task.name,
        "questions": f"{len(examples)} held-out {cfg.task.train_split} questions (outside the training subsample)",
        "n": len(examples),
        "drafting_model": {"kind": kind, "adapter": adapter},
        "right": f"right = per-item {key} equals 1",
        "endpoints": [summarise_endpoint(configs[ep.name], ep.name, ep.overrides, task, rows[ep.name], drafts, examples,
                                         usage[ep.name]) for ep in endpoints],
        "comparisons": compare([ep.name for ep in endpoints], rows, examples, key),
        "notes": notes,
    }
    write_probe(out_dir, result)
    if show:
        print_probe(result)
        print(f"\nreport: {out_dir / 'probe.md'}")
    return result
