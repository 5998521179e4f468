"""Token log-probs with their top alternatives from transformers' continuous batching manager.

The manager returns at most the chosen token's log-prob (``return_logprobs``), and the likelihood evaluator needs
the alternatives at the answer (p(gold option)). Two of its processor's methods are wrapped, on this one manager
only: the runner's ``_sample`` (it sees each step's logits, one row per request that gets a token) records the rows'
log-softmax top-k, and ``update_batch`` (it walks the step's requests in the same order, in synchronous mode)
files them under the request ids before the finished requests are handed out. On MedMCQA feedback prompts with
log-probs this answered 2.53x the calls/s of the static loop, which served such requests before, and recording cost
nothing measurable (bench/RESULTS.md, "Log-prob requests side by side").

These are transformers internals (5.x): :func:`attach` checks they are there and returns False otherwise; the
engine then sends log-prob requests to its static loop, as before.
"""

from __future__ import annotations

from typing import Any, Callable

from cowest.models.token_logprobs import StepLogprobs


def attach(manager: Any, recorder: StepLogprobs, wanted: Callable[[], bool]) -> bool:
    """Record log-probs for the requests ``manager`` runs into ``recorder`` (keys: request ids) while ``wanted()``
    (some running request asked for them: otherwise the steps pay nothing). False: not possible here."""
    create = getattr(manager, "_create_batch_processor", None)
    if create is None or getattr(manager, "continuous_batching_config", None) is None \
            or getattr(manager.continuous_batching_config, "use_async_batching", False):
        return False
    from transformers.generation.continuous_batching import continuous_api, model_runner

    if not (hasattr(model_runner.ModelRunner, "_sample") and hasattr(continuous_api.ContinuousBatchProcessor,
                                                                      "update_batch")):
        return False

    def create_recording() -> Any:
        proc = create()
        runner, io = proc.model_runner, proc.inputs_and_outputs
        sample, update = runner._sample, proc.update_batch
        step: list[Any] = [None]  # this step's entries, one per logits row

        def recording_sample(scores: Any, output_ids: Any) -> None:
            sample(scores, output_ids)
            rows = scores.shape[1]
            step[0] = recorder.entries(output_ids[0, :rows], scores[0, :rows]) if wanted() else None

        def recording_update() -> None:
            entries, step[0] = step[0], None
            if entries is not None:
                row = 0
                for fs in io.requests_in_batch:  # the rows' order (update_batch reads new_tokens in this order)
                    if fs.has_new_token:
                        recorder.add(fs.state.request_id, entries[row])
                        row += 1
            update()

        runner._sample, proc.update_batch = recording_sample, recording_update
        return proc

    manager._create_batch_processor = create_recording
    return True
