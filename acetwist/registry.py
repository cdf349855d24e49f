"""Stream key -> Channel, single-flight: every request for a key shares one channel."""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Tuple

from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.server import Request

from acetwist.channel import Channel, ClientInfo, new_client_id
from acetwist.errors import EngineError, ErrorKind
from acetwist.interfaces import ISink
from acetwist.ring import TSRing
from acetwist.channel.engine_source import Granted
from acetwist.upstream import Selector

#: makes a player's sink: (request, ring to read, who to tell when it closes)
SinkFactory = Callable[[Request, TSRing, Callable[[ISink, str], None]], ISink]


class Registry:
    """
    Finds or creates the channel for a selector, and wires players to it. A
    channel is registered under the key it was asked by (C{id:...} or
    C{infohash:...}) and, once the engine names its infohash, under
    C{infohash:...} too, so the same stream asked by content id and by
    infohash is one channel.

    The engine keeps one session per content, so the key is the content
    alone: a player asking with other pass-through parameters joins the
    running channel, which keeps the parameters of the player who opened it.

    A content the engine refused (L{ErrorKind.REFUSED} before any data, as
    for "failed to load content") is remembered for C{failed_content_ttl}
    seconds: players asking for it then get the same error without an
    engine call.
    """

    log = Logger()

    def __init__(self, make_channel: Callable[[Selector, "Registry"], Channel], *, clock: IReactorTime,
                 make_sink: Optional[SinkFactory] = None, max_channels: int = 0, max_clients: int = 0,
                 failed_content_ttl: float = 0.0) -> None:
        self._make_channel = make_channel
        self._make_sink = make_sink
        self._by_key: Dict[str, Channel] = {}
        self._refused: Dict[str, Tuple[float, EngineError]] = {}
        self.clock = clock
        self.max_channels = max_channels
        self.max_clients = max_clients
        self.failed_content_ttl = failed_content_ttl

    def channels(self) -> List[Channel]:
        """Every live channel, once each."""
        seen: Dict[int, Channel] = {}
        for channel in self._by_key.values():
            if channel.alive:
                seen.setdefault(id(channel), channel)
        return list(seen.values())

    def client_count(self) -> int:
        return sum(len(channel.sinks) for channel in self.channels())

    def get(self, key: str) -> Optional[Channel]:
        channel = self._by_key.get(key)
        return channel if channel is not None and channel.alive else None

    def channel_for(self, selector: Selector) -> Channel:
        """The live channel for C{selector}, created (not yet started) if there is none."""
        existing = self.get(selector.key)
        if existing is not None:
            if existing.selector.extra != selector.extra:
                self.log.info("a player asked for {key} with {asked!r}; it joins the running channel, opened with {used!r}",
                              key=selector.key, asked=selector.parameters, used=existing.selector.parameters)
            return existing
        self._check_refused(selector.key)
        if self.max_channels and len(self.channels()) >= self.max_channels:
            raise EngineError(503, f"channel limit ({self.max_channels}) reached", retry_after=10, kind=ErrorKind.LIMIT)
        channel = self._make_channel(selector, self)
        self._by_key[selector.key] = channel
        return channel

    def join(self, selector: Selector, request: Request) -> ISink:
        """
        Attach the player behind C{request} to C{selector}'s channel (started
        if new) and return its sink. Raises L{EngineError} when a limit is reached.
        """
        assert self._make_sink is not None, "a registry that joins players needs make_sink"
        if self.max_clients and self.client_count() >= self.max_clients:
            raise EngineError(503, f"player limit ({self.max_clients}) reached", retry_after=10, kind=ErrorKind.LIMIT)
        channel = self.channel_for(selector)
        sink = self._make_sink(request, channel.ring, channel.player_gone())
        address = request.getClientAddress()
        info = ClientInfo(
            client_id=new_client_id(),
            ip=getattr(address, "host", str(address)),
            user_agent=(request.getHeader(b"user-agent") or b"").decode("utf-8", "replace"),
            connected_at=self.clock.seconds(),
        )
        channel.add_client(sink, info)
        channel.start()
        return sink

    def canonical(self, channel: Channel, key: str, granted: Granted) -> bool:
        """
        C{channel}'s new session (C{granted}) says its stream is also known as C{key}.
        If another live channel serves C{key}, our JSON call has superseded
        that channel's session: it adopts C{granted}, C{channel}'s players
        move to it, C{channel} ends, and True is returned. Otherwise
        C{channel} is registered under C{key} too.
        """
        other = self.get(key)
        if other is None or other is channel:
            self._by_key[key] = channel
            return False
        self._by_key[channel.key] = other
        other.adopt_session(granted)
        channel.hand_players_to(other)
        channel.handed_over()
        return True

    def forget(self, channel: Channel) -> None:
        keys = [k for k, v in self._by_key.items() if v is channel]
        for key in keys:
            del self._by_key[key]
        error = channel.error
        # a refusal counts for the content only when no pass-through parameter of one player caused it
        if (self.failed_content_ttl > 0 and error is not None and error.kind is ErrorKind.REFUSED
                and not channel.bytes_in and not channel.selector.extra):
            now = self.clock.seconds()
            for key, (until, _) in list(self._refused.items()):
                if until <= now:
                    del self._refused[key]  # so the memory is bounded by refusals per ttl
            for key in keys:
                self._refused[key] = (now + self.failed_content_ttl, error)

    def _check_refused(self, key: str) -> None:
        """Raise the remembered refusal of C{key}, if it is still fresh."""
        remembered = self._refused.get(key)
        if remembered is None:
            return
        until, error = remembered
        if self.clock.seconds() < until:
            raise error.copy()
        del self._refused[key]

    def stop_all(self, reason: str = "shutting down") -> "Deferred[None]":
        stops = [channel.stop(reason) for channel in self.channels()]
        return DeferredList(stops).addCallback(lambda _: None)
