"""transformers' Hub kernels stay off unless the user asks for them.

transformers 5 loads every model with ``use_kernels`` on unless the environment variable ``USE_HUB_KERNELS`` says
no, and on a GPU ``model.train()`` then fetches kernel code from the Hub (``kernels-community/rotary`` for a Llama).
Offline that is an error in the middle of SFT or DPO (seen on an H200: "could not verify publisher trust status",
bench/RESULTS.md "The CUDA paths on a GPU"); online it runs code the user never chose. cowest is offline first, so
its loads pass ``use_kernels=False``, unless ``USE_HUB_KERNELS`` is set, in which case transformers decides.
"""

from __future__ import annotations

import os
from typing import Any


def hub_kernels_kwargs() -> dict[str, Any]:
    """Extra ``from_pretrained`` keyword arguments: ``use_kernels=False`` on transformers 5+ (older ones have no
    such argument and no Hub kernels by default), nothing where ``USE_HUB_KERNELS`` is set."""
    if "USE_HUB_KERNELS" in os.environ:
        return {}
    import transformers

    major = int(transformers.__version__.split(".")[0])
    return {"use_kernels": False} if major >= 5 else {}
