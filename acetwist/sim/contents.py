# -*- test-case-name: tests.test_sim_engine -*-
"""
The simulated channels: each has a name, a 40-hex content id and a distinct
40-hex infohash, both derived from the name with SHA-1 so they are the same on
every run and every machine.

A content can be selected four ways, as on a real engine: by C{content_id}
(alias C{id}), by C{infohash}, by transport-file C{url} or by C{magnet}.
C{id} and C{infohash} are separate namespaces: an infohash given as C{id}
selects nothing.
"""

from __future__ import annotations

import hashlib
import re
from typing import Dict, Iterable, List, Optional, Sequence
from urllib.parse import parse_qs, urlsplit

import attr

_HEX40 = re.compile(r"[0-9a-f]{40}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_MAX_CONTENTS = 1000


def _sha1(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


@attr.s(frozen=True, auto_attribs=True)
class Content:
    """One simulated channel. Build it with L{Content.named}."""

    name: str
    content_id: str
    infohash: str

    @classmethod
    def named(cls, name: str) -> "Content":
        return cls(name, _sha1(f"acetwist-sim content-id {name}"), _sha1(f"acetwist-sim infohash {name}"))

    @property
    def url(self) -> str:
        """The transport-file URL that selects this content with C{url=}."""
        return f"http://sim.acetwist.invalid/{self.name}.acelive"

    @property
    def magnet(self) -> str:
        """The magnet link that selects this content with C{magnet=}."""
        return f"magnet:?xt=urn:btih:{self.infohash}&dn={self.name}"

    def as_json(self) -> Dict[str, str]:
        return {"name": self.name, "content_id": self.content_id, "infohash": self.infohash,
                "url": self.url, "magnet": self.magnet}


def numbered_contents(count: int) -> List[Content]:
    """C{channel-1} .. C{channel-<count>}."""
    return [Content.named(f"channel-{n}") for n in range(1, count + 1)]


#: The three channels every simulator knows unless told otherwise.
DEFAULT_CONTENTS: Sequence[Content] = tuple(numbered_contents(3))


def parse_contents(spec: str) -> List[Content]:
    """
    Contents from an option value: a count (C{"5"} gives channel-1..channel-5)
    or comma-separated names (C{"news,sports"}). Raises ValueError with a
    readable message otherwise.
    """
    text = spec.strip()
    if text.isdigit():
        count = int(text)
        if not 1 <= count <= _MAX_CONTENTS:
            raise ValueError(f"contents: a count must be between 1 and {_MAX_CONTENTS}, not {count}")
        return numbered_contents(count)
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise ValueError("contents: give a count (e.g. 3) or comma-separated names (e.g. news,sports)")
    for name in names:
        if not _NAME.fullmatch(name):
            raise ValueError(f"contents: {name!r} is not a name (letters, digits, '_', '.', '-'; up to 64)")
    if len(set(names)) != len(names):
        raise ValueError("contents: names must be distinct")
    if len(names) > _MAX_CONTENTS:
        raise ValueError(f"contents: at most {_MAX_CONTENTS}")
    return [Content.named(name) for name in names]


class Catalog:
    """Looks contents up by each selector; id and infohash never cross."""

    def __init__(self, contents: Iterable[Content]) -> None:
        self.contents: List[Content] = list(contents)
        self._by_id = {c.content_id: c for c in self.contents}
        self._by_infohash = {c.infohash: c for c in self.contents}
        self._by_name = {c.name: c for c in self.contents}

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.contents)

    def by_content_id(self, value: str) -> Optional[Content]:
        return self._by_id.get(value.strip().lower())

    def by_infohash(self, value: str) -> Optional[Content]:
        return self._by_infohash.get(value.strip().lower())

    def by_url(self, value: str) -> Optional[Content]:
        path = urlsplit(value.strip()).path
        last = path.rsplit("/", 1)[-1]
        if last.endswith(".acelive") or last.endswith(".torrent"):
            return self._by_name.get(last.rsplit(".", 1)[0])
        return None

    def by_magnet(self, value: str) -> Optional[Content]:
        parts = urlsplit(value.strip())
        if parts.scheme != "magnet":
            return None
        for topic in parse_qs(parts.query).get("xt", []):
            if topic.lower().startswith("urn:btih:"):
                return self.by_infohash(topic[len("urn:btih:"):])
        return None

    def find(self, ref: str) -> Optional[Content]:
        """A content by name, content id or infohash (for the control API)."""
        ref = ref.strip()
        return self._by_name.get(ref) or self.by_content_id(ref) or self.by_infohash(ref)


def is_hex40(value: str) -> bool:
    return bool(_HEX40.fullmatch(value))
