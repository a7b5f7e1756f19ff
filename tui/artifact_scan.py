"""The local-artifact scan that the Models screen and the model chooser both
run: in their worker thread, what it finds posted back to them as messages."""

from __future__ import annotations

from textual.message_pump import MessagePump
from textual.worker import get_current_worker

from . import artifacts
from .messages import ArtifactRead, ArtifactsFound


def scan_to(target: MessagePump) -> None:
    """Scan (artifacts.scan) from inside a thread worker, posting ArtifactsFound
    (the listing, then again on errors) and ArtifactRead (each file's metadata)
    to ``target``; stops early when the worker is cancelled."""
    worker = get_current_worker()
    try:
        artifacts.scan(
            lambda found: target.post_message(ArtifactsFound(found)),
            lambda info: target.post_message(ArtifactRead(info)),
            lambda: worker.is_cancelled,
        )
    except OSError as e:
        target.post_message(ArtifactsFound([], error=f"{e.strerror or e}"))
