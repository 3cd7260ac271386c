"""Result bytes on their way from a runtime's upload to a job's synchronous caller.

Owns `ResultPipe` (the bounded trio memory channel of result chunks: a slow caller slows the
runtime's upload, byte for byte, nothing re-encoded) and `ResultUpload` (one result post being
received: forwarded as it arrives, copied for later fetches within the retention limits, held
back while it may still be a function-failure report). The broker (broker.py) creates both and
finishes a job through them. Must not import quart or hypercorn.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from .core.jobs import (
    FAILURE_BODY_LIMIT,
    Job,
    JobResult,
    function_failure,
    may_be_failure,
)

if TYPE_CHECKING:
    from .broker import Broker

# Result chunks buffered between a runtime's upload and its synchronous caller.
PIPE_CAPACITY = 16
PREVIEW_BYTES = 1024


class ResultPipe:
    """Result chunks on their way from a runtime's upload to the job's synchronous caller."""

    def __init__(self, capacity: int = PIPE_CAPACITY) -> None:
        self.send_channel, self.receive_channel = trio.open_memory_channel[bytes](capacity)
        # Some bytes went into the channel: from then on the caller's answer is a 200 stream.
        self.delivered = False
        # The runtime's Content-Length, passed on to the caller.
        self.declared_length: int | None = None


class ResultUpload:
    """One runtime's result post for one job, fed chunk by chunk.

    The bytes are copied for later fetches and forwarded to the waiting caller as they arrive.
    The copy is kept up to `max_retained_result_bytes`, or, once bytes are streaming to a
    synchronous caller (who already gets them), up to the smaller
    `max_retained_streamed_result_bytes`: so a large streamed result is not held in memory
    twice. A caller that leaves mid-stream does not bring back bytes already dropped. Forwarding
    happens as they arrive, except while they may still turn out to be a
    function-failure report (a JSON object whose first key is "exception" or "error"): such a
    body is held back until it is complete (at most FAILURE_BODY_LIMIT bytes), so the caller can
    get an error instead of a 200.
    """

    def __init__(
        self,
        broker: Broker,
        job: Job,
        pipe: ResultPipe | None,
        declared_length: int | None,
        *,
        discard: bool,
    ) -> None:
        self.broker = broker
        self.job = job
        self.pipe = pipe
        self.discard = discard
        self.declared_length = declared_length
        self.size = 0
        self.copy: list[bytes] | None = [] if not discard else None
        self.preview = b""
        self.held: list[bytes] = []
        self.held_size = 0
        # None: cannot tell yet whether this is a failure report; True: it may be; False: it is not.
        self.maybe_failure: bool | None = None
        if pipe is not None and not pipe.delivered:
            pipe.declared_length = declared_length

    async def feed(self, chunk: bytes) -> None:
        if self.discard or not chunk:
            await trio.lowlevel.checkpoint()
            return
        self.size += len(chunk)
        if self.copy is not None:
            if self.size <= self._retention_limit():
                self.copy.append(chunk)
            else:
                self.copy = None
        if len(self.preview) < PREVIEW_BYTES:
            self.preview += chunk[: PREVIEW_BYTES - len(self.preview)]
        if self.maybe_failure is not False:
            self.held.append(chunk)
            self.held_size += len(chunk)
            if self.maybe_failure is None:
                self.maybe_failure = may_be_failure(self._head())
            if self.maybe_failure and self.held_size > FAILURE_BODY_LIMIT:
                self.maybe_failure = False
            if self.maybe_failure is not False:
                await trio.lowlevel.checkpoint()
                return
            held, self.held, self.held_size = self.held, [], 0
            for piece in held[:-1]:
                await self._forward(piece)
            chunk = held[-1]
        if self.declared_length is not None and self.size >= self.declared_length:
            # The last chunk of a body with a Content-Length: it travels with the end of the
            # result, so a small result reaches its caller as one response with a length.
            self.held.append(chunk)
            await trio.lowlevel.checkpoint()
            return
        await self._forward(chunk)

    def _retention_limit(self) -> int:
        limits = self.broker.limits
        if self.pipe is None or not self.pipe.delivered:
            # Nobody is streaming it (yet): a held-back failure report stays fetchable.
            return limits.max_retained_result_bytes
        return min(limits.max_retained_result_bytes, limits.max_retained_streamed_result_bytes)

    def _head(self) -> bytes:
        head = b""
        for piece in self.held:
            head += piece[:64]
            if len(head) >= 64:
                break
        return head

    async def _forward(self, chunk: bytes) -> None:
        pipe = self.pipe
        if pipe is None:
            await trio.lowlevel.checkpoint()
            return
        pipe.delivered = True
        try:
            await pipe.send_channel.send(chunk)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            # The caller left, or the job ended meanwhile: keep receiving, stop forwarding.
            self.pipe = None

    async def finish(self) -> None:
        """The body is complete: the job succeeds or fails, and the caller's stream ends."""
        if self.discard:
            await trio.lowlevel.checkpoint()
            return
        failure_message = None
        if self.maybe_failure is not False:
            failure_message = function_failure(b"".join(self.held))
        if failure_message is None:
            for piece in self.held:
                await self._forward(piece)
        self.held, self.held_size = [], 0
        result = JobResult(
            size=self.size,
            chunks=None if self.copy is None else tuple(self.copy),
            preview=self.preview,
        )
        self.broker._complete(self.job, result, failure_message)

    def abort(self) -> None:
        """The upload broke off: it does not count; a caller already streaming is cut."""
        if self.discard:
            return
        self.broker.jobs.abort_result(self.job)
        if self.pipe is not None and self.pipe.delivered:
            self.broker._close_pipe(self.job)
