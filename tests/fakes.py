"""The test doubles live in L{acetwist.testing}; re-exported here for the tests that import them from here."""

from acetwist.testing import FakeCoordinator, FakeEngine, FakeFollower, FakeReader, FakeSink, gop

__all__ = ["FakeCoordinator", "FakeEngine", "FakeFollower", "FakeReader", "FakeSink", "gop"]
