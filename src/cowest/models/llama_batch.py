"""llama.cpp answering many chat requests at once: continuous batching over llama-cpp-python's own library.

    python -m cowest.models.llama_batch --model GGUF --port 8123 [--served-name NAME] [--max-batch 32]
        [--kv-tokens 16384] [--n-ctx 4096] [--threads N] [--extra-bufts auto|on|off]

``python -m llama_cpp.server`` answers one request at a time. This server keeps up to ``--max-batch`` requests in
one llama.cpp context as separate sequences of a unified KV cache and decodes them together: each step's batch
holds one token for every request that is generating plus a chunk of the prompts still being read, so a request
joins at the next step and leaves as soon as it ends (continuous batching, as ``llama-server``'s slots do, with
the same weights, quantized kernels and chat template as the one-slot server). A new prompt that begins like a
sequence already in the cache (the instruction every feedback prompt shares; the last finished request is kept
for the next one) gets those KV cells by ``llama_memory_seq_cp``, which copies no data, and only its own tokens
are computed.

KV memory is bounded by reservation: a running request reserves its prompt + ``max_tokens`` cells (shared cells
are counted for each holder, so the bound holds whatever is shared), the kept sequence its length; a request that
does not fit waits. Weight repacking ("extra buffer types") is off unless ``--extra-bufts on``: on Zen 4 it made
one-request generation faster but batched steps slower (bench/RESULTS.md, "llama.cpp with many sequences"), and
off is the setting that cannot crash on AMX CPUs (:mod:`cowest.models.llama_build`).

Greedy and sampled requests (temperature, top_p) and token log-probs are answered, with llama_cpp.server's chat
template and decoding defaults (:mod:`cowest.models.llama_compat`); the HTTP side is
:mod:`cowest.models.batch_server`'s.
"""

from __future__ import annotations

import collections
import ctypes
import sys
import threading
import time
from concurrent.futures import Future
from typing import Any

import numpy as np

from cowest.models.batch_server import Job, cut_at_stop, serve, server_parser
from cowest.models.continuous import BadRequest
from cowest.models.llama_compat import PENALTY_LAST_N, REPEAT_PENALTY, ChatTemplate, draw, penalized

MIN_SHARED = 8  # a shorter common prefix is not worth a sequence copy


class Done:
    """A finished request, as :func:`cowest.models.batch_server.cut_at_stop` reads it."""

    def __init__(self, text: str, prompt_tokens: int, completion_tokens: int, finish_reason: str,
                 logprobs: list[dict[str, Any]] | None):
        self.text, self.prompt_tokens, self.completion_tokens = text, prompt_tokens, completion_tokens
        self.finish_reason, self.logprobs = finish_reason, logprobs


class Seq:
    """One request (or the kept finished one) in the KV cache."""

    def __init__(self, job: Job | None, sid: int, prompt: list[int]):
        self.job, self.sid, self.prompt = job, sid, prompt
        self.in_kv = 0  # leading tokens of ``self.tokens`` whose KV cells are computed
        self.out: list[int] = []  # generated tokens
        self.text = b""
        self.logprobs: list[dict[str, Any]] | None = None if job is None or job.top_logprobs is None else []
        self.lender: Seq | None = None  # the sequence whose first ``share_n`` cells this one takes
        self.share_n = 0

    @property
    def tokens(self) -> list[int]:
        return self.prompt + self.out

    @property
    def reserved(self) -> int:
        return len(self.prompt) + self.job.max_tokens if self.job is not None else self.in_kv


class LlamaBatchEngine:
    """The model, its context and the scheduling loop (one thread owns the context)."""

    def __init__(self, gguf: str, *, max_rows: int, kv_tokens: int, n_ctx: int, threads: int,
                 extra_bufts: bool = False, n_batch: int = 512, log: Any = print):
        import llama_cpp as L

        self.L, self.max_rows, self.kv_tokens, self.n_ctx, self.n_batch, self.log = \
            L, max_rows, kv_tokens, n_ctx, n_batch, log
        self.chat = ChatTemplate(gguf)
        mp = L.llama_model_default_params()
        mp.use_extra_bufts = extra_bufts
        self.model = L.llama_model_load_from_file(gguf.encode(), mp)
        if not self.model:
            raise SystemExit(f"llama.cpp could not load {gguf}")
        self.vocab = L.llama_model_get_vocab(self.model)
        self.n_vocab = L.llama_vocab_n_tokens(self.vocab)
        cp = L.llama_context_default_params()
        cp.n_ctx, cp.n_batch, cp.n_ubatch = kv_tokens, n_batch, n_batch
        cp.n_seq_max = min(max_rows + 1, L.llama_max_parallel_sequences())  # + the kept finished sequence
        cp.n_threads = cp.n_threads_batch = threads
        cp.kv_unified = True  # one pool of cells for all sequences: shared prefixes and no per-sequence split
        self.ctx = L.llama_init_from_model(self.model, cp)
        if not self.ctx:
            raise SystemExit(f"llama.cpp could not make a context of {kv_tokens} tokens")
        self.max_rows = cp.n_seq_max - 1
        self.mem = L.llama_get_memory(self.ctx)
        self.batch = L.llama_batch_init(n_batch, 0, 1)
        self.pending: collections.deque[Job] = collections.deque()
        self.wake = threading.Condition()
        self.running: list[Seq] = []
        self.kept: Seq | None = None
        self.free = list(range(cp.n_seq_max))
        self.pieces: dict[int, bytes] = {}
        self.error: str | None = None
        self.done = self.cancelled = self.generated = self.shared_total = self.steps = self.computed = 0
        self.t_start = time.perf_counter()
        self.rng = np.random.default_rng(0)

    # -- the HTTP side's interface (cowest.models.batch_server.make_handler) --
    def submit(self, job: Job) -> Future:
        with self.wake:
            self.pending.append(job)
            self.wake.notify()
        return job.future

    def cancel(self, job: Job) -> None:
        job.cancelled = True  # dropped when the loop next looks at it (pending or running)

    def health(self) -> dict[str, Any]:
        return {"status": "ok", "scheduler": "llama.cpp continuous",
                "running": len(self.running), "queued": len(self.pending), "answered": self.done,
                "dropped": self.cancelled, "generated_tokens": self.generated, "kv_tokens": self.kv_tokens,
                "prompt_tokens_from_shared_cells": self.shared_total,
                **({"last_error": self.error} if self.error else {})}

    def start(self) -> "LlamaBatchEngine":
        threading.Thread(target=self.run_forever, name="cowest-llama-batch", daemon=True).start()
        return self

    # -- the loop --
    def prompt_of(self, job: Job) -> list[int]:
        ids, stop = self.chat(job.messages)
        job.stop = job.stop + stop
        return ids

    def run_forever(self) -> None:
        while True:
            with self.wake:
                while not self.pending and not self.running:
                    self.wake.wait()
            try:
                self.admit()
                if self.running:
                    self.step()
            except Exception as e:  # noqa: BLE001 - the running requests fail (HTTP 500), the server goes on
                self.error = f"{type(e).__name__}: {e}"
                self.fail_running(self.error)

    def admit(self) -> None:
        """Move queued requests into the cache while rows and reserved cells allow (in arrival order)."""
        while self.pending and len(self.running) < self.max_rows:
            job = self.pending[0]
            if job.cancelled:
                self.pending.popleft()
                self.cancelled += 1
                continue
            if not hasattr(job, "prompt_ids"):
                try:
                    job.prompt_ids = self.prompt_of(job)  # type: ignore[attr-defined]
                except Exception as e:  # noqa: BLE001 - e.g. the chat template refuses the messages
                    self.pending.popleft()
                    job.future.set_exception(BadRequest(f"the chat template failed: {type(e).__name__}: {e}"))
                    continue
            prompt = job.prompt_ids  # type: ignore[attr-defined]
            need = len(prompt) + job.max_tokens
            if need > min(self.n_ctx, self.kv_tokens):
                self.pending.popleft()
                job.future.set_exception(BadRequest(f"prompt ({len(prompt)} tokens) + max_tokens ({job.max_tokens}) "
                                                    f"exceed the context of {min(self.n_ctx, self.kv_tokens)} tokens"))
                continue
            used = sum(s.reserved for s in self.running)
            if used + need + (self.kept.reserved if self.kept else 0) > self.kv_tokens:
                if self.kept is None or used + need > self.kv_tokens:
                    return  # waits for a running request to finish
                self.drop_kept()
            self.pending.popleft()
            seq = Seq(job, self.free.pop(), prompt)
            self.plan_share(seq)
            self.running.append(seq)

    def plan_share(self, seq: Seq) -> None:
        """Which sequence this prompt's beginning takes its cells from, and how many: the kept one (computed) or a
        running one, whose prompt may still be being read: then this one waits for it. Prompts that arrive together
        (a stage's burst) would otherwise each compute the instruction they share."""
        best, n = None, 0
        for other in self.running + ([self.kept] if self.kept else []):
            k = common_prefix(other.prompt if other.job is not None else other.tokens[: other.in_kv], seq.prompt)
            if k > n:
                best, n = other, k
        n = min(n, len(seq.prompt) - 1)  # the last prompt token is computed: its logits give the first answer token
        if best is not None and n >= MIN_SHARED:
            seq.lender, seq.share_n = best, n

    def take_shared(self, seq: Seq) -> bool:
        """Copy the planned shared cells once the lender has them; False while this prompt must wait."""
        lender = seq.lender
        if lender is None:
            return True
        if lender is not self.kept and lender not in self.running:  # it left (dropped, put back): read it all
            seq.lender = None
            return True
        if lender.in_kv < seq.share_n:
            return False
        self.L.llama_memory_seq_cp(self.mem, lender.sid, seq.sid, 0, seq.share_n)  # tags cells; copies no data
        seq.in_kv, seq.lender = seq.share_n, None
        self.shared_total += seq.share_n
        return True

    def drop_kept(self) -> None:
        if self.kept is not None:
            self.release(self.kept)
            self.kept = None

    def release(self, seq: Seq) -> None:
        self.L.llama_memory_seq_rm(self.mem, seq.sid, -1, -1)
        self.free.append(seq.sid)

    def step(self) -> None:
        """One llama_decode: every generating request's next token, then prompt chunks while the batch has room."""
        for seq in [s for s in self.running if s.job.cancelled]:
            self.running.remove(seq)
            self.release(seq)
            self.cancelled += 1
        items: list[tuple[Seq, int, int, bool]] = []  # (sequence, token, position, wants logits)
        for seq in self.running:
            if seq.out and seq.in_kv == len(seq.prompt) + len(seq.out) - 1:  # its last token is not in the cache
                items.append((seq, seq.out[-1], seq.in_kv, True))
        for seq in self.running:
            room = self.n_batch - len(items)
            if room <= 0:
                break
            if not seq.out and seq.in_kv < len(seq.prompt) and self.take_shared(seq):
                chunk = seq.prompt[seq.in_kv: seq.in_kv + room]
                last = seq.in_kv + len(chunk) == len(seq.prompt)
                items += [(seq, t, seq.in_kv + i, last and i == len(chunk) - 1) for i, t in enumerate(chunk)]
        if not items:
            return
        b = self.batch
        for i, (seq, tok, pos, logits) in enumerate(items):
            b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = tok, pos, 1, logits
            b.seq_id[i][0] = seq.sid
        b.n_tokens = len(items)
        rc = self.L.llama_decode(self.ctx, b)
        if rc == 1 and (self.kept is not None or len(self.running) > 1):  # no room in the KV cache: make some
            self.drop_kept() if self.kept is not None else self.preempt()
            return
        if rc != 0:
            self.fail_running(f"llama_decode returned {rc}")
            return
        self.steps += 1
        self.computed += len(items)
        for seq, _, pos, _ in items:
            seq.in_kv = max(seq.in_kv, pos + 1)
        for i, (seq, _, _, logits) in enumerate(items):
            if logits:
                self.next_token(seq, i)

    def preempt(self) -> None:
        """The newest running request goes back to the head of the queue (it starts again)."""
        seq = self.running.pop()
        self.release(seq)
        self.pending.appendleft(seq.job)
        self.log(f"KV cache full: request put back in the queue ({len(self.running)} running)")

    def fail_running(self, why: str) -> None:
        self.log(f"{len(self.running)} requests failed: {why}")
        for seq in self.running:
            seq.job.future.set_exception(RuntimeError(why))
            self.release(seq)
        self.running = []
        self.drop_kept()

    def next_token(self, seq: Seq, i: int) -> None:
        job = seq.job
        x = np.ctypeslib.as_array(self.L.llama_get_logits_ith(self.ctx, i), shape=(self.n_vocab,))
        penalty = REPEAT_PENALTY if job.repeat_penalty is None else job.repeat_penalty
        z = penalized(x, seq.out[-PENALTY_LAST_N:], penalty)
        tok = int(z.argmax()) if job.temperature == 0 else draw(z, job.temperature, job.top_p, self.rng)
        if seq.logprobs is not None:
            logp = x - (x.max() + np.log(np.exp(x - x.max()).sum()))
            k = job.top_logprobs
            top = np.argpartition(-logp, k)[:k] if k else np.array([], dtype=int)
            top = top[np.argsort(-logp[top])]
            seq.logprobs.append({"token": self.piece(tok).decode(errors="replace"), "logprob": float(logp[tok]),
                                 "top": [[self.piece(int(t)).decode(errors="replace"), float(logp[t])] for t in top]})
        seq.out.append(tok)
        self.generated += 1
        eog = bool(self.L.llama_vocab_is_eog(self.vocab, tok))
        if not eog:
            seq.text += self.piece(tok)
        text = seq.text.decode(errors="ignore")
        reason = ("stop" if eog or any(s and s in text for s in job.stop) else
                  "length" if len(seq.out) >= job.max_tokens else None)
        if reason is None:
            return
        n = len(seq.out) - eog  # the end-of-generation token is not part of the answer, nor counted
        if seq.logprobs is not None and eog:
            seq.logprobs.pop()
        self.running.remove(seq)
        job.future.set_result(cut_at_stop(Done(seq.text.decode(errors="replace"), len(seq.prompt), max(n, 0), reason,
                                               seq.logprobs), job.stop))
        self.done += 1
        if self.done % 64 == 0:
            secs = time.perf_counter() - self.t_start
            self.log(f"{self.done} answered in {secs:.0f}s; prompt tokens: {self.shared_total} from shared cells, "
                     f"{self.computed} tokens computed in {self.steps} steps")
        seq.job = None  # kept for the next prompt that begins the same way
        self.drop_kept()
        self.kept = seq

    def piece(self, tok: int) -> bytes:
        if tok not in self.pieces:
            buf = ctypes.create_string_buffer(64)
            n = self.L.llama_token_to_piece(self.vocab, tok, buf, len(buf), 0, False)
            self.pieces[tok] = buf.raw[:max(n, 0)]
        return self.pieces[tok]


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def main(argv: list[str] | None = None) -> None:
    p = server_parser("llama.cpp answering many chat requests at once (OpenAI chat API)", "a GGUF file")
    p.add_argument("--max-batch", type=int, default=32, help="requests in the cache at once")
    p.add_argument("--kv-tokens", type=int, default=16384, help="KV cells over all requests (the memory bound)")
    p.add_argument("--n-ctx", type=int, default=4096, help="longest prompt + max_tokens accepted")
    p.add_argument("--threads", type=int, default=None, help="default: the physical cores")
    p.add_argument("--extra-bufts", choices=("auto", "on", "off"), default="auto",
                   help="llama.cpp's weight repacking; auto: off (faster batched steps, safe on AMX)")
    args = p.parse_args(argv)
    from cowest.models.cpu import physical_cores

    log = lambda s: print(s, flush=True)  # noqa: E731
    engine = LlamaBatchEngine(args.model, max_rows=args.max_batch, kv_tokens=args.kv_tokens, n_ctx=args.n_ctx,
                              threads=args.threads or physical_cores(), extra_bufts=args.extra_bufts == "on",
                              log=log).start()
    serve(engine, args, f"llama.cpp, continuous batching, {engine.max_rows} requests at once, KV budget "
                        f"{args.kv_tokens} tokens")


if __name__ == "__main__":
    sys.exit(main())
