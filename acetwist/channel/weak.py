"""
Callbacks that do not keep their object alive.

A channel's parts call back into the channel, and each state machine's
timers and subscriptions call back into the machine that owns them. Passing
bound methods would make reference cycles (the object holds the part, the
part holds the object), so an ended channel would wait for the cyclic garbage
collector, its ring's blocks with it. L{weakly} breaks those cycles.
"""

from __future__ import annotations

import weakref
from typing import Any, Callable, TypeVar

T = TypeVar("T")


def weakly(method: Callable[..., T], dead: Any = None) -> Callable[..., T]:
    """C{method}, called through a weak reference to its object (C{dead} is returned once the object is gone)."""
    ref = weakref.WeakMethod(method)

    def call(*args: Any, **kwargs: Any) -> T:
        bound = ref()
        return bound(*args, **kwargs) if bound is not None else dead

    return call
