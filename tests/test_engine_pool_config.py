"""The engine pool's options: several engines, the orchestrator, capacity, probes and failover."""

from __future__ import annotations

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from acetwist.config import ConfigError, Settings, resolve
from acetwist.tap import Options


def parse(argv: list, environ: dict = {}) -> Settings:  # noqa: B006 (never mutated)
    options = Options(environ=environ)
    options.parseOptions(argv)
    assert options.settings is not None
    return options.settings


class EngineListTests(SynchronousTestCase):
    def test_default_is_one_local_engine(self) -> None:
        """Without --engine the one default engine is both engine and the whole list."""
        s = resolve({}, {})
        self.assertEqual((s.engine, s.engines), ("http://127.0.0.1:6878", ("http://127.0.0.1:6878",)))
        self.assertIsNone(s.orchestrator)
        self.assertIsNone(s.engine_max_streams)
        self.assertEqual((s.orchestrator_interval, s.engine_check_interval, s.failover_timeout), (5, 10, 60))

    def test_repeated_flag(self) -> None:
        """--engine given several times lists every engine in order; engine is the first."""
        s = parse(["--engine", "http://a:6878", "--engine", "http://b:6878/"])
        self.assertEqual(s.engines, ("http://a:6878", "http://b:6878"))
        self.assertEqual(s.engine, "http://a:6878")

    def test_comma_separated_flag_and_environment(self) -> None:
        """A comma-separated list works in the flag and in ACETWIST_ENGINE; the flag wins."""
        self.assertEqual(parse(["--engine", "http://a:1, http://b:2"]).engines, ("http://a:1", "http://b:2"))
        env = {"ACETWIST_ENGINE": "http://c:3,http://d:4"}
        self.assertEqual(parse([], env).engines, ("http://c:3", "http://d:4"))
        self.assertEqual(parse(["--engine", "http://e:5"], env).engines, ("http://e:5",))

    def test_acexy_engine_still_works(self) -> None:
        """acexy's ACEXY_HOST/ACEXY_PORT give the one engine as before."""
        s = resolve({}, {"ACEXY_HOST": "acestream", "ACEXY_PORT": "6879"})
        self.assertEqual(s.engines, ("http://acestream:6879",))

    def test_bad_lists_are_usage_errors(self) -> None:
        """A bad URL anywhere in the list, an empty list or a duplicate is a usage error naming the source."""
        for value in ("http://a:1,ftp://b", ",", "http://a:1,http://a:1", "http://a:1/path"):
            with self.assertRaises(usage.UsageError) as caught:
                parse(["--engine", value])
            self.assertIn("--engine", str(caught.exception))
        self.assertRaises(ConfigError, resolve, {}, {"ACETWIST_ENGINE": "nope"})

    def test_replace_keeps_engine_and_engines_together(self) -> None:
        """Settings.replace with engine alone makes it the only engine; with engines alone, engine is the first."""
        s = Settings.defaults(engine="http://x:1")
        self.assertEqual(s.engines, ("http://x:1",))
        s = s.replace(engines=("http://y:2", "http://z:3"))
        self.assertEqual(s.engine, "http://y:2")


class OrchestratorTests(SynchronousTestCase):
    def test_orchestrator_replaces_the_static_list(self) -> None:
        """With --orchestrator the static list is empty; URL, key and interval are read."""
        s = parse(["--orchestrator", "http://orch:8000/", "--orchestrator-key", "k",
                   "--orchestrator-interval", "2s"])
        self.assertEqual((s.orchestrator, s.orchestrator_key, s.orchestrator_interval), ("http://orch:8000", "k", 2))
        self.assertEqual(s.engines, ())

    def test_orchestrator_with_an_explicit_engine_is_refused(self) -> None:
        """--engine (or ACETWIST_ENGINE) together with --orchestrator is a usage error; acexy's variables are ignored."""
        self.assertRaises(usage.UsageError, parse, ["--orchestrator", "http://o:8000", "--engine", "http://a:1"])
        self.assertRaises(usage.UsageError, parse, ["--orchestrator", "http://o:8000"],
                          {"ACETWIST_ENGINE": "http://a:1"})
        s = parse(["--orchestrator", "http://o:8000"], {"ACEXY_HOST": "acestream"})
        self.assertEqual(s.engines, ())

    def test_orchestrator_options_need_an_orchestrator(self) -> None:
        """--orchestrator-key or --orchestrator-interval without --orchestrator is a usage error."""
        self.assertRaises(usage.UsageError, parse, ["--orchestrator-key", "k"])
        self.assertRaises(usage.UsageError, parse, [], {"ACETWIST_ORCHESTRATOR_INTERVAL": "3"})

    def test_bad_orchestrator_values(self) -> None:
        """A non-HTTP orchestrator URL, one with a query, or a zero interval are usage errors."""
        for argv in (["--orchestrator", "orch:8000"], ["--orchestrator", "http://o:8000/?x=1"],
                     ["--orchestrator", "http://o", "--orchestrator-interval", "0"]):
            self.assertRaises(usage.UsageError, parse, argv)


class CapacityAndTimingTests(SynchronousTestCase):
    def test_max_streams_given_or_not(self) -> None:
        """--engine-max-streams is None when not given (the orchestrator's value applies), else the number, 0 included."""
        self.assertIsNone(parse([]).engine_max_streams)
        self.assertEqual(parse(["--engine-max-streams", "0"]).engine_max_streams, 0)
        self.assertEqual(parse([], {"ACETWIST_ENGINE_MAX_STREAMS": "3"}).engine_max_streams, 3)
        for bad in ("-1", "two", "1.5"):
            self.assertRaises(usage.UsageError, parse, ["--engine-max-streams", bad])

    def test_intervals(self) -> None:
        """Probe interval must be positive; the failover timeout may be 0 (give up at once)."""
        s = parse(["--engine-check-interval", "500ms", "--failover-timeout", "0"])
        self.assertEqual((s.engine_check_interval, s.failover_timeout), (0.5, 0))
        self.assertRaises(usage.UsageError, parse, ["--engine-check-interval", "0"])
        self.assertRaises(usage.UsageError, parse, ["--failover-timeout", "-5"])

    def test_help_lists_the_new_options(self) -> None:
        """--help shows every new option with its environment variable."""
        text = str(Options())
        for name in ("--engine=", "ACETWIST_ENGINE", "--orchestrator=", "ACETWIST_ORCHESTRATOR_KEY",
                     "--orchestrator-interval", "--engine-max-streams", "--engine-check-interval",
                     "--failover-timeout"):
            self.assertIn(name, text)
