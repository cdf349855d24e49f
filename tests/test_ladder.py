"""The recovery ladder as a plain value."""

from twisted.trial.unittest import SynchronousTestCase

from acetwist.channel.ladder import Ladder, Rung
from acetwist.errors import EngineError, ErrorKind

GONE = EngineError(502, "engine playback answered HTTP 404", kind=ErrorKind.GONE)
REFUSED_CONNECTION = EngineError(503, "engine unreachable", kind=ErrorKind.UNREACHABLE)


class LadderTests(SynchronousTestCase):
    def test_rereads_come_first_then_sessions_then_giving_up_with_doubling_delays(self) -> None:
        """Without a definitive answer the ladder re-reads, then opens sessions, doubling the delay up to the cap."""
        ladder = Ladder(rereads=3, sessions=2, backoff=1.0)
        steps = [ladder.next(REFUSED_CONNECTION) for _ in range(6)]
        self.assertEqual([s.rung for s in steps], [Rung.REREAD] * 3 + [Rung.SESSION] * 2 + [Rung.GIVE_UP])
        self.assertEqual([s.delay for s in steps[:5]], [1.0, 2.0, 4.0, 8.0, 8.0])
        self.assertEqual([s.attempt for s in steps[:5]], [1, 2, 3, 4, 5])

    def test_a_definitive_answer_skips_the_rereads_and_opens_a_session_at_once(self) -> None:
        """When the engine says the session is gone, the next step is a new session with no delay."""
        ladder = Ladder(rereads=3, sessions=2, backoff=1.0)
        first = ladder.next()
        gone = ladder.next(GONE)
        self.assertEqual((first.rung, first.delay), (Rung.REREAD, 1.0))
        self.assertEqual((gone.rung, gone.delay), (Rung.SESSION, 0.0))
        self.assertEqual(ladder.next(REFUSED_CONNECTION).rung, Rung.SESSION)
        self.assertEqual(ladder.next(REFUSED_CONNECTION).rung, Rung.GIVE_UP)

    def test_failed_sessions_back_off(self) -> None:
        """A session that failed for a non-definitive reason is retried after the backoff."""
        ladder = Ladder(rereads=0, sessions=2, backoff=0.5)
        self.assertEqual(ladder.next(REFUSED_CONNECTION).delay, 0.5)
        self.assertEqual(ladder.next(REFUSED_CONNECTION).delay, 1.0)

    def test_a_takeover_starts_at_the_session_rungs(self) -> None:
        """With no playback URL of its own to re-read, a new owner's ladder has only session rungs."""
        ladder = Ladder(rereads=3, sessions=1, backoff=1.0)
        ladder.skip_rereads()
        self.assertEqual([ladder.next().rung, ladder.next().rung], [Rung.SESSION, Rung.GIVE_UP])
