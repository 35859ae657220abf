"""LLM plumbing shared by the agents' LLM policies.

One configuration (provider, base_url, model, the *name* of the environment variable holding the
API key) builds an autogen-ext model client: ``openai`` (any OpenAI-compatible endpoint), ``azure``
(Azure OpenAI), ``anthropic``, ``gemini`` (through Google's OpenAI-compatible endpoint) or
``ollama``. Calls are retried on transport errors, 5xx and 429 (tenacity, honouring Retry-After);
replies are parsed and validated by the caller's parser, and an invalid, truncated or refused
reply is sent back with the reason, a bounded number of times. The caller then falls back to its
builtin policy and reports that it did.

An ``LLMSession`` is what agents share in one run: it counts every call's tokens, latency and cost,
records each call's full messages and reply (transcript kind ``llm_call``), and switches the
agents to their builtin policies once ``max_tokens_total`` or ``max_cost_usd`` is reached.
``ReplayClient`` serves recorded replies back in order, without an endpoint.
"""

from __future__ import annotations

import asyncio
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Generic, Literal, TypeVar

from pydantic import BaseModel, Field
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential

from harmonycell.tools.errors import InputError
from harmonycell.tools.record.transcript import read_records

T = TypeVar("T")
Provider = Literal["openai", "azure", "anthropic", "gemini", "ollama"]

# USD per million tokens (input, output). Extend or override with ``prices`` in the LLM config.
PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "o3-mini": (1.10, 4.40),
    "claude-3-5-sonnet-20241022": (3.00, 15.00),
    "claude-3-5-haiku-20241022": (0.80, 4.00),
    "claude-sonnet-4-20250514": (3.00, 15.00),
    "gemini-1.5-pro": (1.25, 5.00),
    "gemini-1.5-flash": (0.075, 0.30),
    "gemini-2.0-flash": (0.10, 0.40),
}
LOCAL_PROVIDERS = {"ollama"}  # priced at zero: the user's own hardware
DEFAULT_KEY_ENV = {"openai": "OPENAI_API_KEY", "azure": "AZURE_OPENAI_API_KEY",
                   "anthropic": "ANTHROPIC_API_KEY", "gemini": "GEMINI_API_KEY", "ollama": ""}
DEFAULT_BASE_URL = {"gemini": "https://generativelanguage.googleapis.com/v1beta/openai/",
                    "ollama": "http://localhost:11434", "anthropic": "https://api.anthropic.com"}
MAX_RETRY_WAIT_S = 30.0  # a Retry-After longer than this is not waited for


class LLMConfig(BaseModel):
    provider: Provider = "openai"
    base_url: str = ""  # azure: the resource endpoint; empty: the provider's public endpoint
    model: str
    api_key_env: str | None = None  # None: the provider's usual variable (OPENAI_API_KEY, ...)
    api_version: str = "2024-10-21"  # azure only
    deployment: str | None = None  # azure only; default: the model name
    temperature: float = 0.2
    timeout_s: float = 120.0
    transport_retries: int = 3  # per call, for connection errors, timeouts, 5xx and 429
    max_asks: int = 3  # replies per task, counting re-asks after a failed validation
    family: str = "unknown"
    max_tokens_total: int | None = Field(None, ge=1, description="switch to builtin after this many tokens")
    max_cost_usd: float | None = Field(None, gt=0, description="switch to builtin after this cost")
    prices: dict[str, tuple[float, float]] = Field(default_factory=dict)  # model -> USD/1M (in, out)
    policies: list[str] = Field(default_factory=lambda: ["unifier", "planner", "coder", "debugger", "judge"])

    def key_env(self) -> str:
        return self.api_key_env if self.api_key_env is not None else DEFAULT_KEY_ENV[self.provider]

    def price(self) -> tuple[float, float] | None:
        if self.provider in LOCAL_PROVIDERS:
            return (0.0, 0.0)
        return self.prices.get(self.model) or PRICES.get(self.model)

    def uses(self, policy: str) -> bool:
        return policy in self.policies


def load_llm_config(path: Path, **overrides) -> LLMConfig:
    """Read an LLM endpoint file (JSON or YAML: provider, base_url, model, api_key_env, ...)."""
    import yaml
    from pydantic import ValidationError

    path = Path(path)
    if not path.is_file():
        raise InputError("LLM config file not found", where=str(path),
                         fix='write e.g. {"base_url": "http://127.0.0.1:8000/v1", "model": "my-model"}')
    try:
        raw = yaml.safe_load(path.read_text())
        if not isinstance(raw, dict):
            raise InputError("the LLM config must be a mapping", where=str(path),
                             fix="give provider, base_url and model as keys")
        cfg = LLMConfig.model_validate({**raw, **{k: v for k, v in overrides.items() if v is not None}})
    except (yaml.YAMLError, ValidationError) as e:
        first = str(e).splitlines()[0:3]
        raise InputError(f"not a valid LLM config ({' '.join(first)})", where=str(path),
                         fix="give provider (openai|azure|anthropic|gemini|ollama), base_url and model") from None
    if cfg.max_cost_usd is not None and cfg.price() is None:
        raise InputError(f"no price known for model {cfg.model!r}, so a cost limit cannot be kept",
                         where=str(path),
                         fix=f'add prices: {{"{cfg.model}": [usd_per_1M_input, usd_per_1M_output]}} to the LLM config')
    return cfg


class ReplyInvalid(ValueError):
    """A parser's verdict on a reply: the reason is sent back to the model."""


def _api_key(cfg: LLMConfig) -> str:
    env = cfg.key_env()
    key = os.environ.get(env) if env else None
    if key:
        return key
    if cfg.provider == "ollama" or cfg.base_url.startswith(("http://127.0.0.1", "http://localhost")):
        return "local"  # local servers (stubs, Ollama, vLLM) ignore the key
    raise InputError(f"environment variable {env} is not set", where="llm config",
                     fix=f"export {env}=<your key> or set api_key_env to the variable holding it")


def build_client(cfg: LLMConfig):
    """The provider's own autogen-ext client (retries are ours, so the client's are off)."""
    info = {"vision": False, "function_calling": False, "json_output": False, "family": cfg.family,
            "structured_output": False}
    key = _api_key(cfg)
    base = cfg.base_url or DEFAULT_BASE_URL.get(cfg.provider, "")
    if cfg.provider in ("openai", "gemini"):
        from autogen_ext.models.openai import OpenAIChatCompletionClient

        kw = {"base_url": base} if base else {}
        return OpenAIChatCompletionClient(model=cfg.model, api_key=key, timeout=cfg.timeout_s,
                                          temperature=cfg.temperature, max_retries=0, model_info=info, **kw)
    if cfg.provider == "azure":
        from autogen_ext.models.openai import AzureOpenAIChatCompletionClient

        if not base:
            raise InputError("azure needs base_url (the resource endpoint)", where="llm config",
                             fix="set base_url: https://<resource>.openai.azure.com")
        return AzureOpenAIChatCompletionClient(
            model=cfg.model, azure_deployment=cfg.deployment or cfg.model, azure_endpoint=base,
            api_version=cfg.api_version, api_key=key, timeout=cfg.timeout_s,
            temperature=cfg.temperature, max_retries=0, model_info=info)
    if cfg.provider == "anthropic":
        from autogen_ext.models.anthropic import AnthropicChatCompletionClient

        return AnthropicChatCompletionClient(model=cfg.model, api_key=key, base_url=base,
                                             timeout=cfg.timeout_s, temperature=cfg.temperature,
                                             max_retries=0, model_info=info)
    if cfg.provider == "ollama":
        from autogen_ext.models.ollama import OllamaChatCompletionClient

        return OllamaChatCompletionClient(model=cfg.model, host=base, timeout=cfg.timeout_s,
                                          options={"temperature": cfg.temperature}, model_info=info)
    raise InputError(f"unknown LLM provider {cfg.provider!r}", where="llm config",
                     fix="use openai, azure, anthropic, gemini or ollama")


def _status(exc: BaseException) -> int | None:
    return getattr(exc, "status_code", None)


def _transient(exc: BaseException) -> bool:
    # Transport trouble is retried; a 4xx (bad request, auth) will not get better by waiting.
    status = _status(exc)
    if status is not None:
        return status >= 500 or status == 429
    name = type(exc).__name__
    return isinstance(exc, (ConnectionError, TimeoutError, OSError, asyncio.TimeoutError)) or name in {
        "APIConnectionError", "APITimeoutError", "ReadTimeout", "ConnectTimeout", "ConnectError",
        "RemoteProtocolError", "ReadError"}


def retry_after(exc: BaseException) -> float | None:
    """Seconds a 429/503 asked us to wait (Retry-After header), when the client kept the response."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    value = headers.get("retry-after") if headers is not None else None
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


class _Wait:
    """Retry-After when the server gave one, else exponential backoff."""

    def __init__(self):
        self.backoff = wait_exponential(multiplier=0.2, max=4)

    def __call__(self, state) -> float:
        exc = state.outcome.exception() if state.outcome else None
        ra = retry_after(exc) if exc is not None else None
        return min(ra, MAX_RETRY_WAIT_S) if ra is not None else self.backoff(state)


@dataclass
class CallResult:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    finish_reason: str = ""
    transport_attempts: int = 1
    waits: list[str] = field(default_factory=list)  # what each retried failure was


async def complete(client, messages: list, retries: int = 3) -> CallResult:
    """One chat completion with transport retries: the reply text, its usage and latency."""
    waits: list[str] = []
    n = 0
    t0 = time.monotonic()
    async for attempt in AsyncRetrying(stop=stop_after_attempt(max(1, retries)), wait=_Wait(),
                                       retry=retry_if_exception(_transient), reraise=True):
        with attempt:
            n += 1
            try:
                result = await client.create(messages)
            except Exception as e:
                waits.append(f"{type(e).__name__}" + (f" {_status(e)}" if _status(e) else "")
                             + (f" retry-after {retry_after(e):g}s" if retry_after(e) is not None else ""))
                raise
    content = result.content
    usage = getattr(result, "usage", None)
    return CallResult(text=content if isinstance(content, str) else str(content),
                      prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
                      completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
                      latency_s=round(time.monotonic() - t0, 3),
                      finish_reason=str(getattr(result, "finish_reason", "") or ""),
                      transport_attempts=n, waits=waits)


def reply_problem(call: CallResult) -> str | None:
    """Why a reply cannot be used whatever the parser says: refused or cut off."""
    if call.finish_reason == "content_filter":
        return "the reply was refused by the provider's content filter"
    if not call.text.strip():
        return "the reply was empty (refused)"
    if call.finish_reason == "length":
        return "the reply was cut off at the token limit; reply more briefly"
    return None


@dataclass
class AskOutcome(Generic[T]):
    value: T | None
    attempts: int
    reasons: list[str] = field(default_factory=list)  # why each rejected reply was rejected
    replies: list[str] = field(default_factory=list)
    error: str | None = None  # set when the endpoint itself failed
    skipped: str | None = None  # set when no call was made (the LLM budget is spent)

    def why_failed(self) -> str:
        if self.skipped:
            return self.skipped
        if self.error:
            return f"endpoint failed: {self.error}"
        return f"{self.attempts} replies rejected ({'; '.join(self.reasons)[:300]})"


CODE_REASK = "Fix it and reply again with the complete module in one ```python block."
CallSink = Callable[[dict], None]


def _dump(messages: list) -> list[dict]:
    out = []
    for m in messages:
        role = {"SystemMessage": "system", "UserMessage": "user", "AssistantMessage": "assistant"}.get(
            type(m).__name__, type(m).__name__)
        out.append({"role": role, "content": m.content})
    return out


async def ask_validated(client, system: str, user: str, parse: Callable[[str], T],
                        max_asks: int = 3, retries: int = 3, reask: str = CODE_REASK,
                        on_call: CallSink | None = None,
                        may_call: Callable[[], str | None] | None = None) -> AskOutcome[T]:
    """Ask, parse, and on ``ReplyInvalid`` re-ask with the reason, at most ``max_asks`` replies.

    ``on_call`` receives every call (messages, reply or error, usage, latency); ``may_call``
    returns a reason to stop before a call (a spent budget).
    """
    from autogen_core.models import AssistantMessage, SystemMessage, UserMessage

    messages = [SystemMessage(content=system), UserMessage(content=user, source="user")]
    outcome: AskOutcome[T] = AskOutcome(value=None, attempts=0)
    for _ in range(max(1, max_asks)):
        stop = may_call() if may_call else None
        if stop:
            outcome.skipped = stop
            return outcome
        t0 = time.monotonic()
        try:
            call = await complete(client, messages, retries=retries)
        except Exception as e:  # endpoint down or refusing: the caller falls back
            outcome.error = f"{type(e).__name__}: {str(e)[:300]}"
            if on_call:
                on_call({"messages": _dump(messages), "reply": None, "error": outcome.error,
                         "latency_s": round(time.monotonic() - t0, 3), "prompt_tokens": 0,
                         "completion_tokens": 0})
            return outcome
        outcome.attempts += 1
        outcome.replies.append(call.text)
        problem = reply_problem(call)
        verdict = None
        if problem is None:
            try:
                outcome.value = parse(call.text)
            except ReplyInvalid as e:
                problem = str(e)
        verdict = "accepted" if problem is None else f"rejected: {problem}"
        if on_call:
            on_call({"messages": _dump(messages), "reply": call.text, "finish_reason": call.finish_reason,
                     "prompt_tokens": call.prompt_tokens, "completion_tokens": call.completion_tokens,
                     "latency_s": call.latency_s, "transport_attempts": call.transport_attempts,
                     "retried": call.waits, "verdict": verdict})
        if problem is None:
            return outcome
        outcome.reasons.append(problem)
        messages += [AssistantMessage(content=call.text, source="assistant"),
                     UserMessage(content=f"Your reply was rejected: {problem}\n{reask}", source="user")]
    return outcome


# ---------------------------------------------------------------------------------------------
# One run's LLM use: the client, the ledger, the budget, the record.


class Usage(BaseModel):
    calls: int = 0
    failed_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    latency_s: float = 0.0
    by_agent: dict[str, dict[str, float]] = Field(default_factory=dict)
    stopped: str | None = None  # why the agents were switched to builtin, if they were

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class LLMSession:
    """The run's model client plus its token/cost ledger and budget; thread-safe."""

    def __init__(self, cfg: LLMConfig, client=None, sink: Callable[[str, str, dict], None] | None = None):
        self.cfg = cfg
        self.client = client if client is not None else build_client(cfg)  # fails early on a bad key
        # an async HTTP client belongs to the event loop it first ran on, and each ask may run on
        # its own loop (run_sync), so a client this session built is built afresh per ask
        self._fresh = (lambda: self.client) if client is not None else (lambda: build_client(cfg))
        self.sink = sink  # (agent, purpose, record) -> None; the transcript's llm_call records
        self.usage = Usage()
        self._lock = threading.Lock()
        self._on_stop: list[Callable[[str], None]] = []

    def on_stop(self, fn: Callable[[str], None]) -> None:
        self._on_stop.append(fn)

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        price = self.cfg.price() or (0.0, 0.0)
        return (prompt_tokens * price[0] + completion_tokens * price[1]) / 1e6

    def budget_reason(self) -> str | None:
        """Why no further call may be made, or None."""
        u, c = self.usage, self.cfg
        if u.stopped:
            return u.stopped
        why = None
        if c.max_tokens_total is not None and u.tokens >= c.max_tokens_total:
            why = f"LLM token budget reached ({u.tokens} >= {c.max_tokens_total}): builtin policies from here"
        elif c.max_cost_usd is not None and u.cost_usd >= c.max_cost_usd:
            why = f"LLM cost budget reached (${u.cost_usd:.4f} >= ${c.max_cost_usd:g}): builtin policies from here"
        if why:
            u.stopped = why
            for fn in self._on_stop:
                fn(why)
        return why

    def available(self, policy: str | None = None) -> bool:
        with self._lock:
            return (policy is None or self.cfg.uses(policy)) and self.budget_reason() is None

    def _count(self, agent: str, purpose: str, rec: dict, replayed: bool = False) -> None:
        with self._lock:
            u = self.usage
            p, c = int(rec.get("prompt_tokens") or 0), int(rec.get("completion_tokens") or 0)
            cost = self.cost(p, c)
            u.calls += 1
            u.failed_calls += rec.get("reply") is None
            u.prompt_tokens += p
            u.completion_tokens += c
            u.cost_usd = round(u.cost_usd + cost, 6)
            u.latency_s = round(u.latency_s + float(rec.get("latency_s") or 0), 3)
            a = u.by_agent.setdefault(agent, {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0,
                                              "cost_usd": 0.0})
            a["calls"] += 1
            a["prompt_tokens"] += p
            a["completion_tokens"] += c
            a["cost_usd"] = round(a["cost_usd"] + cost, 6)
        if self.sink and not replayed:
            self.sink(agent, purpose, {"agent": agent, "purpose": purpose, "provider": self.cfg.provider,
                                       "model": self.cfg.model, "cost_usd": round(cost, 6), **rec})

    async def aask(self, agent: str, purpose: str, system: str, user: str, parse: Callable[[str], T],
                   reask: str = CODE_REASK) -> AskOutcome[T]:
        def may_call():
            with self._lock:
                return self.budget_reason()

        client = self._fresh()
        try:
            return await ask_validated(client, system, user, parse, max_asks=self.cfg.max_asks,
                                       retries=self.cfg.transport_retries, reask=reask,
                                       on_call=lambda rec: self._count(agent, purpose, rec), may_call=may_call)
        finally:
            if client is not self.client:  # close it on the loop it ran on, not at garbage collection
                try:
                    await client.close()
                except Exception:  # closing a client whose endpoint died must not mask the outcome
                    pass

    def ask(self, agent: str, purpose: str, system: str, user: str, parse: Callable[[str], T],
            reask: str = CODE_REASK) -> AskOutcome[T]:
        return run_sync(self.aask(agent, purpose, system, user, parse, reask))


# ---------------------------------------------------------------------------------------------
# Replay: recorded replies served back in order, without an endpoint.


class ReplayExhausted(RuntimeError):
    """More calls than the recording holds: the replayed run diverged from the recorded one."""


class ReplayClient:
    """A model client (the autogen ``create`` interface) answering from recorded ``llm_call``s.

    Replies are served in recording order; a recorded endpoint failure is raised again as one, so
    a replayed run takes the same fallbacks as the recorded run.
    """

    def __init__(self, calls: list[dict]):
        self.calls = list(calls)
        self.served = 0
        self.requests: list[list[dict]] = []

    @classmethod
    def from_transcript(cls, path: Path, agents: set[str] | None = None) -> "ReplayClient":
        path = Path(path)
        if path.is_dir():
            path = path / "transcript.jsonl"
        calls = [r["content"] for r in read_records(path)
                 if r.get("kind") == "llm_call" and isinstance(r.get("content"), dict)
                 and "messages" in r["content"] and (agents is None or r.get("source") in agents)]
        return cls(calls)

    @property
    def model_info(self) -> dict:
        return {"vision": False, "function_calling": False, "json_output": False, "family": "replay",
                "structured_output": False}

    async def create(self, messages, **kwargs):
        from autogen_core.models import CreateResult, RequestUsage

        self.requests.append(_dump(messages))
        if self.served >= len(self.calls):
            raise ReplayExhausted(f"the recording holds {len(self.calls)} LLM call(s); call "
                                  f"{self.served + 1} was asked for")
        rec = self.calls[self.served]
        self.served += 1
        if rec.get("reply") is None:
            raise ReplayExhausted(f"recorded call {self.served} failed: {rec.get('error')}")
        return CreateResult(finish_reason=rec.get("finish_reason") or "stop", content=rec["reply"],
                            usage=RequestUsage(prompt_tokens=int(rec.get("prompt_tokens") or 0),
                                               completion_tokens=int(rec.get("completion_tokens") or 0)),
                            cached=True)

    async def close(self) -> None:
        return None


def session_for_run(cfg: LLMConfig | None, transcript=None, client=None) -> LLMSession | None:
    """The run's session, recording into ``transcript``; None when the run uses no LLM."""
    if cfg is None:
        return None
    sink = None
    if transcript is not None:
        def sink(agent, purpose, rec):
            transcript.append("llm_call", agent, purpose, rec)
    session = LLMSession(cfg, client=client, sink=sink)
    if transcript is not None and Path(transcript.path).exists():
        # a resumed run: calls made before the stop count against the same budget
        for r in read_records(transcript.path):
            if r.get("kind") == "llm_call" and isinstance(r.get("content"), dict):
                session._count(r["source"], r["type"], r["content"], replayed=True)
    if transcript is not None:
        session.on_stop(lambda why: transcript.append("event", "harmonycell", "llm_budget_reached",
                                                      {"reason": why, **session.usage.model_dump(
                                                          exclude={"by_agent", "stopped"})}))
    return session


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


def usage_summary(usage: Usage) -> dict[str, Any]:
    """Run totals for status.json and the report."""
    return {"calls": usage.calls, "failed_calls": usage.failed_calls, "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens, "tokens": usage.tokens,
            "cost_usd": round(usage.cost_usd, 6), "latency_s": usage.latency_s,
            "by_agent": usage.by_agent, "switched_to_builtin": usage.stopped}


__all__ = ["LLMConfig", "LLMSession", "ReplayClient", "ReplyInvalid", "ask_validated", "build_client",
           "complete", "extract_code", "load_llm_config", "run_sync", "session_for_run", "usage_summary"]
