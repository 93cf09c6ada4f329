"""Credentials never leave: the userinfo of URLs (`scheme://user:password@host`) is removed
from every message a client, a health check or a log line can show.

Backend URLs may carry credentials (`http://user:token@gpu-box:8000`), and the errors of
HTTP clients quote the URL they failed on. `BackendError` passes every message through
`without_credentials`, and the logging filter does the same for every record.

This module imports nothing of Mimiverse: the lowest layers use it.
"""

from __future__ import annotations

import logging
import re

# Anchored at "://", so the cost is linear in the text whatever it holds; userinfo ends
# at the first "@" before any "/", "?", "#" or whitespace (RFC 3986's authority).
_USERINFO = re.compile(r"://[^/?#\s]*@")


def without_credentials(text: str) -> str:
    """`text` with the userinfo of every URL in it removed."""
    if "://" not in text:
        return text
    return _USERINFO.sub("://", text)


class CredentialFilter(logging.Filter):
    """Removes URL credentials from a record's message and its traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "://" in message:
            record.msg, record.args = without_credentials(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = without_credentials(
                logging.Formatter().formatException(record.exc_info))
        return True
