"""Framing: several encoded envelopes in one network message, one per line.

An encoded envelope is compact JSON and never contains a raw newline, so a burst of
messages to one subject travels as ``env1\\nenv2\\n…``, split below the server's size limit.
Pure functions, tested without a server.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

__all__ = ["frames", "split_frames"]

NEWLINE = b"\n"


def frames(payloads: Sequence[bytes], max_bytes: int) -> Iterator[bytes]:
    """Join ``payloads`` into as few frames as fit in ``max_bytes`` each, keeping order.

    Args:
        payloads: Encoded envelopes (each at most ``max_bytes``; a larger one gets a frame of
            its own and is left to the server to refuse).
        max_bytes: Largest frame.

    Yields:
        Frames of newline-separated payloads.
    """
    if len(payloads) == 1:
        yield payloads[0]
        return
    batch: list[bytes] = []
    size = 0
    for payload in payloads:
        extra = len(payload) + (1 if batch else 0)
        if batch and size + extra > max_bytes:
            yield NEWLINE.join(batch)
            batch, size = [], 0
            extra = len(payload)
        batch.append(payload)
        size += extra
    if batch:
        yield NEWLINE.join(batch)


def split_frames(data: bytes) -> list[bytes]:
    """The payloads of one frame, in order; empty lines are skipped."""
    if NEWLINE not in data:
        return [data] if data else []
    return [part for part in data.split(NEWLINE) if part]
