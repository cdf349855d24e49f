# -*- test-case-name: tests.test_registry -*-
"""Stream key -> Channel, single-flight: every request for a key shares one channel."""

from __future__ import annotations

from typing import Callable, Dict, List, Optional

from twisted.internet.defer import Deferred, DeferredList

from acetwist.channel import Channel
from acetwist.upstream import EngineError, Selector


class Registry:
    """
    Finds or creates the channel for a selector. A channel is registered
    under the key it was asked by (C{id:...} or C{infohash:...}) and, once
    the engine names its infohash, under C{infohash:...} too, so the same
    stream asked by content id and by infohash is one channel.
    """

    def __init__(self, make_channel: Callable[[Selector, "Registry"], Channel], *, max_channels: int = 0) -> None:
        self._make_channel = make_channel
        self._by_key: Dict[str, Channel] = {}
        self.max_channels = max_channels

    def channels(self) -> List[Channel]:
        """Every live channel, once each."""
        seen: Dict[int, Channel] = {}
        for channel in self._by_key.values():
            if channel.alive:
                seen.setdefault(id(channel), channel)
        return list(seen.values())

    def get(self, key: str) -> Optional[Channel]:
        channel = self._by_key.get(key)
        return channel if channel is not None and channel.alive else None

    def channel_for(self, selector: Selector) -> Channel:
        """The live channel for C{selector}, created (not yet started) if there is none."""
        existing = self.get(selector.key)
        if existing is not None:
            return existing
        if self.max_channels and len(self.channels()) >= self.max_channels:
            raise EngineError(503, f"channel limit ({self.max_channels}) reached", retry_after=10)
        channel = self._make_channel(selector, self)
        self._by_key[selector.key] = channel
        return channel

    def canonical(self, channel: Channel, key: str) -> Optional[Channel]:
        """
        C{channel}'s stream is also known as C{key}. Returns the other live
        channel already registered there, or registers C{channel} and
        returns None.
        """
        other = self.get(key)
        if other is not None and other is not channel:
            self._by_key[channel.key] = other
            return other
        self._by_key[key] = channel
        return None

    def forget(self, channel: Channel) -> None:
        for key in [k for k, v in self._by_key.items() if v is channel]:
            del self._by_key[key]

    def stop_all(self, reason: str = "shutting down") -> Deferred[None]:
        stops = [channel.stop(reason) for channel in self.channels()]
        return DeferredList(stops).addCallback(lambda _: None)
