"""DPO on the tiny model: a fresh LoRA on the merged SFT model, reference = the SFT model itself."""

import json

import pytest

from cowest.config import load_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    """The tiny model with its 600-token built-in tokenizer: a 49k-token vocabulary would make the
    logits, and so every training step, ~40x bigger."""
    from support.tiny import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny_small_vocab"), tokenizer="builtin")


def _cfg(root, tiny_model_dir, *extra):
    return load_config(None, [
        "task.name=demo", "task.n_train=6", f"weak.model={tiny_model_dir}", f"output_dir={root}", "name=dpo",
        "sft.max_steps=2", "sft.batch_size=2", "sft.max_length=512", "sft.learning_rate=0.02",
        "sft.lora_r=4", "sft.lora_alpha=8", "sft.lora_target_modules=[q_proj,v_proj,up_proj]",
        "align.max_steps=3", "align.batch_size=2", "align.learning_rate=0.02", "align.max_length=512",
        "align.lora_r=2", "align.lora_alpha=4", "align.beta=0.5", "weak.dtype=float32", *extra,
    ])


def write_feedback(cfg, round_, *, empty=False):
    """A finished feedback stage from hand-made records (the real pair/stat code writes the files)."""
    from cowest.feedback.collect import finish_feedback, stage_fingerprint
    from cowest.inference.prompts import weak_messages
    from cowest.rundir import RunDir, mark_done
    from cowest.tasks.splits import train_examples

    task, examples = train_examples(cfg)
    records = []
    for ex in examples:
        gold = ex.gold[0]
        wrong = "A" if gold != "A" else "C"
        drafts = [f"The owner decides.\nAnswer: {gold}", f"It sounds like a refund.\nAnswer: {wrong}"]
        deltas = [0.0, -1.0] if empty else [1.0, 0.0]
        records.append({"id": ex.id, "prompt": weak_messages(task, ex, cfg.task.format), "drafts": drafts,
                        "deltas": deltas, "z_mean": 0.0, "collab_scores": deltas})
    stats = finish_feedback(cfg, round_, records, usage={})
    mark_done(RunDir(cfg).feedback(round_), stage_fingerprint(cfg, round_))
    return stats


def _files(path):
    from safetensors.torch import load_file

    return load_file(str(path))


def _logits(model, tok, text="Support ticket: my Palo-9 arrived late.\nAnswer: B"):
    import torch

    ids = tok(text, return_tensors="pt").input_ids.to(model.device)  # the eval loader puts a model on the GPU if any
    with torch.no_grad():
        return model(input_ids=ids).logits.cpu()


def test_dpo_trains_a_fresh_lora_against_the_sft_reference(tmp_path, tiny_model_dir):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from cowest.align.dpo import run_align
    from cowest.weights import load_aligned_weak_model
    from cowest.models.weak import WeakModel
    from cowest.rundir import RunDir
    from cowest.sft.train import run_sft

    cfg = _cfg(tmp_path, tiny_model_dir)
    rd = RunDir(cfg)
    run_sft(cfg)
    stats = write_feedback(cfg, 1)
    assert stats["pairs"] == 6
    base_before = _files(tiny_model_dir / "model.safetensors")
    sft_before = _files(rd.sft_adapter / "adapter_model.safetensors")

    out = run_align(cfg, 1)
    stage = rd.align(1)
    dpo = _files(stage / "dpo_adapter" / "adapter_model.safetensors")
    # the fresh DPO LoRA moved (B starts at zero) ...
    assert max(v.abs().max().item() for k, v in dpo.items() if "lora_B" in k) > 1e-4
    # ... while the base checkpoint and the SFT adapter are untouched
    base_after = _files(tiny_model_dir / "model.safetensors")
    assert all(torch.equal(base_before[k], base_after[k]) for k in base_before)
    sft_after = _files(rd.sft_adapter / "adapter_model.safetensors")
    assert all(torch.equal(sft_before[k], sft_after[k]) for k in sft_before)

    # reference = the SFT model: at step 1 the policy equals the reference, so both rewards are 0
    # (had the reference been the base model, the SFT adapter would make them clearly non-zero), up to bf16
    # rounding: on an Intel Xeon with AMX the two forwards differ by one step (a reward of 1.2e-4).
    m = json.loads((stage / "metrics.json").read_text())
    steps = [r for r in m["log_history"] if "rewards/margins" in r]
    assert [r["step"] for r in steps] == [1, 2, 3]
    assert abs(steps[0]["rewards/chosen"]) < 1e-3 and abs(steps[0]["rewards/rejected"]) < 1e-3
    assert all("rewards/accuracies" in r for r in steps)
    assert m["n_pairs"] == 6 and m["seconds_per_step"] > 0
    assert (stage / "metrics.png").stat().st_size > 1000 and (stage / ".done.json").exists()

    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    sft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)), str(rd.sft_adapter)).merge_and_unload()
    sft_logits = _logits(sft, tok)
    assert not torch.allclose(_logits(base, tok), sft_logits, atol=1e-3)  # SFT did change the model
    stacked = PeftModel.from_pretrained(sft, str(stage / "dpo_adapter"))  # (wraps `sft` in place)
    want = _logits(stacked, tok)

    # the eval entry point: base + SFT + DPO
    model, tok2 = load_aligned_weak_model(cfg, 1)
    assert torch.allclose(_logits(model, tok2), want, atol=1e-4)
    # in bf16 (weak.dtype=auto on a native-bf16 CPU) the adapters are merged at fp32, then rounded once
    cfg.weak.dtype = "bfloat16"
    half, _ = load_aligned_weak_model(cfg, 1)
    cfg.weak.dtype = "float32"
    full = dict(model.named_parameters())
    assert all(p.dtype == torch.bfloat16 and torch.equal(p, full[k].to(torch.bfloat16)) for k, p in half.named_parameters())
    # the saved adapter is self-contained: one standard PEFT adapter on the base model
    info = json.loads((stage / "adapter_info.json").read_text())
    assert info["self_contained"] and info["merge"] == ["align/round1/adapter"]
    assert rd.cowest_adapter() == str(out)
    wm = WeakModel.load(cfg.weak, adapter=str(out))
    assert torch.allclose(_logits(wm.model, tok), want, atol=1e-4)
    assert not torch.allclose(sft_logits, want, atol=1e-4)  # and DPO changed it


def test_second_round_starts_from_the_first(tmp_path, tiny_model_dir):
    import torch
    from peft import PeftModel

    from cowest.align.dpo import run_align
    from cowest.weights import load_aligned_weak_model
    from cowest.rundir import RunDir
    from cowest.sft.train import run_sft

    cfg = _cfg(tmp_path, tiny_model_dir, "rounds=2", "align.max_steps=2")
    run_sft(cfg)
    write_feedback(cfg, 1)
    run_align(cfg, 1)
    write_feedback(cfg, 2)
    run_align(cfg, 2)
    stage2 = RunDir(cfg).align(2)
    info = json.loads((stage2 / "adapter_info.json").read_text())
    assert info["folded"] == ["align/round1/adapter", "align/round2/dpo_adapter"]
    r1, tok = load_aligned_weak_model(cfg, 1)
    want = _logits(PeftModel.from_pretrained(r1, str(stage2 / "dpo_adapter")), tok)
    r2, _ = load_aligned_weak_model(cfg, 2)
    assert torch.allclose(_logits(r2, tok), want, atol=1e-4)
    m = json.loads((stage2 / "metrics.json").read_text())
    first = next(r for r in m["log_history"] if "rewards/chosen" in r)
    assert abs(first["rewards/chosen"]) < 1e-4  # round 2's reference is round 1's model
    assert RunDir(cfg).cowest_adapter() == str(RunDir(cfg).align_adapter(2))


def test_no_pairs_is_a_clear_error(tmp_path, tiny_model_dir):
    from cowest.align.dpo import NoPairsError, run_align

    cfg = _cfg(tmp_path, tiny_model_dir)
    stats = write_feedback(cfg, 1, empty=True)
    assert stats["pairs"] == 0
    with pytest.raises(NoPairsError, match=r"no preference pairs.*all_rejected=6"):
        run_align(cfg, 1)


def test_align_before_feedback_is_a_clear_error(tmp_path, tiny_model_dir):
    from cowest.align.dpo import run_align
    from cowest.errors import CowestError

    with pytest.raises(CowestError, match="cowest feedback"):
        run_align(_cfg(tmp_path, tiny_model_dir), 1)


def test_hold_out_takes_whole_questions_seeded_and_refuses_an_empty_side():
    from cowest.align.dpo import hold_out
    from cowest.errors import ConfigError

    pairs = [{"question_id": f"q{q}", "n": i} for q in range(10) for i in range(3)]
    train, held = hold_out(pairs, 0.2, seed=1)
    out = {p["question_id"] for p in held}
    assert len(out) == 2 and len(held) == 6 and len(train) == 24  # every pair of a held-out question
    assert not out & {p["question_id"] for p in train}
    assert hold_out(pairs, 0.2, seed=1) == (train, held)  # seeded
    assert len({frozenset(p["question_id"] for p in hold_out(pairs, 0.2, seed=s)[1]) for s in range(5)}) > 1
    assert hold_out(pairs, 0.0, seed=1) == (pairs, [])
    with pytest.raises(ConfigError, match=r"^align.eval_share=0.04 of the 10 questions with pairs leaves no question "
                                          r"to evaluate on"):
        hold_out(pairs, 0.04, seed=1)
    with pytest.raises(ConfigError, match="leaves no question to train on"):
        hold_out(pairs, 0.96, seed=1)
    with pytest.raises(ConfigError, match=r"align.eval_share must be in \[0, 1\)"):
        load_config(None, ["align.eval_share=1"])


def test_held_out_questions_are_evaluated_logged_and_plotted(tmp_path, tiny_model_dir):
    from cowest.align.dpo import run_align
    from cowest.rundir import RunDir, fingerprint
    from cowest.sft.train import run_sft

    cfg = _cfg(tmp_path, tiny_model_dir, "align.eval_share=0.5")
    assert fingerprint(cfg.align) != fingerprint(_cfg(tmp_path, tiny_model_dir).align)
    run_sft(cfg)
    write_feedback(cfg, 1)
    run_align(cfg, 1)
    m = json.loads((RunDir(cfg).align(1) / "metrics.json").read_text())
    assert m["n_pairs"] == 3 and m["eval"]["pairs"] == 3 and len(m["eval"]["questions"]) == 3
    evals = [r for r in m["log_history"] if "eval_loss" in r]
    assert evals and evals[-1]["step"] == m["global_step"] == 3  # the final model is always evaluated
    final = m["eval"]["final"]
    assert final["loss"] == evals[-1]["eval_loss"] and 0.0 <= final["rewards/accuracies"] <= 1.0
    assert abs(final["rewards/chosen"]) > 1e-5  # the trained policy has left the reference on held-out pairs
    assert "rewards/margins" in final and m["eval"]["step"] == 3
    assert (RunDir(cfg).align(1) / "metrics.png").stat().st_size > 1000


def _chosen_logprob(cfg):
    """Mean log-prob per token of the chosen drafts (write_feedback's) under the run's aligned model."""
    import torch

    from cowest.inference.prompts import weak_messages
    from cowest.tasks.splits import train_examples
    from cowest.weights import load_aligned_weak_model

    model, tok = load_aligned_weak_model(cfg, 1)
    task, examples = train_examples(cfg)
    total, count = 0.0, 0
    for ex in examples:
        prompt = tok.apply_chat_template(weak_messages(task, ex, cfg.task.format), add_generation_prompt=True,
                                         tokenize=False)
        p_ids = tok(prompt, add_special_tokens=False).input_ids
        ids = tok(prompt + f"The owner decides.\nAnswer: {ex.gold[0]}", add_special_tokens=False).input_ids
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids], device=model.device)).logits
        logp = logits[0, :-1].float().cpu().log_softmax(-1)
        picked = logp[torch.arange(len(ids) - 1), torch.tensor(ids[1:])][len(p_ids) - 1:]
        total, count = total + picked.sum().item(), count + picked.numel()
    return total / count


def test_sft_weight_adds_the_chosen_drafts_nll(tmp_path, tiny_model_dir):
    """align.sft_weight (RPO): the same pairs and seed, with the chosen drafts' NLL beside the DPO loss, leave
    the chosen drafts more likely than DPO alone does."""
    from cowest.align.dpo import run_align
    from cowest.sft.train import run_sft

    logps = {}
    for name, extra in (("plain", ()), ("rpo", ("align.sft_weight=5.0",))):
        cfg = _cfg(tmp_path / name, tiny_model_dir, *extra)
        run_sft(cfg)
        write_feedback(cfg, 1)
        run_align(cfg, 1)
        logps[name] = _chosen_logprob(cfg)
    assert logps["rpo"] > logps["plain"] + 0.05, logps


def test_a_killed_dpo_resumes_from_its_last_checkpoint(tmp_path, tiny_model_dir, monkeypatch):
    """Killed during step 3 of 4, DPO resumes from the checkpoint at step 2, trains steps 3-4 only and ends
    where an uninterrupted run ends."""
    import torch
    from support.trainer_faults import count_steps, kill_before_step

    from cowest.align.dpo import run_align
    from cowest.rundir import RunDir
    from cowest.sft.train import run_sft

    cfgs = {k: _cfg(tmp_path / k, tiny_model_dir, "align.max_steps=4", "align.logging_steps=1") for k in "ab"}
    for cfg in cfgs.values():
        run_sft(cfg)
        write_feedback(cfg, 1)
    run_align(cfgs["a"])  # uninterrupted

    stage = RunDir(cfgs["b"]).align(1)
    kill_before_step(monkeypatch, 3)
    with pytest.raises(RuntimeError, match="killed"):
        run_align(cfgs["b"])
    assert (stage / "trainer" / "checkpoint-2" / "trainer_state.json").exists()
    assert not (stage / ".done.json").exists()
    steps = count_steps(monkeypatch)
    run_align(cfgs["b"])
    assert steps == [3, 4]
    metrics = json.loads((stage / "metrics.json").read_text())
    assert metrics["resumed_from"] == "checkpoint-2" and metrics["global_step"] == 4
    assert sorted(r["step"] for r in metrics["log_history"] if "loss" in r) == [1, 2, 3, 4]
    assert not (stage / "trainer").exists()  # checkpoints go once the adapter is saved
    ref, got = (_files(RunDir(c).align(1) / "dpo_adapter" / "adapter_model.safetensors") for c in cfgs.values())
    assert ref.keys() == got.keys() and all(torch.allclose(ref[k], got[k], atol=1e-6) for k in ref)
