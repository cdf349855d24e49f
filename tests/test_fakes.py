"""The fakes shipped in acetwist.testing provide the interfaces they stand in for."""

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from acetwist.interfaces import ICoordinator, IFollower, ISink
from acetwist.testing import FakeCoordinator, FakeSink


class FakeInterfaceTests(SynchronousTestCase):
    def test_fake_coordinator_provides_the_coordinator_interface(self) -> None:
        """FakeCoordinator and its followers provide ICoordinator and IFollower."""
        coordinator = FakeCoordinator()
        self.assertTrue(verifyObject(ICoordinator, coordinator))
        self.assertTrue(verifyObject(IFollower, coordinator.follow("k", lambda block, epoch: None)))

    def test_fake_sink_provides_the_sink_interface(self) -> None:
        """FakeSink provides ISink, as the real ClientSink does."""
        self.assertTrue(verifyObject(ISink, FakeSink()))

    def test_a_count_that_cannot_be_had_fails(self) -> None:
        """FakeCoordinator's count fails with count_error, as a coordinator does when it cannot count."""
        coordinator = FakeCoordinator()
        coordinator.count_error = RuntimeError("redis away")
        self.failureResultOf(coordinator.client_count("k"), RuntimeError)

    def test_the_real_sink_provides_the_sink_interface_too(self) -> None:
        """ClientSink, the sink players really get, declares and implements ISink."""
        from zope.interface.verify import verifyClass

        from acetwist.sink import ClientSink

        self.assertTrue(verifyClass(ISink, ClientSink))
