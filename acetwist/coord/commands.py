# -*- test-case-name: tests.test_coord_redis -*-
"""
L{Commands}: the two ways the Redis coordinator sends a command, and the
counters they keep.

- a request, whose answer the caller needs: it waits for a connection and
  the answer, both within C{command_timeout}, and errbacks with
  L{CoordinatorUnavailable};
- a fire-and-forget write (mirror publishes, heartbeats, player records,
  metadata): skipped and counted while no connection is up or while
  C{max_in_flight} of them are unanswered, never queued.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from acetwist.coord.base import CoordinatorUnavailable
from acetwist.coord.link import Link, RedisConnection, is_refusal, is_timeout
from acetwist.coord.settings import RedisSettings

log = Logger()


class Commands:
    """
    Sends commands over a L{Link}. C{what} names the call in counters
    (C{<what>_failed}, C{<what>_skipped}); C{route} picks the connection, so
    commands with the same route stay in order.
    """

    def __init__(self, link: Link, settings: RedisSettings, reactor: IReactorTime) -> None:
        self.link = link
        self.settings = settings
        self.reactor = reactor
        self.counters: Dict[str, int] = {}
        self.in_flight = 0
        self.max_in_flight_seen = 0
        self.stopping = False

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    def request(self, what: str, route: str, command: Sequence[Any], last: bool = False) -> Deferred[Any]:
        """
        A command whose answer the caller needs (C{last}: also while
        stopping); errbacks with L{CoordinatorUnavailable}.
        """
        if self.stopping and not last:
            return defer.fail(CoordinatorUnavailable("coordinator stopped"))
        sent: List[RedisConnection] = []

        def send(_: Any) -> Deferred[Any]:
            conn = self.link.connection(route)
            if conn is None:
                raise CoordinatorUnavailable("no Redis connection")
            sent.append(conn)
            return defer.maybeDeferred(conn.execute_command, *command)

        d = self.link.when_up().addCallback(send)
        d.addTimeout(self.settings.command_timeout, self.reactor)

        def failed(failure: Failure) -> None:
            self.count(f"{what}_failed")
            if is_timeout(failure) and sent:
                self.link.drop(sent[0])
            if is_refusal(failure):
                log.error("Redis refused {what}: {why}", what=what, why=failure.getErrorMessage())
            if isinstance(failure.value, CoordinatorUnavailable):
                raise failure.value
            why = failure.getErrorMessage() or (failure.type.__name__ if failure.type else "failed")
            raise CoordinatorUnavailable(f"{what}: {why}")

        return d.addErrback(failed)

    def fire(self, what: str, route: str, command: Sequence[Any]) -> Optional[Deferred[Any]]:
        """
        A fire-and-forget command; None when skipped. The Deferred fires with
        the answer, or None if the command failed (it never errbacks).
        """
        if self.stopping:
            return None
        conn = self.link.connection(route)
        if conn is None or self.in_flight >= self.settings.max_in_flight:
            self.count(f"{what}_skipped")
            return None
        self.in_flight += 1
        self.max_in_flight_seen = max(self.max_in_flight_seen, self.in_flight)
        d = self.link.send(conn, *command)

        def done(result: Any) -> Any:
            self.in_flight -= 1
            if isinstance(result, Failure):
                self.count(f"{what}_failed")
                if is_refusal(result):
                    log.error("Redis refused {what}: {why}", what=what, why=result.getErrorMessage())
                return None
            return result

        return d.addBoth(done)

    def stats(self) -> Dict[str, int]:
        out = dict(self.counters)
        out.update(in_flight=self.in_flight, max_in_flight_seen=self.max_in_flight_seen)
        return out
