"""Who speaks next: a pure function of the last message's type, derived from the agents.

Each agent declares what it consumes and produces in its handlers' signatures
(``on_<Type>(self, msg: Type) -> A | B``); the routing table and the team's graph are derived
from them (the team's in ``agents.team``, a node's in ``agents.search``), so adding an agent
touches its own file and the team's list. A routing table rather than an LLM selector keeps the
conversation deterministic, testable and resumable. Message types no agent handles end the
conversation.
"""

from __future__ import annotations

import types
import typing
from typing import Sequence

from pydantic import BaseModel

def _types(hint) -> tuple[type[BaseModel], ...]:
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return tuple(t for t in typing.get_args(hint) if isinstance(t, type) and issubclass(t, BaseModel))
    return (hint,) if isinstance(hint, type) and issubclass(hint, BaseModel) else ()


def handlers(cls: type) -> dict[type[BaseModel], tuple[type[BaseModel], ...]]:
    """consumed type -> produced types, read from ``on_<Type>`` handlers' annotations."""
    out = {}
    for name in dir(cls):
        if not name.startswith("on_") or name in ("on_messages", "on_reset", "on_messages_stream"):
            continue
        hints = typing.get_type_hints(getattr(cls, name))
        params = [v for k, v in hints.items() if k != "return"]
        consumed = [t for t in _types(params[0]) if t.__name__ == name[3:]] if params else []
        if consumed:
            out[consumed[0]] = _types(hints.get("return"))
    return out


def derive(agents: Sequence[type]) -> tuple[dict[type[BaseModel], str], dict[str, tuple[type[BaseModel], ...]]]:
    """(routes, produces) for a team; an agent later in ``agents`` takes over a type an earlier
    one handles too (the chat's User, ``agents.cli.chat``, intercepts UnifyDone on its way to the
    Planner)."""
    routes: dict[type[BaseModel], str] = {}
    produces: dict[str, tuple[type[BaseModel], ...]] = {}
    for cls in agents:
        hs = handlers(cls)
        for consumed in hs:
            routes[consumed] = cls.__name__
        produces[cls.__name__] = tuple(dict.fromkeys(t for out in hs.values() for t in out))
    return routes, produces


def next_speaker(content: BaseModel, routes: dict[type[BaseModel], str]) -> str | None:
    """The agent that handles ``content`` next, or None when the conversation is over."""
    return routes.get(type(content))
