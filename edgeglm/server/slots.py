"""``--parallel N``: up to N requests decode together, as llama-server's slots do.

One llama.cpp context holds N sequences (``n_seq_max``; each with ``n_ctx /
N`` of the KV cache, llama-server's split). Every step builds one
``llama_batch`` from all busy slots: the next token of each slot that is
generating, then prompt tokens of slots still prefilling (chunked to the
batch size), each token tagged with its slot's sequence id; one
``llama_decode`` runs them all, and each slot samples from its own row of
logits with a sampler chain of its own (the chain llama-cpp-python builds:
penalties, then greedy or top-k/typical/top-p/min-p/temperature/dist).
Decoding is memory-bound, so a batch of N tokens costs little more than one.

Prompt-prefix reuse: a slot keeps the tokens its sequence holds after a
request ends. A new request goes to the free slot whose cached tokens share
the longest prefix with its prompt; only the rest is removed
(``llama_memory_seq_rm``) and prefilled. A conversation that comes back turn
after turn prefills only its new tokens.

Everything runs on the engine thread (engine.py): the context is never
touched from another. A cancelled request (its client left) frees its slot
at the next step.
"""

from __future__ import annotations

import codecs
import time
from dataclasses import dataclass, field
from typing import Any

from edgeglm.backends.base import Completion, SamplingParams, Timings
from edgeglm.backends.text import StopStrings
from edgeglm.server.engine import Engine, Job
from edgeglm.server.metrics import Metrics
from edgeglm.server.schemas import APIError

# Tokens of earlier output the repeat penalty looks at (llama-cpp-python's last_n_tokens_size).
PENALTY_LAST_N = 64


@dataclass
class Slot:
    seq: int
    cached: list[int] = field(default_factory=list)  # tokens this sequence holds in the KV cache
    job: Job | None = None
    pending: list[int] = field(default_factory=list)  # prompt tokens still to prefill
    next_token: int | None = None  # sampled, not yet decoded
    sampler: Any = None
    budget: int = 0
    out: list[int] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    stops: StopStrings | None = None
    utf8: Any = None
    timings: Timings = field(default_factory=Timings)
    started: float = 0.0
    first: float = 0.0
    last_used: float = 0.0


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


class SlotEngine(Engine):
    """The engine for ``--parallel N`` over a LlamaCppModel loaded with n_seq_max=N."""

    def __init__(self, model: Any, *, parallel: int, queue_size: int, metrics: Metrics) -> None:
        super().__init__(model, queue_size=queue_size, metrics=metrics)
        import llama_cpp

        self.llm = model.llm
        ctx = self.llm._ctx.ctx
        seqs = int(llama_cpp.llama_n_seq_max(ctx))
        if seqs < parallel:
            raise ValueError(f"the context holds {seqs} sequences, not {parallel}")
        self.parallel = parallel
        self.slot_ctx = int(llama_cpp.llama_n_ctx(ctx)) // parallel  # each slot's share
        self.n_ctx = self.slot_ctx
        self.n_batch = int(llama_cpp.llama_n_batch(ctx))
        self.slots = [Slot(i) for i in range(parallel)]
        self.vocab = self.llm._model.vocab

    # -- the engine thread ------------------------------------------------------------

    def _take(self, block: bool) -> Job | None:
        with self._cv:
            while block and not self._waiting and not self._stopping:
                self._cv.wait()
            if self._stopping or not self._waiting:
                return None
            job = self._waiting.popleft()
            self.metrics.queue_depth.set(len(self._waiting))
            return job

    def _run(self) -> None:
        import llama_cpp

        batch = llama_cpp.llama_batch_init(self.n_batch, 0, self.parallel)
        self.llm.reset()  # the Llama object's own bookkeeping: its generate() is not used here
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(self.llm._ctx.ctx), True)
        try:
            while not self._stopping:
                busy = [s for s in self.slots if s.job is not None]
                while len(busy) < self.parallel:
                    job = self._take(block=not busy)
                    if job is None:
                        break
                    slot = self._admit(job)
                    if slot is not None:
                        busy.append(slot)
                if self._stopping:
                    break
                for s in busy:
                    if s.job is not None and s.job.cancelled.is_set():
                        self.metrics.cancelled.inc()
                        self._free(s)
                busy = [s for s in busy if s.job is not None]
                self.metrics.running.set(len(busy))
                if busy:
                    self._step(batch, busy)
                self.metrics.running.set(sum(s.job is not None for s in self.slots))
        finally:
            for s in self.slots:
                if s.job is not None:
                    self._send(s.job, "error", APIError(503, "the server is shutting down"))
                    self._free(s)
            llama_cpp.llama_batch_free(batch)
            self.alive = False
            self.metrics.running.set(0)
            self.model.close()

    def _admit(self, job: Job) -> Slot | None:
        """Tokenize ``job`` and give it the free slot with the longest cached prefix."""
        import llama_cpp

        if job.cancelled.is_set():
            return None
        try:
            tokens = self.model.tokenize(job.text, special=job.special)
            if not tokens:
                raise APIError(400, f"the {job.what} have no tokens", param=job.what)
            if len(tokens) >= self.slot_ctx:
                raise APIError(
                    400,
                    f"the prompt is {len(tokens)} tokens; each of this server's "
                    f"{self.parallel} slots holds {self.slot_ctx} (and the reply needs room)",
                    param=job.what,
                    code="context_length_exceeded",
                )
        except APIError as e:
            self._send(job, "error", e)
            return None
        free = [s for s in self.slots if s.job is None]
        slot = max(free, key=lambda s: (common_prefix(s.cached, tokens), -s.last_used))
        keep = min(common_prefix(slot.cached, tokens), len(tokens) - 1)  # one token makes logits
        llama_cpp.llama_memory_seq_rm(
            llama_cpp.llama_get_memory(self.llm._ctx.ctx), slot.seq, keep, -1
        )
        slot.cached = slot.cached[:keep]
        slot.pending = tokens[keep:]
        slot.job = job
        slot.next_token = None
        slot.sampler = self._sampler(job.params, tokens)
        slot.budget = min(job.params.max_tokens, self.slot_ctx - len(tokens))
        slot.out, slot.text = [], []
        slot.stops = StopStrings(job.params.stop)
        slot.utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        slot.timings = Timings(prompt_tokens=len(tokens))
        slot.started = time.perf_counter()
        self.metrics.prompt_tokens_cached.inc(keep)
        self._send(job, "start", len(tokens))
        return slot

    def _sampler(self, p: SamplingParams, prompt: list[int]) -> Any:
        from llama_cpp._internals import LlamaSampler

        s: Any = LlamaSampler()  # type: ignore[no-untyped-call]
        if p.repeat_penalty != 1.0:
            s.add_penalties(self.llm.n_vocab(), PENALTY_LAST_N, p.repeat_penalty, 0.0, 0.0)
        if p.temperature == 0:
            s.add_greedy()
        else:
            s.add_top_k(p.top_k)
            s.add_typical(1.0, 1)
            s.add_top_p(p.top_p, 1)
            s.add_min_p(p.min_p, 1)
            s.add_temp(p.temperature)
            s.add_dist(p.seed)
        if p.repeat_penalty != 1.0:
            for t in prompt[-PENALTY_LAST_N:]:
                s.accept(t)
        return s

    def _step(self, batch: Any, busy: list[Slot]) -> None:
        """One llama_decode over every busy slot, then one sample for each that has logits."""
        import llama_cpp

        n = 0
        sample_at: list[tuple[Slot, int]] = []

        def add(slot: Slot, token: int, logits: bool) -> None:
            nonlocal n
            batch.token[n] = token
            batch.pos[n] = len(slot.cached)
            batch.n_seq_id[n] = 1
            batch.seq_id[n][0] = slot.seq
            batch.logits[n] = logits
            slot.cached.append(token)
            if logits:
                sample_at.append((slot, n))
            n += 1

        for s in busy:  # generating slots first: one token each
            if not s.pending and s.next_token is not None:
                add(s, s.next_token, True)
                s.next_token = None
        for s in busy:  # then prompts, as much as the batch holds
            if s.pending and n < self.n_batch:
                chunk, s.pending = s.pending[: self.n_batch - n], s.pending[self.n_batch - n :]
                for i, t in enumerate(chunk):
                    add(s, t, not s.pending and i == len(chunk) - 1)
        batch.n_tokens = n
        self.metrics.batch_sequences.observe(len({s.seq for s, _ in sample_at}))
        rc = llama_cpp.llama_decode(self.llm._ctx.ctx, batch)
        if rc != 0:
            for s in busy:
                if s.job is not None:
                    self._send(
                        s.job,
                        "error",
                        APIError(500, f"llama_decode failed ({rc})", type="server_error"),
                    )
                    self._forget(s)
            return
        for s, i in sample_at:
            self._emit(s, int(s.sampler.sample(self.llm._ctx, i)))

    def _emit(self, s: Slot, token: int) -> None:
        import llama_cpp

        assert s.job is not None and s.stops is not None
        now = time.perf_counter()
        if not s.out and not s.first:
            s.first = now
            s.timings.time_to_first_token = s.timings.prompt_seconds = now - s.started
            self.metrics.ttft.observe(now - s.job.queued_at)
        if llama_cpp.llama_vocab_is_eog(self.vocab, token):
            self._finish(s, "stop")
            return
        s.out.append(token)
        piece = s.utf8.decode(self.llm.detokenize([token]))
        emit, stopped = s.stops.feed(piece)
        if emit:
            s.text.append(emit)
            self._send(s.job, "chunk", _chunk(emit, token))
        if stopped:
            self._finish(s, "stop")
        elif len(s.out) >= s.budget:
            self._finish(s, "length")
        else:
            s.next_token = token

    def _finish(self, s: Slot, reason: str) -> None:
        assert s.job is not None and s.stops is not None
        tail = s.stops.flush() + s.utf8.decode(b"", final=True)
        if tail:
            s.text.append(tail)
            self._send(s.job, "chunk", _chunk(tail, None))
        t = s.timings
        t.completion_tokens = len(s.out)
        t.decode_seconds = time.perf_counter() - s.first if s.out else 0.0
        done = Completion("".join(s.text), list(s.out), reason, t)
        self._account(s.job, done)
        self._send(s.job, "done", done)
        self._free(s)

    def _free(self, s: Slot) -> None:
        """The slot takes new work; its sequence keeps what it holds, for prefix reuse."""
        s.job = None
        s.first = 0.0
        s.pending = []
        s.next_token = None
        s.sampler = None
        s.last_used = time.perf_counter()

    def _forget(self, s: Slot) -> None:
        """A failed slot: its sequence is emptied."""
        import llama_cpp

        llama_cpp.llama_memory_seq_rm(llama_cpp.llama_get_memory(self.llm._ctx.ctx), s.seq, 0, -1)
        s.cached = []
        self._free(s)


def _chunk(text: str, token: int | None) -> Any:
    from edgeglm.backends.base import Chunk

    return Chunk(text, [] if token is None else [token])
