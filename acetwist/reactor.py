"""
The type of a whole reactor, for code that uses more than one of its
interfaces (time and TCP, say); code that needs one takes that interface
(a clock is an C{IReactorTime}).

Types only: import it under C{typing.TYPE_CHECKING}.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    # The make-believe interface Twisted gives twisted.internet.reactor when type
    # checking: IReactorCore, IReactorTime, IReactorFDSet, IReactorTCP and
    # IReactorProcess. Typing with it lets the global reactor be passed as it is.
    from twisted.internet import _IReactorCommon as IReactor

    __all__ = ["IReactor"]
