"""A client for any OpenAI-compatible chat endpoint, and the explainer/simulator pair built on it.

    client = ChatClient(LLMConfig(base_url="http://localhost:8000/v1", model="qwen2.5-7b"), cache_dir)
    explainer, simulator = LLMExplainer(client), LLMSimulator(client)

Only the standard library (urllib): POST {base_url}/chat/completions with a bearer key read from
the environment variable `api_key_env` (never stored in a config file). Requests are retried on
429, 5xx and connection errors with exponential backoff (or the server's Retry-After), cached on
disk keyed by the sha256 of the request body (a re-run costs nothing), and `complete_many` sends a
batch concurrently on a few threads. The prompts follow the paper's protocol (paper.md §8.8): the explainer
sees examples with activations quantised to 0–9 and answers inside <answer></answer>; the simulator
sees only the explanation and the test tokens and returns one 0–9 digit per token.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from monosemantic.errors import UserError
from monosemantic.io import atomic_path

log = logging.getLogger(__name__)

Messages = list[dict[str, str]]


@dataclass(frozen=True)
class LLMConfig:
    """Where the chat endpoint is and how to call it."""

    base_url: str = "https://api.openai.com/v1"
    """Base URL of an OpenAI-compatible API (vLLM, llama.cpp server, Ollama's /v1 ...)."""
    model: str = "gpt-4o-mini"
    """Model name sent with each request."""
    api_key_env: str = "OPENAI_API_KEY"
    """Environment variable holding the API key (empty or unset: no Authorization header)."""
    temperature: float = 0.0
    max_tokens: int = 400
    max_retries: int = 5
    """Retries on 429 / 5xx / connection errors before giving up."""
    backoff_s: float = 2.0
    """First retry delay; doubles each time (a Retry-After header wins)."""
    timeout_s: float = 120.0
    concurrency: int = 4
    """Requests in flight at once in `complete_many`."""


class LLMError(UserError):
    """The endpoint kept failing or answered something unreadable."""


class ChatClient:
    """`complete(messages) -> text`, retried and cached; `complete_many` for a batch."""

    def __init__(self, cfg: LLMConfig, cache_dir: Path | None = None, sleep: Callable[[float], None] = time.sleep):
        self.cfg = cfg
        self.cache_dir = cache_dir
        self.sleep = sleep
        self.n_requests = 0

    def _body(self, messages: Messages) -> dict[str, Any]:
        c = self.cfg
        return {"model": c.model, "messages": messages, "temperature": c.temperature, "max_tokens": c.max_tokens}

    def _cache_path(self, body: dict[str, Any]) -> Path | None:
        if self.cache_dir is None:
            return None
        key = hashlib.sha256(json.dumps([self.cfg.base_url, body], sort_keys=True).encode()).hexdigest()
        return self.cache_dir / key[:2] / f"{key}.json"

    def complete(self, messages: Messages) -> str:
        body = self._body(messages)
        cached = self._cache_path(body)
        if cached is not None and cached.is_file():
            return json.loads(cached.read_text())["content"]
        content = self._post(body)
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(cached) as tmp:
                tmp.write_text(json.dumps({"request": body, "content": content}))
        return content

    def complete_many(self, batch: Sequence[Messages]) -> list[str]:
        with ThreadPoolExecutor(max_workers=max(1, self.cfg.concurrency)) as pool:
            return list(pool.map(self.complete, batch))

    def _post(self, body: dict[str, Any]) -> str:
        url = self.cfg.base_url.rstrip("/") + "/chat/completions"
        headers = {"Content-Type": "application/json"}
        if key := os.environ.get(self.cfg.api_key_env, ""):
            headers["Authorization"] = f"Bearer {key}"
        data = json.dumps(body).encode()
        for attempt in range(self.cfg.max_retries + 1):
            delay = self.cfg.backoff_s * 2**attempt
            try:
                self.n_requests += 1
                req = urllib.request.Request(url, data=data, headers=headers, method="POST")
                with urllib.request.urlopen(req, timeout=self.cfg.timeout_s) as resp:
                    reply = json.loads(resp.read())
                return reply["choices"][0]["message"]["content"]
            except urllib.error.HTTPError as e:
                if e.code != 429 and e.code < 500:
                    raise LLMError(f"{url}: HTTP {e.code} ({e.reason})") from None
                retry_after = e.headers.get("Retry-After") if e.headers else None
                if retry_after and retry_after.replace(".", "", 1).isdigit():
                    delay = float(retry_after)
                why = f"HTTP {e.code}"
            except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
                why = str(e)
            except (KeyError, IndexError, json.JSONDecodeError) as e:
                raise LLMError(f"{url}: not a chat completion reply ({e})") from None
            if attempt == self.cfg.max_retries:
                raise LLMError(f"{url}: gave up after {attempt + 1} attempts ({why})")
            log.info("%s: %s, retrying in %.1f s", url, why, delay)
            self.sleep(delay)
        raise AssertionError("unreachable")


EXPLAIN_SYSTEM = (
    "We study features of a small language model. Each feature fires on some tokens. You see text "
    "excerpts; each token is followed by the feature's activation on it, an integer 0-9 (0: off, 9: "
    "strongest). Explain in one short phrase what the feature fires on. Do not quote long examples. "
    "Put the phrase inside <answer></answer>."
)
SIMULATE_SYSTEM = (
    "We study features of a small language model. Given an explanation of what a feature fires on, "
    "predict its activation on each token of each excerpt, as an integer 0-9. Reply with one line per "
    "excerpt, in order, of the form `N: a b c ...` with exactly one integer per token."
)


def _show(tokens: Sequence[str]) -> str:
    return json.dumps(list(tokens), ensure_ascii=False)


@dataclass
class LLMExplainer:
    client: ChatClient
    name: str = "llm"

    @property
    def concurrency(self) -> int:
        return self.client.cfg.concurrency

    def explain(self, evidence: Any) -> str:
        from monosemantic.analyses.explain import quantize

        top = max((max(e.acts) for e in evidence.examples if e.acts), default=0.0)
        lines = []
        for e in evidence.examples:
            q = quantize(np.array(e.acts), top)
            lines.append(
                " ".join(f"{json.dumps(t, ensure_ascii=False)}:{int(a)}" for t, a in zip(e.tokens, q, strict=True))
            )
        user = "Excerpts:\n" + "\n".join(lines)
        answer = self.client.complete(
            [{"role": "system", "content": EXPLAIN_SYSTEM}, {"role": "user", "content": user}]
        )
        m = re.search(r"<answer>(.*?)</answer>", answer, re.S)
        return (m.group(1) if m else answer).strip()  # no tags: the paper's "leaked" case, kept whole


@dataclass
class LLMSimulator:
    client: ChatClient
    name: str = "llm"

    def simulate(self, explanation: str, windows: Sequence[Sequence[str]]) -> list[list[float]]:
        user = f"Explanation: {explanation}\nExcerpts (JSON lists of tokens):\n" + "\n".join(
            f"{i}: {_show(w)}" for i, w in enumerate(windows)
        )
        reply = self.client.complete(
            [{"role": "system", "content": SIMULATE_SYSTEM}, {"role": "user", "content": user}]
        )
        return parse_simulation(reply, [len(w) for w in windows])


def parse_simulation(reply: str, lengths: Sequence[int]) -> list[list[float]]:
    """Lines `N: a b c` → per-window predictions; a missing or wrong-length line predicts zeros."""
    found: dict[int, list[float]] = {}
    for line in reply.splitlines():
        m = re.match(r"\s*(\d+)\s*:\s*(.*)", line)
        if m:
            found[int(m.group(1))] = [float(x) for x in re.findall(r"-?\d+(?:\.\d+)?", m.group(2))]
    out = []
    for i, n in enumerate(lengths):
        pred = found.get(i, [])
        out.append(pred if len(pred) == n else [0.0] * n)
    return out
