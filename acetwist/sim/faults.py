# -*- test-case-name: tests.test_sim_faults -*-
"""
The catalogue of injectable failures, and the parsing and validation of their
parameters. Nothing here touches the reactor.

A fault has a name, a scope (one content, or the whole engine when the scope
is None) and parameters. Every fault also takes C{times=N}: it removes itself
after it has been triggered N times. The same text syntax serves the command
line and the control API::

    NAME[:key=value[,key=value...]][@CONTENT]

for example C{cut:after_bytes=300000@channel-1} or C{down:mode=503,ms=2000}.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import attr

from acetwist.sim.contents import Content


class FaultError(ValueError):
    """A fault name, scope or parameter is not acceptable."""


Parser = Callable[[Any], Any]


def _integer(low: int, high: int) -> Parser:
    def parse(value: Any) -> int:
        if isinstance(value, bool):
            raise ValueError("expected an integer")
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, str):
            value = value.strip()
            if not value.lstrip("-").isdigit():
                raise ValueError(f"{value!r} is not an integer")
            value = int(value)
        if not isinstance(value, int):
            raise ValueError(f"{value!r} is not an integer")
        if not low <= value <= high:
            raise ValueError(f"{value} is outside {low}..{high}")
        return value

    return parse


def _choice(*choices: str) -> Parser:
    def parse(value: Any) -> str:
        text = str(value).strip().lower()
        if text not in choices:
            raise ValueError(f"{value!r} is not one of {', '.join(choices)}")
        return text

    return parse


def _text(value: Any) -> str:
    text = str(value)
    if not text or len(text) > 200:
        raise ValueError("expected 1 to 200 characters")
    return text


_MS = _integer(0, 24 * 3600 * 1000)
_BYTES = _integer(0, 1 << 40)


@attr.s(frozen=True, auto_attribs=True)
class FaultKind:
    name: str
    description: str
    params: Dict[str, Tuple[Parser, Any, str]]  # name -> (parser, default or REQUIRED, help)
    engine_wide_only: Tuple[str, ...] = ()  # parameter values that make no sense per content

    def describe(self) -> Dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "params": {key: {"default": None if default is REQUIRED else default, "required": default is REQUIRED,
                             "help": text}
                       for key, (_, default, text) in self.params.items()},
        }


REQUIRED = object()
_OPTIONAL = None

#: Every fault the simulator knows, by name.
FAULTS: Dict[str, FaultKind] = {
    kind.name: kind
    for kind in [
        FaultKind("slow_json", "The getstream/manifest reply is delayed (the session exists meanwhile).",
                  {"ms": (_MS, REQUIRED, "delay of the reply in milliseconds")}),
        FaultKind("slow_first_byte", "The playback URL answers no earlier than this long after the GET.",
                  {"ms": (_MS, REQUIRED, "delay before the playback reply, in milliseconds")}),
        FaultKind("silence", "Playback sends its headers, then no bytes while the fault is set.", {}),
        FaultKind("cut", "A playback connection is dropped after this many more bytes or milliseconds.",
                  {"after_bytes": (_BYTES, _OPTIONAL, "bytes to send before the cut"),
                   "after_ms": (_MS, _OPTIONAL, "milliseconds of streaming before the cut"),
                   "how": (_choice("reset", "close"), "reset", "reset (TCP RST) or close (clean end of body)")}),
        FaultKind("gap", "Each session starves once: no bytes (and livepos frozen) for ms, then it resumes.",
                  {"ms": (_MS, REQUIRED, "length of the gap in milliseconds"),
                   "after_ms": (_MS, 0, "milliseconds of streaming (or since the fault was set) before the gap")}),
        FaultKind("no_peers", "No peers: stat stays prebuf with 0 peers, playback hangs without headers, "
                              "and streaming sessions starve.", {}),
        FaultKind("stall", "Requests hang (engine-wide: all but /webui and /_sim), including stat and stop; "
                           "streams stop sending. Held requests proceed when the fault is cleared.", {}),
        FaultKind("down", "The engine is down: refuse (stop listening; engine-wide only), reset (TCP RST on "
                          "each request) or 503. Open streams are cut when it is set.",
                  {"mode": (_choice("refuse", "reset", "503"), "refuse", "refuse, reset or 503"),
                   "ms": (_MS, _OPTIONAL, "clear the fault by itself after this many milliseconds")},
                  engine_wide_only=("refuse",)),
        FaultKind("failed_content", "The start call fails: JSON error (or text 500) with this message.",
                  {"message": (_text, "failed to load content", "the error string")}),
        FaultKind("json_refused", "getstream with format=json is refused with a JSON error and opens no session, as "
                                  "some engines do in some modes (the reply is a guess); manifest.m3u8 still works.",
                  {"message": (_text, "unsupported format: json", "the error string")}),
        FaultKind("garbage_json", "The start call answers HTTP 200 with a body that is not JSON.", {}),
        FaultKind("redirect", "Extra 302 hops between the playback URL and the bytes.",
                  {"hops": (_integer(1, 10), 1, "number of extra hops")}),
        FaultKind("http_error", "The playback URL answers an HTTP error at once.",
                  {"status": (_integer(400, 599), 500, "HTTP status code")}),
        FaultKind("misaligned", "The body does not start at a packet boundary: junk bytes first (junk) or "
                                "the first bytes of the first packet are missing (mid_packet).",
                  {"mode": (_choice("junk", "mid_packet"), "junk", "junk or mid_packet"),
                   "bytes": (_integer(1, 65536), 100, "junk length, or bytes dropped (1..187 for mid_packet)")}),
        FaultKind("restart", "The engine restarts every every_ms: every session is forgotten (stat and stop then "
                             "answer 'unknown playback session id', readers are reset), and with down_ms it is down "
                             "that long. For one content, only that content's session is forgotten.",
                  {"every_ms": (_integer(10, 24 * 3600 * 1000), REQUIRED, "milliseconds between restarts"),
                   "down_ms": (_MS, 0, "engine-wide only: milliseconds down after each restart"),
                   "down_mode": (_choice("refuse", "reset", "503"), "refuse", "how the engine is down after it")}),
    ]
}

#: Faults that describe a state rather than count events; they take no C{times}.
STATE_FAULTS = frozenset({"no_peers", "stall", "down"})

_COMMON: Dict[str, Tuple[Parser, Any, str]] = {
    "times": (_integer(1, 1_000_000), _OPTIONAL, "remove the fault after it has been triggered this many times"),
}


def validate(name: str, params: Mapping[str, Any]) -> Dict[str, Any]:
    """Checked and typed parameters for fault C{name}, defaults filled in. Raises FaultError."""
    kind = FAULTS.get(name)
    if kind is None:
        raise FaultError(f"unknown fault {name!r}; known: {', '.join(sorted(FAULTS))}")
    table = {**kind.params, **_COMMON}
    if name in STATE_FAULTS and params.get("times") is not None:
        raise FaultError(f"fault {name!r} is a state, not an event: it takes no 'times' (clear it instead)")
    unknown = sorted(set(params) - set(table))
    if unknown:
        allowed = ", ".join(sorted(table))
        raise FaultError(f"fault {name!r} takes no parameter {', '.join(unknown)} (it takes: {allowed})")
    result: Dict[str, Any] = {}
    for key, (parse, default, _) in table.items():
        if key in params and params[key] is not None:
            try:
                result[key] = parse(params[key])
            except ValueError as e:
                raise FaultError(f"fault {name!r}, parameter {key}: {e}") from None
        elif default is REQUIRED:
            raise FaultError(f"fault {name!r} needs parameter {key}")
        elif default is not None:
            result[key] = default
    if name == "cut" and "after_bytes" not in result and "after_ms" not in result:
        raise FaultError("fault 'cut' needs after_bytes or after_ms")
    if name == "misaligned" and result["mode"] == "mid_packet" and not 1 <= result["bytes"] <= 187:
        raise FaultError("fault 'misaligned', mode mid_packet: bytes must be 1..187")
    return result


def check_scope(name: str, params: Mapping[str, Any], content: Optional[object]) -> None:
    """Raise FaultError when a parameter value only makes sense engine-wide but a content was given."""
    kind = FAULTS[name]
    if content is None:
        return
    if any(value in kind.engine_wide_only for value in params.values()):
        raise FaultError(f"fault {name!r} with {dict(params)} is engine-wide only; give no content")
    if name == "restart" and params.get("down_ms"):
        raise FaultError("fault 'restart' with down_ms is engine-wide only; give no content")


def parse_spec(text: str) -> Tuple[str, Optional[str], Dict[str, str]]:
    """
    Split C{NAME[:k=v,...][@CONTENT]} into (name, content reference or None,
    raw parameters). Values stay strings; L{validate} types them.
    """
    spec = text.strip()
    if not spec:
        raise FaultError("empty fault specification")
    content: Optional[str] = None
    if "@" in spec:
        spec, content = spec.rsplit("@", 1)
        content = content.strip()
        if not content:
            raise FaultError(f"{text!r}: nothing after '@' (give a content name, id or infohash)")
    name, _, rest = spec.partition(":")
    params: Dict[str, str] = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise FaultError(f"{text!r}: {item!r} is not key=value")
        params[key.strip()] = value.strip()
    return name.strip(), content, params


@attr.s(auto_attribs=True, eq=False)
class Fault:
    """One injected fault, as the engine holds it."""

    id: int
    name: str
    content: Optional[Content]  # None for engine-wide
    params: Dict[str, Any]
    created: float
    triggered: int = 0

    @property
    def remaining(self) -> Optional[int]:
        times = self.params.get("times")
        return None if times is None else max(0, times - self.triggered)

    def as_json(self) -> Dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "content": None if self.content is None else self.content.name,
            "params": dict(self.params),
            "triggered": self.triggered,
            "remaining": self.remaining,
        }
