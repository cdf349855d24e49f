"""Events to the orchestrator: fire and forget, with deadlines and retries, in order per stream."""

from __future__ import annotations

from typing import Any, List

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from acetwist.engines.events import EventSender
from acetwist.engines.http import JsonHTTP
from acetwist.engines.testing import FakeHTTP, SentRequest

BASE = "http://orch:8000/api/v1/events/"


class EventSenderTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.http = FakeHTTP()
        self.sender = EventSender(JsonHTTP(self.http, self.clock), self.clock, lambda: BASE,
                                  timeout=5.0, attempts=3, backoff=1.0)

    def names(self) -> List[Any]:
        return [(r.url.rsplit("/", 1)[1], r.body.get("n")) for r in self.http.requests]

    def test_sent_at_once_with_the_body_as_json(self) -> None:
        """An event is POSTed at once as JSON; the answer reaches on_reply."""
        self.http.route(BASE, (200, {"id": "stream-1"}))
        replies: List[Any] = []
        self.sender.send("id:a", "stream_started", {"n": 1}, replies.append)
        [sent] = self.http.requests
        self.assertEqual((sent.method, sent.url, sent.body), ("POST", BASE + "stream_started", {"n": 1}))
        self.assertEqual(sent.headers["Content-Type"], "application/json")
        self.assertEqual(replies, [{"id": "stream-1"}])
        self.assertEqual(self.sender.counters["sent"], 1)

    def test_retries_with_backoff_then_gives_up(self) -> None:
        """A refused, timed-out or 5xx attempt is retried after 1 s, then 2 s; after three attempts it is given up."""
        answers: List[Any] = [ConnectionRefusedError("no"), None, (503, {})]
        self.http.route(BASE, lambda r: answers.pop(0) if answers else (200, {}))
        self.sender.send("id:a", "stream_ended", {"n": 1})
        self.assertEqual(len(self.http.requests), 1)
        self.clock.advance(1)
        self.assertEqual(len(self.http.requests), 2)
        self.clock.advance(5)  # the held attempt times out
        self.clock.advance(1.9)
        self.assertEqual(len(self.http.requests), 2)
        self.clock.advance(0.1)
        self.assertEqual(len(self.http.requests), 3)
        self.assertEqual(self.sender.counters["failed"], 1)
        self.clock.advance(60)
        self.assertEqual(len(self.http.requests), 3, "no attempt after the last")

    def test_a_client_error_is_not_retried(self) -> None:
        """A 4xx answer (other than 408/429) is final."""
        self.http.route(BASE, (422, {"detail": "bad"}))
        self.sender.send("id:a", "stream_started", {"n": 1})
        self.clock.advance(30)
        self.assertEqual((len(self.http.requests), self.sender.counters["failed"]), (1, 1))

    def test_order_is_kept_per_stream_while_retrying(self) -> None:
        """An ended event waiting for retries holds back the same stream's next event, not other streams'."""
        failing = [True]

        def answer(request: SentRequest) -> Any:
            if request.body["stream"] == "id:a" and failing[0]:
                return (500, {})
            return (200, {})

        self.http.route(BASE, answer)
        self.sender.send("id:a", "stream_ended", {"n": 1, "stream": "id:a"})
        self.sender.send("id:a", "stream_started", {"n": 2, "stream": "id:a"})
        self.sender.send("id:b", "stream_started", {"n": 3, "stream": "id:b"})
        self.assertEqual(self.names(), [("stream_ended", 1), ("stream_started", 3)])
        failing[0] = False
        self.clock.advance(1)
        self.assertEqual(self.names(), [("stream_ended", 1), ("stream_started", 3), ("stream_ended", 1),
                                        ("stream_started", 2)])
        self.assertEqual(self.sender.queued, 0)

    def test_a_callable_body_sees_what_an_earlier_event_answered(self) -> None:
        """A body given as a function is built just before its first attempt, after the earlier events' answers."""
        self.http.route(BASE, lambda r: None if r.body.get("n") == 1 else (200, {}))
        got: List[Any] = []
        self.sender.send("id:a", "stream_started", {"n": 1}, got.append)
        self.sender.send("id:a", "stream_ended", lambda: {"n": 2, "after": list(got)})
        self.http.route(BASE, (200, {"id": "x"}))
        self.clock.advance(5)  # the first attempt times out
        self.clock.advance(1)  # its retry answers
        self.assertEqual(self.http.requests[-1].body, {"n": 2, "after": [{"id": "x"}]})

    def test_flush_waits_then_abandons(self) -> None:
        """flush fires once every event is delivered or after its timeout; then queued events are dropped."""
        self.http.route(BASE, None)
        self.sender.send("id:a", "stream_ended", {"n": 1})
        self.sender.send("id:a", "stream_ended", {"n": 2})
        done = self.sender.flush(2.0)
        self.assertNoResult(done)
        self.clock.advance(2.0)
        self.successResultOf(done)
        self.assertEqual(self.sender.queued, 0)
        self.sender.send("id:a", "stream_ended", {"n": 3})
        self.assertEqual(len(self.http.requests), 1, "nothing is sent after the flush")

    def test_queue_is_bounded(self) -> None:
        """Beyond max_queued waiting events, new ones are dropped and counted."""
        sender = EventSender(JsonHTTP(self.http, self.clock), self.clock, lambda: BASE, max_queued=2)
        self.http.route(BASE, None)
        for n in range(4):
            sender.send(f"id:{n}", "stream_started", {"n": n})
        self.assertEqual((sender.queued, sender.counters["dropped"]), (2, 2))
        sender.stop()
