"""
A follower's source: another worker's mirrored blocks into the channel's
ring (L{MirrorSource}), and the watch for a vanished owner that leads to a
takeover (L{OwnerWatch}).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Protocol

from automat import TypeMachineBuilder
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import implementer

from acetwist.channel.weak import weakly
from acetwist.interfaces import Block, ClaimResult, ICoordinator, IFollower, IStreamSource, Lease, Redirect
from acetwist.ring import TSRing


class _MirrorInputs(Protocol):
    def start(self) -> None:
        """Follow the owner's mirror."""

    def stop(self) -> None:
        """Stop following."""

    def _block(self, block: Block, epoch: int) -> None: ...


@dataclass
class MirrorCore:
    key: str
    coordinator: ICoordinator
    ring: TSRing
    on_bytes: Callable[[int], None]
    #: replay the mirror's history (from its oldest block), not just from its newest keyframe
    from_start: bool = False
    #: a fresh follower's ring starts this far back in the mirror (the players' join backlog)
    join_backlog: float = 0.0
    phase: str = "starting"
    epoch: Optional[int] = None
    log: Logger = field(default_factory=Logger)


@dataclass
class _Following:
    follower: IFollower
    segment: Optional[int] = None
    seq: Optional[int] = None


def _build_mirror() -> Callable[[MirrorCore], _MirrorInputs]:
    machine = TypeMachineBuilder(_MirrorInputs, MirrorCore)

    def subscribe(m: _MirrorInputs, s: MirrorCore) -> _Following:
        # a new upstream: players resume at the next keyframe
        s.ring.flush()
        # an empty ring takes the mirror's backlog, so the players waiting on it start fast; a ring
        # that had blocks (a demoted owner) goes on from the newest keyframe, so nothing repeats
        backlog = s.join_backlog if s.ring.next_seq == 0 else 0.0
        s.ring.discontinuity()
        s.log.info("{key}: following the owner's mirror", key=s.key)
        return _Following(s.coordinator.follow(s.key, weakly(m._block), from_start=s.from_start,
                                               backlog=backlog))

    idle = machine.state("Idle")
    following = machine.state("Following", subscribe)
    stopped = machine.state("Stopped")

    idle.upon(_MirrorInputs.start).to(following).returns(None)
    idle.upon(_MirrorInputs.stop).to(stopped).returns(None)

    @following.upon(_MirrorInputs._block).loop()
    def block(m: _MirrorInputs, s: MirrorCore, f: _Following, block: Block, epoch: int) -> None:
        # a new owner, a new upstream at the owner, or a hole in the mirror: restart at a keyframe
        if f.seq is not None and (epoch != s.epoch or block.segment != f.segment or block.seq != f.seq + 1):
            s.ring.discontinuity()
        s.epoch, f.segment, f.seq = epoch, block.segment, block.seq
        s.phase = "live"
        s.on_bytes(len(block.data))
        s.ring.append_block(block.data, block.keyframe, block.psi, block.mark)

    @following.upon(_MirrorInputs.stop).to(stopped)
    def unsubscribe(m: _MirrorInputs, s: MirrorCore, f: _Following) -> None:
        f.follower.stop()

    following.upon(_MirrorInputs.start).loop().returns(None)
    for call in (_MirrorInputs.start, _MirrorInputs.stop):
        stopped.upon(call).loop().returns(None)
    stopped.upon(_MirrorInputs._block).loop().returns(None)
    return machine.build()


_MirrorMachine = _build_mirror()


@implementer(IStreamSource)
class MirrorSource:
    """A follower reads the owner's mirror; its first block makes the channel live."""

    def __init__(self, core: MirrorCore) -> None:
        self.core = core
        self._machine = _MirrorMachine(core)

    @property
    def phase(self) -> str:
        return self.core.phase

    @property
    def epoch(self) -> Optional[int]:
        return self.core.epoch

    def start(self) -> None:
        self._machine.start()

    def stop(self) -> None:
        self._machine.stop()

    def block_cut(self) -> None:
        """The ring cut a block (the mirror's own blocks already made the source live)."""


class _WatchInputs(Protocol):
    def start(self) -> None:
        """Begin watching the owner."""

    def stop(self) -> None:
        """Stop watching."""

    def _tick(self) -> None: ...

    def _owner(self, lease: Optional[Lease]) -> None: ...

    def _unknown(self) -> None: ...

    def _claim(self) -> None: ...

    def _won(self, lease: Lease) -> None: ...

    def _lost(self) -> None: ...

    def _redirected(self, key: str) -> None: ...


def _no_redirect(key: str) -> None:
    """The default C{on_redirect}: nothing to do."""


@dataclass
class WatchCore:
    """
    @ivar patience: how long no owner must be seen before claiming: longer
        than a live owner needs to notice its lease vanished and re-claim it.
    @ivar wanted: the worker still has players for the stream (only then is
        taking over worth an engine session).
    @ivar on_redirect: the takeover claim was redirected: the stream is owned
        under another key (the owner deferred to that key's owner).
    """

    key: str
    coordinator: ICoordinator
    clock: IReactorTime
    interval: float
    patience: float
    wanted: Callable[[], bool]
    on_takeover: Callable[[Lease], None]
    on_redirect: Callable[[str], None] = _no_redirect
    log: Logger = field(default_factory=Logger)


@dataclass
class _Watching:
    loop: LoopingCall
    orphan_since: Optional[float] = None

    def cancel(self) -> None:
        if self.loop.running:
            self.loop.stop()


def _build_watch() -> Callable[[WatchCore], _WatchInputs]:
    machine = TypeMachineBuilder(_WatchInputs, WatchCore)

    def ask_periodically(w: _WatchInputs, s: WatchCore) -> _Watching:
        loop = LoopingCall(weakly(w._tick))
        loop.clock = s.clock
        loop.start(s.interval, now=False)
        return _Watching(loop)

    idle = machine.state("Idle")
    watching = machine.state("Watching", ask_periodically)
    claiming = machine.state("Claiming")
    done = machine.state("Done")

    idle.upon(_WatchInputs.start).to(watching).returns(None)
    idle.upon(_WatchInputs.stop).to(done).returns(None)

    @watching.upon(_WatchInputs._tick).loop()
    def tick(w: _WatchInputs, s: WatchCore, data: _Watching) -> None:
        s.coordinator.owner(s.key).addCallbacks(w._owner, lambda f: w._unknown())

    @watching.upon(_WatchInputs._owner).loop()
    def seen(w: _WatchInputs, s: WatchCore, data: _Watching, lease: Optional[Lease]) -> None:
        if lease is not None:
            data.orphan_since = None
            return
        now = s.clock.seconds()
        if data.orphan_since is None:
            data.orphan_since = now
        elif now - data.orphan_since >= s.patience and s.wanted():
            w._claim()

    @watching.upon(_WatchInputs._unknown).loop()
    def unknown(w: _WatchInputs, s: WatchCore, data: _Watching) -> None:
        data.orphan_since = None  # the cluster cannot answer: nothing is known, the wait starts over

    @watching.upon(_WatchInputs._claim).to(claiming)
    def claim(w: _WatchInputs, s: WatchCore, data: _Watching) -> None:
        data.cancel()
        s.coordinator.claim(s.key).addCallbacks(lambda result: _claimed(w, result), lambda f: w._lost())

    @watching.upon(_WatchInputs.stop).to(done)
    def stop_watching(w: _WatchInputs, s: WatchCore, data: _Watching) -> None:
        data.cancel()

    @claiming.upon(_WatchInputs._won).to(done)
    def won(w: _WatchInputs, s: WatchCore, lease: Lease) -> None:
        s.log.info("{key}: owner gone; taking over with epoch {epoch}", key=s.key, epoch=lease.epoch)
        s.on_takeover(lease)

    @claiming.upon(_WatchInputs._redirected).to(done)
    def redirected(w: _WatchInputs, s: WatchCore, key: str) -> None:
        s.log.info("{key}: owner gone; the stream is owned as {other} now", key=s.key, other=key)
        s.on_redirect(key)

    claiming.upon(_WatchInputs._lost).to(watching).returns(None)
    claiming.upon(_WatchInputs._claim).loop().returns(None)
    claiming.upon(_WatchInputs.stop).to(done).returns(None)

    @done.upon(_WatchInputs._won).loop()
    def won_too_late(w: _WatchInputs, s: WatchCore, lease: Lease) -> None:
        s.coordinator.release(s.key, lease)

    for state in (claiming, done):
        state.upon(_WatchInputs._owner).loop().returns(None)
        state.upon(_WatchInputs._unknown).loop().returns(None)
        state.upon(_WatchInputs._tick).loop().returns(None)
    for call in (_WatchInputs.start, _WatchInputs.stop, _WatchInputs._lost, _WatchInputs._claim):
        done.upon(call).loop().returns(None)
    done.upon(_WatchInputs._redirected).loop().returns(None)
    return machine.build()


def _claimed(w: _WatchInputs, result: ClaimResult) -> None:
    if isinstance(result, Lease):
        w._won(result)
    elif isinstance(result, Redirect):
        w._redirected(result.key)
    else:
        w._lost()


_WatchMachine = _build_watch()


class OwnerWatch:
    """Asks who owns the stream; after no owner for C{patience} seconds, a worker with players takes over."""

    def __init__(self, core: WatchCore) -> None:
        self._machine = _WatchMachine(core)

    def start(self) -> None:
        self._machine.start()

    def stop(self) -> None:
        self._machine.stop()
