"""One ``genai.Client`` per API key, created on first use and reused.

Creating a client costs tens of milliseconds (about 55 ms measured here); a call
should not pay that. This is the only module, with ``pool/lease.py``, that holds keys.

Fork: a child must never use its parent's clients (their kept-alive sockets are
shared: replies would go to the wrong process) nor close them (closing takes the
HTTP pool's lock, which a parent thread may hold, and would end the parent's
connections). The child abandons them and creates its own on first use.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from google import genai
from google.genai import types

from .. import forking
from ..exceptions import ProcessorClosedError
from ..fingerprint import key_fingerprint

__all__ = ["GeminiClients"]

logger = logging.getLogger(__name__)


class GeminiClients:
    """A thread-safe cache of SDK clients keyed by API key.

    ``base_url=None`` leaves the SDK's own default in force, so its
    ``GOOGLE_GEMINI_BASE_URL`` environment variable keeps working. The SDK's own
    retries stay off (one attempt): the pool decides what to retry, and where.
    """

    def __init__(
        self,
        *,
        base_url: str | None = None,
        timeout_s: float = 120.0,
        api_version: str | None = None,
    ) -> None:
        self._base_url = base_url
        self._timeout_ms = int(timeout_s * 1000)
        self._api_version = api_version
        self._clients: dict[str, genai.Client] = {}
        self._lock = threading.Lock()
        self._closed = False
        forking.register(self, locks=lambda c: (c._lock,), in_child=GeminiClients._after_fork_in_child)

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()
        for client in self._clients.values():
            forking.abandon(client)
        self._clients = {}

    def _http_options(self) -> types.HttpOptions:
        options: dict[str, Any] = {
            "timeout": self._timeout_ms,
            "retry_options": types.HttpRetryOptions(attempts=1),
        }
        if self._base_url:
            options["base_url"] = self._base_url
        if self._api_version:
            options["api_version"] = self._api_version
        return types.HttpOptions(**options)

    def get(self, api_key: str) -> genai.Client:
        """The client for ``api_key``, created once (never after :meth:`close`)."""
        client = self._clients.get(api_key)
        if client is not None:
            return client
        with self._lock:
            if self._closed:
                raise ProcessorClosedError(
                    "this IaProcessor is closed: its Gemini clients are gone; create a new IaProcessor."
                )
            client = self._clients.get(api_key)
            if client is None:
                logger.debug("creating Gemini client for key %s", key_fingerprint(api_key))
                client = genai.Client(api_key=api_key, vertexai=False, http_options=self._http_options())
                self._clients[api_key] = client
        return client

    def close(self) -> None:
        """Close every client's connections; no client is created afterwards."""
        with self._lock:
            self._closed = True
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            try:
                client.close()
            except Exception:  # closing is best effort; a failure here must not mask the caller's
                logger.debug("closing a Gemini client failed", exc_info=True)

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran."""
        return self._closed

    def __len__(self) -> int:
        return len(self._clients)

    def __repr__(self) -> str:
        return f"GeminiClients(base_url={self._base_url!r}, clients={len(self._clients)})"
