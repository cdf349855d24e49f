"""Stream key -> Channel, single-flight: every request for a key shares one channel."""

from __future__ import annotations

import weakref
from typing import Callable, Dict, List, Optional, Tuple

from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.server import Request

from acetwist.channel import Channel, ClientInfo, new_client_id
from acetwist.errors import EngineError, ErrorKind
from acetwist.interfaces import ISink, Lease
from acetwist.ring import TSRing
from acetwist.channel.engine_source import Granted
from acetwist.upstream import Selector

#: makes a player's sink: (request, ring to read, who to tell when it closes)
SinkFactory = Callable[[Request, TSRing, Callable[[ISink, str], None]], ISink]


#: a channel is redirected at most this many times in a row (each redirect
#: needs the owner of the key it was sent to to vanish in between)
MAX_REDIRECTS = 3


class Registry:
    """
    Finds or creates the channel for a selector, and wires players to it. A
    channel is registered under the key it was asked by (C{id:...} or
    C{infohash:...}) and, once the engine names its infohash, under
    C{infohash:...} too, so the same stream asked by content id and by
    infohash is one channel.

    Across workers the coordinator keeps the alias (L{ICoordinator.alias}):
    a claim of one key while the other is owned is redirected, and the
    registry moves the players to the channel for the other key
    (L{redirect}); an owner whose session names an infohash another worker
    owns defers to it (L{canonical}).

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
                 failed_content_ttl: float = 0.0, on_channel_ended: Optional[Callable[[], None]] = None) -> None:
        self._make_channel = make_channel
        self._on_channel_ended = on_channel_ended
        self._make_sink = make_sink
        self._by_key: Dict[str, Channel] = {}
        self._refused: Dict[str, Tuple[float, EngineError]] = {}
        #: how many redirects led to a channel
        self._hops: "weakref.WeakKeyDictionary[Channel, int]" = weakref.WeakKeyDictionary()
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
        self.check_client_limit()
        channel = self.channel_for(selector)
        sink = self._make_sink(request, channel.ring, channel.player_gone())
        channel.add_client(sink, self.client_info(request))
        channel.start()
        return sink

    def check_client_limit(self) -> None:
        """Raise a 503 when C{max_clients} players are connected already."""
        if self.max_clients and self.client_count() >= self.max_clients:
            raise EngineError(503, f"player limit ({self.max_clients}) reached", retry_after=10, kind=ErrorKind.LIMIT)

    def client_info(self, request: Request) -> ClientInfo:
        """Who is behind C{request}: a new player id, its address and user agent, now."""
        address = request.getClientAddress()
        return ClientInfo(
            client_id=new_client_id(),
            ip=getattr(address, "host", str(address)),
            user_agent=(request.getHeader(b"user-agent") or b"").decode("utf-8", "replace"),
            connected_at=self.clock.seconds(),
        )

    def canonical(self, channel: Channel, key: str, granted: Granted) -> bool:
        """
        C{channel}'s new session (C{granted}) says its stream is also known as C{key}.
        If another live channel serves C{key}, our JSON call has superseded
        that channel's session: it adopts C{granted}, C{channel}'s players
        move to it, C{channel} ends, and True is returned. Otherwise
        C{channel} is registered under C{key} too, and if another worker
        owns C{key} it defers to that worker on the next turn
        (L{_cluster_answer}). Either way the alias is recorded in the cluster.
        """
        other = self.get(key)
        answer = channel.coordinator.alias(channel.key, key)
        if other is None or other is channel:
            self._by_key[key] = channel
            # after this turn: the answer may come at once, and the engine source is still accepting the session
            answer.addCallback(lambda lease: self.clock.callLater(0, self._cluster_answer, channel, key, granted,
                                                                  lease))
            answer.addErrback(lambda f: self.log.warn("could not record that {key} is {other}: {why}",
                                                      key=channel.key, other=key, why=f.getErrorMessage()))
            return False
        answer.addErrback(lambda f: None)  # recorded for the other workers; nothing to decide here
        self._by_key[channel.key] = other
        other.adopt_session(granted)
        channel.hand_players_to(other)
        channel.handed_over()
        return True

    def _cluster_answer(self, channel: Channel, key: str, granted: Granted, lease: Optional[Lease]) -> None:
        """
        C{channel} (owner of its key) recorded that its stream is also C{key};
        C{lease} is who owns C{key} in the cluster. If another worker does,
        it opened its session for the stream first: C{channel} defers to it
        (its players go to this worker's channel for C{key}, which follows
        that worker; its own session is stopped).
        """
        if lease is None or lease.owner == channel.coordinator.worker_id:
            return
        if not channel.alive or channel.session is not granted.session:
            return  # ended, demoted, or on another session since (whose grant asks again)
        self.log.info("{key} is {other}, which {owner} serves: deferring to it", key=channel.key, other=key,
                      owner=lease.owner)
        error = self.redirect(channel, key)
        if error is not None:
            self.log.warn("{key} keeps its session: {why}", key=channel.key, why=error.message)
            self._by_key.setdefault(key, channel)
            return
        channel.stop(f"the same stream as {key}, served by {lease.owner}")

    def redirect(self, channel: Channel, key: str) -> Optional[EngineError]:
        """
        The cluster serves C{channel}'s stream under C{key}: C{channel}'s
        players move to this worker's channel for C{key} (found, or created
        and started), and later requests for C{channel}'s key go there too.
        Returns the error C{channel}'s players should get instead when that
        cannot be (C{channel} then ends with it).
        """
        if self._by_key.get(key) is channel:
            del self._by_key[key]  # registered there when its own session named the key
        hops = self._hops.get(channel, 0) + 1
        if hops > MAX_REDIRECTS:
            return EngineError(503, f"{channel.key} was redirected {MAX_REDIRECTS} times; the cluster is still "
                               "moving it", retry_after=2, kind=ErrorKind.CLUSTER)
        target = self.get(key)
        if target is None and not channel.sinks:
            return None  # nobody to move
        if target is None:
            kind, _, value = key.partition(":")
            if kind not in ("id", "infohash") or not value:
                return EngineError(503, f"{channel.key}: the cluster redirected it to {key!r}", retry_after=2,
                                   kind=ErrorKind.CLUSTER)
            try:
                self._check_refused(key)
            except EngineError as error:
                return error
            # a replacement, not one channel more: no max_channels check
            target = self._make_channel(Selector(kind, value, channel.selector.extra), self)
            self._by_key[key] = target
            self._hops[target] = hops
        self._by_key[channel.key] = target
        channel.hand_players_to(target)
        target.start()
        return None

    def forget(self, channel: Channel) -> None:
        keys = [k for k, v in self._by_key.items() if v is channel]
        for key in keys:
            del self._by_key[key]
        if self._on_channel_ended is not None:
            self._on_channel_ended()
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
