"""A small Deferred helper shared by the coordinator link and the engine pool."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred


def observe(d: "Deferred[Any]") -> "Deferred[None]":
    """A new Deferred that fires (with None) when C{d} has fired, leaving C{d}'s result alone."""
    out: Deferred[None] = Deferred()

    def fire(result: Any) -> Any:
        if not out.called:
            out.callback(None)
        return result

    d.addBoth(fire)
    return out
