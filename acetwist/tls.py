# -*- test-case-name: tests.test_tls -*-
"""
Whether this process loads TLS machinery at all.

Twisted imports pyOpenSSL (and with it cryptography and service-identity,
about 12 MB of resident memory) as soon as its reactor or endpoints are
imported, whenever pyOpenSSL is installed, so that TLS is ready if asked
for. A proxy whose engines, orchestrator and listener are all plain HTTP
never asks. L{forgo_tls} makes such a process behave as if pyOpenSSL were
not installed (Twisted supports that: TLS features then raise, nothing else
changes); it has to run before the reactor is imported, which
L{acetwist.tap.makeService} does first.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType
from typing import Iterable, Optional
from urllib.parse import urlsplit

#: the module whose absence makes Twisted skip every TLS import
_ROOT = "OpenSSL"


def tls_reason(listen: str, urls: Iterable[Optional[str]]) -> Optional[str]:
    """
    Why this configuration needs TLS (an C{ssl:} listener, an C{https} URL),
    or None when it does not.

    @param listen: the listening endpoint string
    @param urls: every outgoing URL configured (engines, orchestrator; None skipped)
    """
    if listen.split(":", 1)[0] == "ssl":
        return "an ssl: listener"
    for url in urls:
        if url and urlsplit(url).scheme.lower() == "https":
            return f"https URL {urlsplit(url).netloc}"
    return None


def forgo_tls() -> bool:
    """
    From now on, importing pyOpenSSL fails in this process, as if it were not
    installed. Returns True when that saved its import, False when it was
    already imported (nothing to save; it stays usable).
    """
    module = sys.modules.get(_ROOT, False)
    if module is None:
        return True
    if module is not False:
        return False
    sys.modules[_ROOT] = None  # type: ignore[assignment]  # the import system's own "not importable" mark
    return True


def tls_forgone() -> bool:
    """Whether L{forgo_tls} took effect in this process."""
    return _ROOT in sys.modules and sys.modules[_ROOT] is None


class _NotLoaded:
    """Stands in for a TLS class in a process without TLS: using it raises."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        raise NotImplementedError("TLS support is not loaded in this process (no https URL or ssl: listener)")


#: what txredisapi imports from Twisted's TLS modules at its top level (used only for Redis over TLS)
_TXREDISAPI_TLS_NAMES = {
    "twisted.internet.ssl": ("ClientContextFactory",),
    "twisted.protocols.tls": ("TLSMemoryBIOFactory",),
}


def import_txredisapi() -> ModuleType:
    """
    Import txredisapi, whose top level imports Twisted's TLS modules although
    acetwist never asks it for TLS. When TLS is forgone, those two modules are
    answered, for this import only, by stand-ins whose classes raise when used.
    Twisted's reactor base, endpoints and web client are imported first, so
    that they have settled on "no TLS" before the stand-ins exist.
    """
    name = "txredisapi"
    if not tls_forgone() or name in sys.modules:
        return importlib.import_module(name)
    import twisted.internet.endpoints  # noqa: F401
    import twisted.internet.posixbase  # noqa: F401
    import twisted.web.client  # noqa: F401

    stand_ins = {}
    for key, names in _TXREDISAPI_TLS_NAMES.items():
        if key in sys.modules:
            continue  # loaded after all: txredisapi gets the real one
        module = ModuleType(key, "Stand-in: TLS is not loaded in this process (see acetwist.tls).")
        for attribute in names:
            setattr(module, attribute, type(attribute, (_NotLoaded,), {}))
        stand_ins[key] = module
    sys.modules.update(stand_ins)
    try:
        return importlib.import_module(name)
    finally:
        for key, module in stand_ins.items():
            if sys.modules.get(key) is module:
                del sys.modules[key]
