# -*- test-case-name: tests.test_engine_pool_events -*-
"""
L{EventSender}: tells the orchestrator about engine sessions
(C{stream_started}, C{stream_ended}), fire and forget: each POST has a
deadline and a few retries with backoff, events of one stream go out in
the order they were sent (a move's C{stream_ended} before its
C{stream_started}), and nothing waits for them but L{EventSender.flush}.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Callable, Deque, Dict, Optional, Set, Union

import attr
from twisted.internet.defer import CancelledError, Deferred, DeferredList
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from acetwist.deferreds import observe
from acetwist.engines.http import CallFailed, JsonHTTP

log = Logger()

Body = Union[Dict[str, Any], Callable[[], Dict[str, Any]]]


@attr.s(auto_attribs=True, eq=False)
class _Event:
    name: str
    body: Body
    on_reply: Optional[Callable[[Any], None]] = None


class EventSender:
    """
    Sends events to C{base() + name}. C{attempts} tries each, C{timeout}
    seconds each, waiting C{backoff}, then twice that, between them; a 4xx
    answer is not retried. At most C{max_queued} events wait in all; more are
    dropped (and counted).
    """

    def __init__(self, http: JsonHTTP, clock: IReactorTime, base: Callable[[], str], *,
                 timeout: float = 5.0, attempts: int = 3, backoff: float = 1.0, max_queued: int = 1000) -> None:
        self.http = http
        self.clock = clock
        self.base = base
        self.timeout = timeout
        self.attempts = attempts
        self.backoff = backoff
        self.max_queued = max_queued
        self.counters: Dict[str, int] = {"sent": 0, "failed": 0, "dropped": 0, "retries": 0}
        self._queues: Dict[str, Deque[_Event]] = {}
        self._workers: Dict[str, Deferred[None]] = {}
        self._active: Set[str] = set()
        self._stopped = False

    @property
    def queued(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def send(self, stream: str, name: str, body: Body, on_reply: Optional[Callable[[Any], None]] = None) -> None:
        """
        Queue event C{name} for C{stream}. C{body} may be a callable, called
        just before the first attempt (so it can use what earlier events of
        the stream answered); C{on_reply} gets the JSON answer of a success.
        """
        if self._stopped:
            return
        if self.queued >= self.max_queued:
            self.counters["dropped"] += 1
            log.warn("orchestrator: {n} events waiting; dropping {name} for {stream}",
                     n=self.queued, name=name, stream=stream)
            return
        self._queues.setdefault(stream, deque()).append(_Event(name, body, on_reply))
        if stream not in self._active:
            self._active.add(stream)
            d = Deferred.fromCoroutine(self._drain(stream))
            if not d.called:
                self._workers[stream] = d
            d.addErrback(self._worker_failed, stream)

    def _worker_failed(self, failure: Failure, stream: str) -> None:
        self._workers.pop(stream, None)
        self._queues.pop(stream, None)
        self._active.discard(stream)
        if not failure.check(CancelledError):
            log.failure("orchestrator: sending events for {stream}", failure, stream=stream)

    async def _drain(self, stream: str) -> None:
        queue = self._queues[stream]
        while queue:
            event = queue[0]
            await self._deliver(stream, event)
            queue.popleft()
        del self._queues[stream]
        self._workers.pop(stream, None)
        self._active.discard(stream)

    async def _deliver(self, stream: str, event: _Event) -> None:
        body = event.body() if callable(event.body) else event.body
        url = self.base() + event.name
        why = ""
        for attempt in range(self.attempts):
            if attempt:
                self.counters["retries"] += 1
                await deferLater(self.clock, self.backoff * 2 ** (attempt - 1))
            try:
                reply = await self.http.post(url, body, self.timeout)
            except CallFailed as e:
                if self._stopped:
                    return
                why = e.why
                continue
            if 200 <= reply.code < 300:
                self.counters["sent"] += 1
                if event.on_reply is not None:
                    event.on_reply(reply.document)
                return
            why = f"HTTP {reply.code}"
            if 400 <= reply.code < 500 and reply.code not in (408, 429):
                break
        self.counters["failed"] += 1
        log.warn("orchestrator: {name} for {stream} not delivered ({why})", name=event.name, stream=stream, why=why)

    def flush(self, timeout: float) -> "Deferred[None]":
        """Fires when every queued event was delivered or given up, or after C{timeout}; then no more are sent."""
        done: Deferred[None] = Deferred()
        waiting = DeferredList([observe(d) for d in self._workers.values()])
        waiting.addBoth(lambda _: done.callback(None) if not done.called else None)
        timer = self.clock.callLater(timeout, lambda: done.callback(None) if not done.called else None)

        def stop(result: None) -> None:
            if timer.active():
                timer.cancel()
            self.stop()

        return done.addCallback(stop)

    def stop(self) -> None:
        """Abandon every queued event."""
        self._stopped = True
        for d in list(self._workers.values()):
            d.cancel()
        self._workers.clear()
        self._queues.clear()
        self._active.clear()


