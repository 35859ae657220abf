"""A thin autogen-agentchat agent: typed message in, tool call, typed message out."""

from __future__ import annotations

import asyncio
from typing import Sequence

from autogen_agentchat.agents import BaseChatAgent
from autogen_agentchat.base import Response
from autogen_agentchat.messages import BaseChatMessage, StructuredMessage
from autogen_core import CancellationToken
from pydantic import BaseModel

from harmonycell.agents.context import RunContext


def last_content(messages: Sequence[BaseChatMessage]) -> BaseModel:
    for msg in reversed(messages):
        if isinstance(msg, StructuredMessage):
            return msg.content
    raise ValueError("no structured message to act on")


def wrap(content: BaseModel, source: str) -> StructuredMessage:
    return StructuredMessage[type(content)](content=content, source=source)


class StepAgent(BaseChatAgent):
    """Subclasses implement ``on_<ContentType>(content) -> BaseModel`` for what they handle.

    Handlers run in a worker thread (training and I/O block), and every reply is appended to
    the transcript before it is sent, so the transcript is the conversation.
    """

    description_text = ""

    def __init__(self, ctx: RunContext):
        super().__init__(name=type(self).__name__, description=self.description_text)
        self.ctx = ctx

    @property
    def produced_message_types(self) -> Sequence[type[BaseChatMessage]]:
        return (StructuredMessage,)

    async def on_messages(self, messages: Sequence[BaseChatMessage],
                          cancellation_token: CancellationToken) -> Response:
        content = last_content(messages)
        # a subclass message (e.g. SearchReviewed) is handled as its base where it has no handler of its own
        handler = next((h for cls in type(content).__mro__
                        if (h := getattr(self, f"on_{cls.__name__}", None)) is not None), None)
        if handler is None:
            raise TypeError(f"{self.name} cannot handle {type(content).__name__}")
        try:
            reply = await asyncio.to_thread(handler, content)
        except BaseException as exc:  # keep the original error for the CLI, not autogen's wrapper
            self.ctx.failure = exc
            raise
        self.ctx.say(self.name, reply)
        return Response(chat_message=wrap(reply, self.name))

    async def on_reset(self, cancellation_token: CancellationToken) -> None:
        return None
