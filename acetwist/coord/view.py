"""The Redis coordinator's cluster view: C{CLUSTER_VIEW}'s reply as C{cluster_view()} answers it."""

from __future__ import annotations

import os
import socket
from typing import Any, Dict, Iterable, List, Optional

from acetwist.coord.base import empty_view, parse_lease, record_dict
from acetwist.interfaces import ClientRecord


def text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def pairs(flat: Optional[List[Any]]) -> Dict[str, str]:
    """Redis's C{name, value, ...} as a dict of strings."""
    flat = flat or []
    return {text(k): text(v) for k, v in zip(flat[::2], flat[1::2])}


def cluster_view(reply: List[Any], backend: str) -> Dict[str, Any]:
    """The view from C{CLUSTER_VIEW}'s C{{workers, streams}}, everything sorted."""
    workers, streams = reply
    view = empty_view(backend, True)
    for worker_id, flat in workers:
        view["workers"][text(worker_id)] = _typed_worker(pairs(flat))
    for stream_key, owner, meta, players in streams:
        lease = parse_lease(owner) if owner else None
        view["streams"][text(stream_key)] = {
            "owner": lease.owner if lease else None,
            "epoch": lease.epoch if lease else None,
            "metadata": pairs(meta),
            "clients": len(players),
        }
        for _client_id, flat in players:
            record = _record_from(pairs(flat))
            if record is not None:
                view["players"].setdefault(record["worker"], []).append(record)
    for records in view["players"].values():
        records.sort(key=lambda r: (r["connected_at"], r["client_id"]))
    view["workers"] = dict(sorted(view["workers"].items()))
    view["streams"] = dict(sorted(view["streams"].items()))
    view["players"] = dict(sorted(view["players"].items()))
    return view


def local_view(backend: str, error: str, worker_id: str, started_at: float,
               clients: Iterable[ClientRecord]) -> Dict[str, Any]:
    """What one worker knows by itself while the cluster cannot be asked."""
    records = sorted((record_dict(r) for r in clients), key=lambda r: (r["connected_at"], r["client_id"]))
    view = empty_view(backend, False)
    view["error"] = error
    view["workers"][worker_id] = {
        "host": socket.gethostname(), "pid": os.getpid(), "started_at": started_at,
        "heartbeat_at": None, "clients": len(records),
    }
    if records:
        view["players"][worker_id] = records
    return view


def _typed_worker(info: Dict[str, str]) -> Dict[str, Any]:
    out: Dict[str, Any] = dict(info)
    for name, kind in (("pid", int), ("clients", int), ("started_at", float), ("heartbeat_at", float)):
        try:
            out[name] = kind(info[name])
        except (KeyError, ValueError):
            pass
    return out


def _record_from(fields: Dict[str, str]) -> Optional[Dict[str, Any]]:
    try:
        return record_dict(ClientRecord(
            client_id=fields["client_id"],
            stream_key=fields["stream_key"],
            worker=fields["worker"],
            ip=fields["ip"],
            user_agent=fields["user_agent"],
            connected_at=float(fields["connected_at"]),
            bytes_sent=int(fields["bytes_sent"]),
        ))
    except (KeyError, ValueError):
        return None
