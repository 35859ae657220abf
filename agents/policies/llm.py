"""LLM plumbing shared by the agents' LLM policies.

One configuration (base_url, model, the *name* of the environment variable holding the API key)
builds an autogen-ext ``OpenAIChatCompletionClient`` (any OpenAI-compatible endpoint). Calls are
retried on transport errors (tenacity); replies are parsed and validated by the caller's parser,
and an invalid reply is sent back with the reason, a bounded number of times. The caller then
falls back to its builtin policy and reports that it did.
"""

from __future__ import annotations

import asyncio
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Generic, TypeVar

from pydantic import BaseModel
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential

from harmonycell.tools.errors import InputError

T = TypeVar("T")


class LLMConfig(BaseModel):
    base_url: str
    model: str
    api_key_env: str = "OPENAI_API_KEY"
    temperature: float = 0.2
    timeout_s: float = 120.0
    transport_retries: int = 3  # per call, for connection errors / 5xx
    max_asks: int = 3  # replies per task, counting re-asks after a failed validation
    family: str = "unknown"


def load_llm_config(path: Path) -> LLMConfig:
    """Read an LLM endpoint file (JSON or YAML: base_url, model, api_key_env, ...)."""
    import yaml
    from pydantic import ValidationError

    path = Path(path)
    if not path.is_file():
        raise InputError("LLM config file not found", where=str(path),
                         fix='write e.g. {"base_url": "http://127.0.0.1:8000/v1", "model": "my-model"}')
    try:
        return LLMConfig.model_validate(yaml.safe_load(path.read_text()))
    except (yaml.YAMLError, ValidationError) as e:
        first = str(e).splitlines()[0:3]
        raise InputError(f"not a valid LLM config ({' '.join(first)})", where=str(path),
                         fix="give base_url and model (and api_key_env for hosted endpoints)") from None


class ReplyInvalid(ValueError):
    """A parser's verdict on a reply: the reason is sent back to the model."""


def build_client(cfg: LLMConfig):
    from autogen_ext.models.openai import OpenAIChatCompletionClient

    key = os.environ.get(cfg.api_key_env)
    if key is None:
        if cfg.base_url.startswith(("http://127.0.0.1", "http://localhost")):
            key = "local"  # local servers (stubs, Ollama, vLLM) ignore the key
        else:
            raise InputError(f"environment variable {cfg.api_key_env} is not set", where="llm config",
                             fix=f"export {cfg.api_key_env}=<your key> or set api_key_env to the variable holding it")
    return OpenAIChatCompletionClient(
        model=cfg.model, base_url=cfg.base_url, api_key=key, timeout=cfg.timeout_s,
        temperature=cfg.temperature, max_retries=0,
        model_info={"vision": False, "function_calling": False, "json_output": False,
                    "family": cfg.family, "structured_output": False},
    )


def _transient(exc: BaseException) -> bool:
    # Transport trouble is retried; a 4xx (bad request, auth) will not get better by waiting.
    status = getattr(exc, "status_code", None)
    if status is not None:
        return status >= 500 or status == 429
    return isinstance(exc, (ConnectionError, TimeoutError, OSError)) or type(exc).__name__ in {
        "APIConnectionError", "APITimeoutError"}


async def complete(client, messages: list, retries: int = 3) -> str:
    """One chat completion with transport retries; returns the reply text."""
    async for attempt in AsyncRetrying(stop=stop_after_attempt(max(1, retries)),
                                       wait=wait_exponential(multiplier=0.2, max=4),
                                       retry=retry_if_exception(_transient), reraise=True):
        with attempt:
            result = await client.create(messages)
    content = result.content
    return content if isinstance(content, str) else str(content)


@dataclass
class AskOutcome(Generic[T]):
    value: T | None
    attempts: int
    reasons: list[str] = field(default_factory=list)  # why each rejected reply was rejected
    replies: list[str] = field(default_factory=list)
    error: str | None = None  # set when the endpoint itself failed


CODE_REASK = "Fix it and reply again with the complete module in one ```python block."


async def ask_validated(client, system: str, user: str, parse: Callable[[str], T],
                        max_asks: int = 3, retries: int = 3, reask: str = CODE_REASK) -> AskOutcome[T]:
    """Ask, parse, and on ``ReplyInvalid`` re-ask with the reason, at most ``max_asks`` replies."""
    from autogen_core.models import AssistantMessage, SystemMessage, UserMessage

    messages = [SystemMessage(content=system), UserMessage(content=user, source="user")]
    outcome: AskOutcome[T] = AskOutcome(value=None, attempts=0)
    for _ in range(max(1, max_asks)):
        try:
            reply = await complete(client, messages, retries=retries)
        except Exception as e:  # endpoint down or refusing: the caller falls back
            outcome.error = f"{type(e).__name__}: {e}"
            return outcome
        outcome.attempts += 1
        outcome.replies.append(reply)
        try:
            outcome.value = parse(reply)
            return outcome
        except ReplyInvalid as e:
            outcome.reasons.append(str(e))
            messages += [AssistantMessage(content=reply, source="assistant"),
                         UserMessage(content=f"Your reply was rejected: {e}\n{reask}", source="user")]
    return outcome


CODE_BLOCK = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)```", re.S)


def extract_code(reply: str) -> str:
    """The longest fenced code block of a reply (models often add a usage example too)."""
    blocks = CODE_BLOCK.findall(reply)
    if not blocks:
        raise ReplyInvalid("no ```python code block found in the reply")
    return max(blocks, key=len).strip() + "\n"


def run_sync(coro):
    """Run a coroutine from synchronous code. Agents' handlers may be synchronous functions
    called from inside autogen's running event loop, where ``asyncio.run`` is refused, so in
    that case the coroutine runs on its own loop in a worker thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()
