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
from acetwist.sim.contents import DEFAULT_CONTENTS, Content, parse_contents
from acetwist.sim.tsgen import minimum_bitrate

_BITRATE = re.compile(r"(\d+(?:\.\d+)?)\s*([km]?)(?:bit(?:/s)?|bps)?", re.I)

FaultSpec = Tuple[str, Optional[str], Dict[str, Any]]


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
    Option("tick", "0.04", _seconds(0.005, 0.5), "Pacing tick in seconds."),
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
    tick: float = 0.04
    faults: Tuple[FaultSpec, ...] = ()

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
            elif isinstance(value, bool) and key == "stat_keeps_alive":
                kwargs[key] = value
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
        if self.bitrate < minimum_bitrate(self.gop):
            raise ConfigError(f"bitrate {self.bitrate} is too low for a {self.gop:g} s GOP "
                              f"(at least {minimum_bitrate(self.gop)})")
        names = {c.name for c in self.contents}
        for name, content, params in self.faults:
            try:
                faultlib.check_scope(name, params, content)
            except faultlib.FaultError as e:
                raise ConfigError(str(e)) from None
            if content is not None and not any(content in (c.name, c.content_id, c.infohash) for c in self.contents):
                raise ConfigError(f"fault {name}@{content}: no such content (known: {', '.join(sorted(names))})")

    def describe(self) -> Dict[str, Any]:
        return {
            "bitrate": self.bitrate, "prebuffer": self.prebuffer, "burst": self.burst, "gop": self.gop,
            "idle_timeout": self.idle_timeout, "stat_keeps_alive": self.stat_keeps_alive, "tick": self.tick,
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
