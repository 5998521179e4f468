"""LoRA training step time on CPU in fp32 and bf16, side by side in one run (what `sft.bf16=auto` picks).

    python bench/train_precision.py [--rounds 3] [--batch 4] [--length 200]

The demo's weak model (SmolLM2-135M, offline alias) with the SFT section's LoRA (r 16, all linear layers), one
optimizer step (forward, backward, AdamW) on a fixed batch of token ids, three ways:
- fp32: fp32 weights, no autocast (`sft.bf16=false`, the old CPU default);
- autocast: fp32 weights under bf16 autocast (what a full fine-tune gets under `bf16=auto`);
- bf16: the frozen base loaded in bf16 under autocast, LoRA weights fp32 (`bf16=auto` with LoRA).
Cases interleave (A B C C B A ...) so a noisy neighbour slows them alike; the median per case is reported, with
the training loss at the last step (all cases start from the same seed and take the same steps). Prints a markdown table; raw figures go to
``bench/out/train_precision.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import OUT, machine_line, machine, md_table, now_utc  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--length", type=int, default=200)
    args = ap.parse_args()

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from cowest.config import SFTConfig
    from cowest.models.cpu import cpu_has_native_bf16
    from cowest.models.offline import resolve_weak_model

    if not cpu_has_native_bf16():
        print("skipped: this CPU has no native bf16 (avx512_bf16 / AMX), so sft.bf16=auto stays fp32 here")
        return
    path, _ = resolve_weak_model("offline:smollm2-135m-instruct")
    s = SFTConfig()
    lora = LoraConfig(r=s.lora_r, lora_alpha=s.lora_alpha, lora_dropout=0.0, target_modules=s.lora_target_modules,
                      task_type="CAUSAL_LM")

    def build(dtype):
        torch.manual_seed(0)  # same LoRA init in every case
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(path, dtype=dtype), lora)
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)
        return model, opt

    cases = {"fp32": (torch.float32, False), "autocast": (torch.float32, True), "bf16": (torch.bfloat16, True)}
    built = {name: build(dtype) for name, (dtype, _) in cases.items()}
    x = torch.randint(100, 40000, (args.batch, args.length), generator=torch.Generator().manual_seed(0))

    def step(name: str) -> tuple[float, float]:
        model, opt = built[name]
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cases[name][1]):
            loss = model(input_ids=x, labels=x).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        return time.perf_counter() - t, loss.item()

    times: dict[str, list[float]] = {n: [] for n in cases}
    losses: dict[str, float] = {}
    for n in cases:  # warm-up: oneDNN primitive creation
        step(n)
    order = list(cases)
    for r in range(args.rounds):
        for n in order if r % 2 == 0 else order[::-1]:
            dt, losses[n] = step(n)
            times[n].append(dt)
    base = statistics.median(times["fp32"])
    rows = [[n, f"{statistics.median(t):.2f}", f"{base / statistics.median(t):.2f}x", f"{losses[n]:.4f}"]
            for n, t in times.items()]
    print(f"\n{now_utc()}; {machine_line(machine())}; batch {args.batch} x {args.length} tokens, "
          f"{args.rounds} rounds + warm-up\n")
    print(md_table(["case", "median s/step", "speed vs fp32", f"loss at step {args.rounds + 1}"], rows))
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "train_precision.json").write_text(json.dumps({"date": now_utc(), "args": vars(args), "times": times,
                                                           "losses": losses}, indent=1))


if __name__ == "__main__":
    main()
