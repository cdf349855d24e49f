# -*- test-case-name: tests.test_sim_tap -*-
"""
The simulator's settings: one table of options shared by the twistd plugin
(flags and C{ACETWIST_SIM_<NAME>} variables) and by the in-process API
(L{acetwist.sim.testing.start_simulator} keyword arguments).
"""

from __future__ import annotations

import re
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import attr

from acetwist.config import ConfigError, parse_duration, parse_listen
from acetwist.sim import faults as faultlib
from acetwist.sim.contents import DEFAULT_CONTENTS, Catalog, Content, parse_contents
from acetwist.sim.tsgen import minimum_bitrate

_BITRATE = re.compile(r"(\d+(?:\.\d+)?)\s*([km]?)(?:bit(?:/s)?|bps)?", re.I)

FaultSpec = Tuple[str, Optional[str], Dict[str, Any]]

MAX_ENGINES = 64
#: endpoint kinds whose first positional argument (or C{port=}) is a TCP port
_PORT_KINDS = ("tcp", "tcp6", "ssl")
_UNESCAPED_COLON = re.compile(r"(?<!\\):")
_HOSTNAME = re.compile(r"[A-Za-z0-9_.\-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\]|[0-9A-Fa-f:.]{2,45}")


def parse_bitrate(text: str) -> int:
    """Bits per second from C{"4000000"}, C{"4M"}, C{"4Mbit"}, C{"800k"}."""
    match = _BITRATE.fullmatch(str(text).strip())
    if not match:
        raise ConfigError(f"{text!r} is not a bitrate (examples: 4000000, 4M, 800k)")
    value = float(match.group(1)) * {"": 1, "k": 1000, "m": 1_000_000}[match.group(2).lower()]
    if not 100_000 <= value <= 1_000_000_000:
        raise ConfigError(f"{text!r}: bitrate must be between 100k and 1000M bits per second")
    return int(value)


def parse_bool(text: str) -> bool:
    value = str(text).strip().lower()
    if value in ("1", "yes", "true", "on"):
        return True
    if value in ("0", "no", "false", "off"):
        return False
    raise ConfigError(f"{text!r} is not yes or no")


def _seconds(low: float, high: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = parse_duration(str(text))
        if not low <= value <= high:
            raise ConfigError(f"{text!r} must be between {low:g} s and {high:g} s")
        return value

    return parse


def _integer(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = str(text).strip()
        if not value.isdigit() or not low <= int(value) <= high:
            raise ConfigError(f"{text!r} must be a whole number between {low} and {high}")
        return int(value)

    return parse


def parse_encrypted(text: str) -> Tuple[str, ...]:
    """Content references from C{"channel-1,<content id>"}, or C{("*",)} for every content; C{""} for none."""
    refs = tuple(part.strip() for part in str(text).split(",") if part.strip())
    if "*" in refs and len(refs) > 1:
        raise ConfigError("encrypted: '*' (every content) stands alone")
    return refs


def _optional_listen(text: str) -> Optional[str]:
    return parse_listen(text) if str(text).strip() else None


def _key(text: str) -> Optional[str]:
    value = str(text).strip()
    if len(value) > 200 or any(ord(c) < 33 or ord(c) > 126 for c in value):
        raise ConfigError("the key must be at most 200 printable ASCII characters without spaces")
    return value or None


def _host(text: str) -> Optional[str]:
    value = str(text).strip()
    if value and not _HOSTNAME.fullmatch(value):
        raise ConfigError(f"{text!r} is not a host name or address")
    return value or None


def _endpoint_parts(description: str) -> Tuple[str, List[str]]:
    parts = _UNESCAPED_COLON.split(description)
    return parts[0], parts[1:]


def endpoint_port(description: str) -> Optional[int]:
    """The TCP port a C{tcp:}, C{tcp6:} or C{ssl:} endpoint description names, or None for other kinds."""
    kind, args = _endpoint_parts(description)
    if kind not in _PORT_KINDS:
        return None
    for arg in args:
        if arg.startswith("port="):
            return int(arg[5:]) if arg[5:].isdigit() else None
    positional = [arg for arg in args if "=" not in arg]
    return int(positional[0]) if positional and positional[0].isdigit() else None


def with_port(description: str, port: int) -> str:
    """C{description} (a C{tcp:}, C{tcp6:} or C{ssl:} endpoint) listening on C{port} instead."""
    kind, args = _endpoint_parts(description)
    if kind not in _PORT_KINDS:
        raise ConfigError(f"{description!r} is not a tcp, tcp6 or ssl endpoint")
    for i, arg in enumerate(args):
        if arg.startswith("port="):
            args[i] = f"port={port}"
            break
        if "=" not in arg:
            args[i] = str(port)
            break
    else:
        args.insert(0, str(port))
    return ":".join([kind, *args])


def endpoint_interface(description: str) -> Optional[str]:
    """The C{interface=} of an endpoint description, unescaped, or None."""
    _, args = _endpoint_parts(description)
    for arg in args:
        if arg.startswith("interface="):
            return arg[len("interface="):].replace("\\:", ":") or None
    return None


def engine_endpoints(listen: str, engines: int) -> List[str]:
    """
    Where each of C{engines} engines listens: C{listen} itself for one;
    consecutive ports from C{listen}'s for several (port 0: a free port each).
    """
    if engines == 1:
        return [listen]
    port = endpoint_port(listen)
    if port is None:
        raise ConfigError(f"--engines {engines} needs a tcp, tcp6 or ssl endpoint with a port, not {listen!r}")
    if port == 0:
        return [listen] * engines
    if port + engines - 1 > 65535:
        raise ConfigError(f"--engines {engines} from port {port} would go past port 65535")
    return [with_port(listen, port + i) for i in range(engines)]


def parse_fault_specs(text: str) -> List[FaultSpec]:
    """Faults from C{spec[;spec...]} (the environment variable form)."""
    specs = []
    for item in filter(None, (part.strip() for part in str(text).split(";"))):
        name, content, params = faultlib.parse_spec(item)
        specs.append((name, content, faultlib.validate(name, params)))
    return specs


@attr.s(frozen=True, auto_attribs=True)
class Option:
    name: str  # the flag without dashes; the keyword is name with '-' -> '_'
    default: Optional[str]
    parse: Callable[[str], Any]
    help: str

    @property
    def key(self) -> str:
        return self.name.replace("-", "_")

    @property
    def env(self) -> str:
        return "ACETWIST_SIM_" + self.key.upper()


#: Every option: flag C{--name}, variable C{ACETWIST_SIM_NAME}, keyword C{name}.
OPTIONS: Tuple[Option, ...] = (
    Option("listen", "tcp:6878", parse_listen, "Endpoint to listen on (twistd only)."),
    Option("bitrate", "4000000", parse_bitrate, "Stream bitrate in bit/s (4000000, 4M, 800k)."),
    Option("prebuffer", "2", _seconds(0, 3600), "Seconds from session creation to the first playback headers."),
    Option("burst", "2", _seconds(0, 600), "Seconds of stream sent at link speed when a reader connects."),
    Option("gop", "1", _seconds(0.2, 10), "GOP length in seconds (one random-access point per GOP)."),
    Option("idle-timeout", "60", _seconds(0.01, 86400), "Seconds without a reader before a session expires."),
    Option("stat-keeps-alive", "yes", parse_bool, "Whether a stat poll counts as player activity (yes/no)."),
    Option("contents", "3", parse_contents, "A count (channel-1..N) or comma-separated channel names."),
    Option("encrypted", "", parse_encrypted,
           "Contents served only as HLS (is_encrypted: 1): comma-separated names, content ids or infohashes, "
           "or * for all; none by default."),
    Option("tick", "0.04", _seconds(0.005, 0.5), "Pacing tick in seconds."),
    Option("engines", "1", _integer(1, MAX_ENGINES),
           "Number of engines, on consecutive ports from --listen's (tcp:0: a free port each)."),
    Option("engine-host", None, _host,
           "Host the orchestrator's records give for the engines (default: the listen interface, or 127.0.0.1)."),
    Option("orchestrator-listen", None, _optional_listen,
           "Endpoint for the orchestrator look-alike that lists the engines (twistd only; none by default)."),
    Option("orchestrator-key", None, _key, "API key the orchestrator look-alike requires (X-API-Key); none: open."),
    Option("max-streams-per-engine", "2", _integer(0, 100_000),
           "What the orchestrator's /api/v1/proxy/config says for max_streams_per_engine (0: no limit)."),
)
OPTIONS_BY_KEY = {option.key: option for option in OPTIONS}


@attr.s(frozen=True, auto_attribs=True, kw_only=True)
class SimConfig:
    """Validated simulator settings. Build with L{SimConfig.from_values}."""

    listen: str = "tcp:6878"
    bitrate: int = 4_000_000
    prebuffer: float = 2.0
    burst: float = 2.0
    gop: float = 1.0
    idle_timeout: float = 60.0
    stat_keeps_alive: bool = True
    contents: Tuple[Content, ...] = tuple(DEFAULT_CONTENTS)
    encrypted: Tuple[str, ...] = ()
    tick: float = 0.04
    faults: Tuple[FaultSpec, ...] = ()
    engines: int = 1
    engine_host: Optional[str] = None
    orchestrator_listen: Optional[str] = None
    orchestrator_key: Optional[str] = None
    max_streams_per_engine: int = 2

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> "SimConfig":
        """
        Settings from keywords: strings are parsed like flags, numbers and
        booleans are taken as they are (and checked the same way); C{contents}
        may also be a list of L{Content}, and C{faults} a list of spec strings,
        C{(name, content, params)} tuples or C{{"name", "content", ...params}}
        dicts. Raises ConfigError.
        """
        unknown = sorted(set(values) - set(OPTIONS_BY_KEY) - {"faults"})
        if unknown:
            raise ConfigError(f"unknown simulator setting {', '.join(unknown)}; "
                              f"known: {', '.join(sorted([*OPTIONS_BY_KEY, 'faults']))}")
        kwargs: Dict[str, Any] = {}
        for key, value in values.items():
            if value is None:
                continue
            if key == "faults":
                kwargs[key] = tuple(_fault_specs(value))
            elif key == "contents" and not isinstance(value, (str, int)):
                items = tuple(value)
                if not items or not all(isinstance(c, Content) for c in items):
                    raise ConfigError("contents: give a count, a spec string or a non-empty list of Content")
                kwargs[key] = items
            elif key == "encrypted" and not isinstance(value, str):
                kwargs[key] = parse_encrypted(",".join(str(ref) for ref in value))
            elif isinstance(value, bool) and key == "stat_keeps_alive":
                kwargs[key] = value
            elif isinstance(value, bool):
                raise ConfigError(f"{key}: {value!r} is not a valid value")
            else:
                text = str(value)
                try:
                    parsed = OPTIONS_BY_KEY[key].parse(text)
                except ValueError as e:
                    raise ConfigError(f"{key}: {e}") from None
                kwargs[key] = tuple(parsed) if key == "contents" else parsed
        config = cls(**kwargs)
        config.check()
        return config

    def check(self) -> None:
        if not 1 <= self.engines <= MAX_ENGINES:
            raise ConfigError(f"engines must be between 1 and {MAX_ENGINES}")
        engine_endpoints(self.listen, self.engines)
        if self.orchestrator_listen is not None and endpoint_port(self.listen) is None:
            raise ConfigError(f"the orchestrator lists engines by host and port: --listen {self.listen!r} "
                              "must be a tcp, tcp6 or ssl endpoint")
        if self.bitrate < minimum_bitrate(self.gop):
            raise ConfigError(f"bitrate {self.bitrate} is too low for a {self.gop:g} s GOP "
                              f"(at least {minimum_bitrate(self.gop)})")
        names = {c.name for c in self.contents}
        for ref in self.encrypted:
            if ref != "*" and self.find_content(ref) is None:
                raise ConfigError(f"encrypted: no content {ref!r} (known: {', '.join(sorted(names))})")
        for name, content, params in self.faults:
            try:
                faultlib.check_scope(name, params, content)
            except faultlib.FaultError as e:
                raise ConfigError(str(e)) from None
            if content is not None and not any(content in (c.name, c.content_id, c.infohash) for c in self.contents):
                raise ConfigError(f"fault {name}@{content}: no such content (known: {', '.join(sorted(names))})")

    def find_content(self, ref: str) -> Optional[Content]:
        """The content a name, content id or infohash names, or None."""
        return Catalog(self.contents).find(ref)

    def encrypted_contents(self) -> Tuple[Content, ...]:
        """The contents L{encrypted} names (every content for C{*})."""
        if "*" in self.encrypted:
            return self.contents
        found = (self.find_content(ref) for ref in self.encrypted)
        return tuple(c for c in found if c is not None)

    def describe(self) -> Dict[str, Any]:
        return {
            "bitrate": self.bitrate, "prebuffer": self.prebuffer, "burst": self.burst, "gop": self.gop,
            "idle_timeout": self.idle_timeout, "stat_keeps_alive": self.stat_keeps_alive, "tick": self.tick,
            "encrypted": [c.name for c in self.encrypted_contents()],
        }


def _fault_specs(value: Union[str, Iterable[Any]]) -> Iterable[FaultSpec]:
    items: Sequence[Any] = [value] if isinstance(value, str) else list(value)
    for item in items:
        try:
            if isinstance(item, str):
                yield from parse_fault_specs(item)
            elif isinstance(item, Mapping):
                params = {k: v for k, v in item.items() if k not in ("name", "content")}
                name = str(item.get("name", ""))
                yield name, item.get("content"), faultlib.validate(name, params)
            elif isinstance(item, tuple) and len(item) == 3:
                name, content, params = item
                yield name, content, faultlib.validate(name, dict(params))
            else:
                raise ConfigError(f"faults: {item!r} is not a spec string, a dict or a (name, content, params) tuple")
        except faultlib.FaultError as e:
            raise ConfigError(str(e)) from None
