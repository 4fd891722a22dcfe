"""URLs fit for a log line or a terminal: credentials in them are replaced by ***."""
from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def redacted(url: str) -> str:
    """`url` with its password, or a token (a user with no password, as NATS reads it), as ***."""
    parts = urlsplit(url)
    if parts.username is None:
        return url
    userinfo = "***" if parts.password is None else f"{parts.username}:***"
    return urlunsplit(parts._replace(netloc=f"{userinfo}@{parts.netloc.rpartition('@')[2]}"))
