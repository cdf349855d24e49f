"""Tests for acetwist.config and the proxy's twistd Options."""

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from acetwist.config import ConfigError, parse_duration, parse_listen, parse_size, resolve
from acetwist.tap import Options


class ParserTests(SynchronousTestCase):
    def test_durations_in_every_accepted_form(self) -> None:
        """Durations accept plain seconds, fractions, ms, s, m, h and Go-style sums."""
        cases = {"15": 15, "1.5": 1.5, "500ms": 0.5, "15s": 15, "1m": 60, "1m30s": 90, "2h": 7200}
        for text, seconds in cases.items():
            self.assertEqual(parse_duration(text), seconds, text)

    def test_bad_durations_are_refused(self) -> None:
        """Words, trailing junk, and negatives are errors, not zero."""
        for text in ("soon", "10x", "", "-3", "1m foo", "nan", "inf"):
            self.assertRaises(ConfigError, parse_duration, text)

    def test_sizes(self) -> None:
        """Sizes accept bytes and binary or decimal units."""
        self.assertEqual(parse_size("65536"), 65536)
        self.assertEqual(parse_size("64KiB"), 65536)
        self.assertEqual(parse_size("16MiB"), 16 * 1024 * 1024)
        self.assertEqual(parse_size("1MB"), 1_000_000)
        self.assertRaises(ConfigError, parse_size, "lots")

    def test_acexy_listen_addresses_become_endpoints(self) -> None:
        """acexy's :8080 and host:port forms translate to Twisted endpoint strings; endpoints pass through."""
        self.assertEqual(parse_listen(":8080"), "tcp:8080")
        self.assertEqual(parse_listen("127.0.0.1:9000"), "tcp:9000:interface=127.0.0.1")
        self.assertEqual(parse_listen("[::1]:9000"), "tcp:9000:interface=\\:\\:1")
        self.assertEqual(parse_listen("tcp:8080:interface=127.0.0.1"), "tcp:8080:interface=127.0.0.1")
        self.assertRaises(ConfigError, parse_listen, "http://x")


class ResolveTests(SynchronousTestCase):
    def test_defaults(self) -> None:
        """With no flags and no environment, the documented defaults apply."""
        settings = resolve({}, {})
        self.assertEqual(settings.listen, "tcp:8080")
        self.assertEqual(settings.engine, "http://127.0.0.1:6878")
        self.assertIsNone(settings.redis)
        self.assertEqual(settings.grace, 15)

    def test_flag_beats_env_beats_acexy_beats_default(self) -> None:
        """A flag wins over ACETWIST_*, which wins over ACEXY_*, which wins over the default."""
        env = {"ACETWIST_GRACE": "30", "ACEXY_EMPTY_TIMEOUT": "1m", "ACETWIST_IDLE_TIMEOUT": "20"}
        self.assertEqual(resolve({"grace": "5"}, env).grace, 5)
        self.assertEqual(resolve({}, env).grace, 30)
        self.assertEqual(resolve({}, env).idle_timeout, 20)
        self.assertEqual(resolve({}, {"ACEXY_EMPTY_TIMEOUT": "1m"}).idle_timeout, 60)

    def test_acexy_engine_variables_compose_the_engine_url(self) -> None:
        """ACEXY_SCHEME, ACEXY_HOST and ACEXY_PORT build the engine URL like acexy does."""
        env = {"ACEXY_HOST": "acestream", "ACEXY_PORT": "6879"}
        self.assertEqual(resolve({}, env).engine, "http://acestream:6879")
        self.assertEqual(resolve({}, {"ACEXY_LISTEN_ADDR": ":9090"}).listen, "tcp:9090")

    def test_error_names_the_source_of_the_bad_value(self) -> None:
        """A bad environment value is reported with the variable's name."""
        error = self.assertRaises(ConfigError, resolve, {}, {"ACETWIST_GRACE": "forever"})
        self.assertIn("ACETWIST_GRACE", str(error))

    def test_engine_url_must_be_http(self) -> None:
        """An engine given without scheme or with a path is refused."""
        for bad in ("127.0.0.1:6878", "ftp://x", "http://host:6878/ace"):
            self.assertRaises(ConfigError, resolve, {"engine": bad}, {})


class OptionsTests(SynchronousTestCase):
    def test_bad_value_is_a_usage_error(self) -> None:
        """twistd sees a UsageError (exit code 1 with a message) for a bad option."""
        options = Options(environ={})
        self.assertRaises(usage.UsageError, options.parseOptions, ["--grace", "soon"])

    def test_options_produce_settings(self) -> None:
        """Parsed flags and environment produce typed settings."""
        options = Options(environ={"ACETWIST_TOKEN": "s3cret"})
        options.parseOptions(["--listen", "tcp:0:interface=127.0.0.1", "--grace", "2s"])
        assert options.settings is not None
        self.assertEqual(options.settings.grace, 2)
        self.assertEqual(options.settings.token, "s3cret")
        self.assertEqual(options.settings.listen, "tcp:0:interface=127.0.0.1")


class LimitsTests(SynchronousTestCase):
    def test_values_that_would_break_later_are_refused_at_start(self) -> None:
        """Options that parse alone but break the proxy later (tiny ring, sub-second lease, ...) are usage errors."""
        for flags in ({"ring-bytes": "1KiB"}, {"lease": "0.01"}, {"heartbeat": "60"}, {"block-flush": "0"},
                      {"client-max-lag": "100"}, {"redis-prefix": "a*b"}, {"redis": "redis://h:6379/zero"},
                      {"grace": "nan"}):
            self.assertRaises(ConfigError, resolve, flags, {})

    def test_join_backlog_must_fit_in_the_ring(self) -> None:
        """A --join-backlog not shorter than --ring-seconds is refused at start, naming both options."""
        for flags in ({"join-backlog": "10"}, {"join-backlog": "4", "ring-seconds": "3"}):
            with self.assertRaises(ConfigError) as caught:
                resolve(flags, {})
            self.assertIn("--join-backlog", str(caught.exception))
            self.assertIn("--ring-seconds", str(caught.exception))
        self.assertEqual(resolve({"join-backlog": "9.5"}, {}).join_backlog, 9.5)
        self.assertEqual(resolve({}, {"ACETWIST_JOIN_BACKLOG": "0"}).join_backlog, 0.0)

    def test_default_join_backlog_adapts_to_a_short_ring(self) -> None:
        """The default backlog is 5 s, or half of --ring-seconds when that is shorter (a short ring still starts)."""
        self.assertEqual(resolve({}, {}).join_backlog, 5.0)
        self.assertEqual(resolve({"ring-seconds": "4"}, {}).join_backlog, 2.0)

    def test_acexy_ipv6_engine_host_is_bracketed(self) -> None:
        """ACEXY_HOST=::1 builds a valid engine URL."""
        self.assertEqual(resolve({}, {"ACEXY_HOST": "::1"}).engine, "http://[::1]:6878")
