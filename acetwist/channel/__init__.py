"""
A channel and its lifecycles, one small module each:

- L{channel}: the channel (claiming -> owning | following -> stopped | failed)
- L{roster}: its players
- L{grace}: occupied <-> lingering -> expired
- L{lease}: holding the lease -> re-claiming -> demoted | released
- L{engine_source}: the owner reads the engine
- L{mirror_source}: a follower reads the owner's mirror, and watches for the owner to vanish
- L{ladder}: the recovery ladder
"""

from acetwist.channel.channel import Channel
from acetwist.channel.roster import ClientInfo, new_client_id

__all__ = ["Channel", "ClientInfo", "new_client_id"]
