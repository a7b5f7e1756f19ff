"""Prometheus metrics for /metrics, in a registry of each server's own
(two servers in one process, as in tests, never share counts)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "edgeglm_requests", "HTTP requests answered, by path and status",
            ["path", "status"], registry=r,
        )  # fmt: skip
        self.errors = Counter(
            "edgeglm_errors", "Requests refused or failed, by OpenAI error type",
            ["type"], registry=r,
        )  # fmt: skip
        self.queue_depth = Gauge(
            "edgeglm_queue_depth", "Requests waiting for the engine", registry=r
        )
        self.running = Gauge("edgeglm_requests_running", "Requests being generated", registry=r)
        self.prompt_tokens = Counter("edgeglm_prompt_tokens", "Prompt tokens processed", registry=r)
        self.completion_tokens = Counter(
            "edgeglm_completion_tokens", "Tokens generated", registry=r
        )
        self.decode_tps = Gauge(
            "edgeglm_decode_tokens_per_second", "Decode speed of the last request", registry=r
        )
        self.ttft = Histogram(
            "edgeglm_time_to_first_token_seconds", "From queueing to the first token",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=r,
        )  # fmt: skip
        self.cancelled = Counter(
            "edgeglm_generations_cancelled", "Generations stopped by a client leaving", registry=r
        )

        self.prompt_tokens_cached = Counter(
            "edgeglm_prompt_tokens_cached", "Prompt tokens reused from a slot's cache", registry=r
        )
        self.batch_sequences = Histogram(
            "edgeglm_batch_sequences", "Sequences sampled from one llama_decode (--parallel)",
            buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32, 64), registry=r,
        )  # fmt: skip

    def render(self) -> bytes:
        return generate_latest(self.registry)
