"""A registry of channels on task.Clock with a hand-driven engine and coordinator, for channel tests."""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from acetwist.channel import Channel
from acetwist.config import Settings
from acetwist.registry import Registry
from acetwist.testing import FakeCoordinator, FakeEngine, FakePool
from acetwist.upstream import Selector


class ChannelHarness(SynchronousTestCase):
    """
    C{self.registry} makes channels on one L{FakeEngine} (a pool of one) and
    a L{FakeCoordinator}; subclasses choose other fakes and the ladder's size.
    """

    reconnect_attempts = 2
    session_attempts = 1

    def make_engine(self) -> FakeEngine:
        return FakeEngine()

    def make_coordinator(self) -> FakeCoordinator:
        return FakeCoordinator()

    def setUp(self) -> None:
        self.clock = Clock()
        self.engine = self.make_engine()
        self.coordinator = self.make_coordinator()
        self.settings = Settings.defaults(grace=5.0, first_byte_timeout=30.0, idle_timeout=5.0, backoff=1.0,
                                          reconnect_attempts=self.reconnect_attempts,
                                          session_attempts=self.session_attempts, recovery_first_byte_timeout=4.0)
        self.registry = Registry(self.make_channel, clock=self.clock)

    def make_channel(self, selector: Selector, registry: Registry) -> Channel:
        return Channel(selector, pool=FakePool.of(self.engine), settings=self.settings, clock=self.clock,
                       coordinator=self.coordinator, on_gone=registry.forget, on_canonical=registry.canonical,
                       on_redirect=registry.redirect)
