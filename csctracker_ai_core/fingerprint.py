"""Short, stable names for API keys, so logs, errors and telemetry never hold a key.

A fingerprint is a salted SHA-256 digest, not a prefix: two keys of one Google project
share their first characters, and a prefix is a piece of the secret.
"""

from __future__ import annotations

import hashlib

__all__ = ["key_fingerprint"]

# A fixed salt keeps fingerprints stable across processes and hosts (they are the
# join key in telemetry and on Redis) while making them useless as a lookup of a key
# in someone else's unsalted hash list.
_SALT = b"csctracker-ai-core/key-fingerprint/v1:"


def key_fingerprint(api_key: str) -> str:
    """Return ``"k-"`` followed by 10 hex digits identifying ``api_key``.

    >>> key_fingerprint("AIza-example")[:2]
    'k-'
    """
    digest = hashlib.sha256(_SALT + api_key.encode("utf-8")).hexdigest()
    return "k-" + digest[:10]
