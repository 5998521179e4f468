"""A GGUF checkpoint as a transformers model directory, converted tensor by tensor.

    hf_dir = gguf_to_hf("qwen.gguf", "~/.cache/cowest/models/qwen-bf16")   # once; later calls return at once

transformers can load a GGUF directly (``from_pretrained(dir, gguf_file=...)``), but it dequantizes every tensor
into memory first and the result cannot be saved. Here each tensor is dequantized, renamed and cast to bf16 on
its own (transformers' own name map and tensor processors, so every architecture it reads works) and written to
safetensors shards of ~``shard_mb``: peak memory stays near one shard plus one fp32 tensor. The directory is
written under a temporary name and renamed when complete, so a killed conversion leaves nothing half-made.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from cowest.errors import ModelError

DONE = "cowest_converted.json"


def gguf_to_hf(gguf: str | Path, out_dir: str | Path, *, dtype: str = "bfloat16", shard_mb: int = 512,
               progress: bool = True) -> Path:
    gguf, out = Path(gguf), Path(out_dir).expanduser()
    if (out / DONE).is_file():
        return out
    import numpy as np
    import torch
    from gguf import GGUFReader, dequantize
    from safetensors.torch import save_file
    from tqdm.auto import tqdm
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.modeling_gguf_pytorch_utils import (
        TENSOR_PROCESSORS, TensorProcessor, get_gguf_hf_weights_map, load_gguf_checkpoint,
    )

    t0 = time.perf_counter()
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
        AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(tmp)
        with torch.device("meta"):
            skeleton = AutoModelForCausalLM.from_config(config)
        parsed = load_gguf_checkpoint(str(gguf), return_tensors=False)  # metadata only: what the processors read
        arch = parsed["config"].get("model_type", config.model_type)
        processor = TENSOR_PROCESSORS.get(arch, TensorProcessor)(config=parsed["config"])
        names = get_gguf_hf_weights_map(skeleton, processor)
        expected = set(skeleton.state_dict())
        target = getattr(torch, dtype)
        reader = GGUFReader(str(gguf))
        shard: dict[str, Any] = {}
        index: dict[str, str] = {}
        size = 0

        def flush() -> None:
            nonlocal shard, size
            if shard:
                name = f"model-{len(set(index.values())) + 1:05d}.safetensors"
                save_file(shard, str(tmp / name), metadata={"format": "pt"})
                index.update({k: name for k in shard})
                shard, size = {}, 0

        for tensor in tqdm(reader.tensors, desc=f"converting {gguf.name}", unit="tensor", disable=not progress):
            weights = dequantize(tensor.data, tensor.tensor_type)
            result = processor.process(weights=weights, name=tensor.name, tensor_key_mapping=names,
                                       parsed_parameters=parsed)
            hf_name = names.get(result.name)
            if hf_name is None:
                continue
            shard[hf_name] = torch.from_numpy(np.ascontiguousarray(result.weights)).to(target)
            size += shard[hf_name].numel() * shard[hf_name].element_size()
            del weights, result
            if size >= shard_mb * 2**20:
                flush()
        flush()
        missing = expected - set(index)
        if getattr(config, "tie_word_embeddings", False):
            missing -= {k for k in missing if k.endswith("lm_head.weight")}
        if missing:
            raise ModelError(f"{gguf.name}: no tensors for {sorted(missing)[:5]} after conversion")
        (tmp / "model.safetensors.index.json").write_text(json.dumps(
            {"metadata": {"total_size": 0}, "weight_map": dict(sorted(index.items()))}, indent=1))
        config.torch_dtype = dtype
        config.save_pretrained(tmp)
        (tmp / DONE).write_text(json.dumps({"from": str(gguf), "bytes": gguf.stat().st_size, "dtype": dtype,
                                            "seconds": round(time.perf_counter() - t0, 1)}))
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
    except ModelError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    except Exception as e:  # noqa: BLE001 - a GGUF transformers cannot read or map
        shutil.rmtree(tmp, ignore_errors=True)
        first = (str(e).strip() or type(e).__name__).splitlines()[0]
        raise ModelError(f"cannot convert {gguf.name} to a transformers model: {first}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
