"""The weak model's own decode loop helpers: token choice, end-of-sequence ids, the cache-kwarg probe."""

from types import SimpleNamespace

import torch

from cowest.models.decoding import _pick, eos_ids, forward_names


def test_pick_is_argmax_at_temperature_zero_and_stays_in_the_nucleus():
    logits = torch.tensor([[0.0, 5.0, 4.9, -9.0]] * 64)
    assert _pick(logits, 0.0, 1.0, None).tolist() == [1] * 64
    gen = torch.Generator().manual_seed(0)
    picked = set(_pick(logits, 1.0, 0.5, gen).tolist())
    assert picked == {1}  # token 1 alone holds >= half the mass
    picked = set(_pick(logits, 1.0, 0.99, torch.Generator().manual_seed(0)).tolist())
    assert picked <= {0, 1, 2} and {1, 2} <= picked  # never the -9 tail


def test_eos_ids_prefer_the_generation_config():
    tok = SimpleNamespace(eos_token_id=7, pad_token_id=0)
    assert eos_ids(SimpleNamespace(generation_config=SimpleNamespace(eos_token_id=[2, 3])), tok) == [2, 3]
    assert eos_ids(SimpleNamespace(), tok) == [7]
    assert eos_ids(SimpleNamespace(), SimpleNamespace(eos_token_id=None, pad_token_id=0)) == [0]


def test_forward_names_reads_the_forward_signature():
    class Causal:
        config = SimpleNamespace(is_encoder_decoder=False)

        def forward(self, input_ids, past_key_values=None, logits_to_keep=0):
            pass

    class NoCache(Causal):
        def forward(self, input_ids):
            pass

    assert forward_names(Causal()) == ("past_key_values", "logits_to_keep")
    assert forward_names(NoCache()) is None
