"""Shared set-up for integration tests: the real simulator and the real proxy on loopback."""

from __future__ import annotations

from typing import Any, Dict, List

from twisted.internet import reactor
from twisted.internet.defer import DeferredList, inlineCallbacks
from twisted.trial.unittest import TestCase

from acetwist.sim.contents import DEFAULT_CONTENTS
from acetwist.sim.testing import start_simulator
from acetwist.testing import Player, RunningProxy, start_proxy


class SimulatorProxyTestCase(TestCase):
    """
    Starts a simulator and a proxy in front of it for each test, and stops
    both (and every player) afterwards. Subclasses tune C{sim_config} and
    C{proxy_config}.
    """

    timeout = 60
    sim_config: Dict[str, Any] = {"prebuffer": 0.2, "burst": 1.0, "bitrate": 4_000_000}
    proxy_config: Dict[str, Any] = {"grace": 1.0, "first_byte_timeout": 5.0, "idle_timeout": 2.0,
                                    "backoff": 0.2, "recovery_first_byte_timeout": 3.0}

    @inlineCallbacks
    def setUp(self) -> Any:
        self.reactor = reactor
        self.sim = yield start_simulator(reactor, **self.sim_config)
        self.addCleanup(self.sim.stop)
        self.proxy: RunningProxy = start_proxy(reactor, self.sim.url, **self.proxy_config)
        self.addCleanup(self.proxy.stop)
        self.players: List[Player] = []
        self.addCleanup(self._hang_up_all)
        self.content = DEFAULT_CONTENTS[0]
        self.other_content = DEFAULT_CONTENTS[1]

    def _hang_up_all(self) -> Any:
        for player in self.players:
            player.hang_up()
        return DeferredList([p.done for p in self.players])

    def stream_url(self, content: Any = None, **params: str) -> str:
        content = content or self.content
        query = "&".join(f"{k}={v}" for k, v in params.items())
        url = f"{self.proxy.url}/ace/getstream?id={content.content_id}"
        return url + ("&" + query if query else "")

    def play(self, url: str = "", **kw: Any) -> Player:
        player = Player(self.reactor, url or self.stream_url(), **kw).start()
        self.players.append(player)
        return player

    # -- simulator facts (one place that knows the simulator's counter names)

    def counters(self) -> Dict[str, Any]:
        return self.sim.engine.counters.snapshot()

    def sessions_opened(self) -> int:
        return self.counters()["sessions_opened"]

    def json_calls(self, content: Any = None) -> int:
        content = content or self.content
        return self.counters()["json_calls"].get(content.content_id, 0)

    def assertCleanTS(self, player: Player) -> None:
        checker = player.checker
        self.assertTrue(checker.aligned_at_start, f"{player.end_reason}: not aligned at start")
        self.assertEqual(checker.cc_errors, 0, checker.cc_errors_by_pid)
        self.assertEqual(checker.resyncs, 0)
        self.assertTrue(checker.first_video_random_access)
        self.assertTrue(checker.psi_before_first_video)
        self.assertGreater(checker.packets, 100)

    # -- fault injection (one place that knows the simulator's fault API)

    def fault(self, name: str, content: Any = None, **params: Any) -> None:
        """Inject fault C{name} for C{content} (a DEFAULT_CONTENTS item) or, with None, engine-wide."""
        self.sim.engine.set_fault(name, content=content.content_id if content else None, **params)

    def clear_faults(self) -> None:
        self.sim.engine.clear_faults()
