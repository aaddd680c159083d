"""Secrets in command lines never reach a label.

Any local user chooses a process' argv, and a command line often carries a secret
(``--password=…``, ``token=…``, ``postgres://user:pass@host``). What a name template takes
from a command line (``{{.Matches.x}}``, ``{{.Matches}}``, ``{{.ExeFull}}``,
``{{.ExeBase}}``, -namemapping captures) is redacted: the part of it that is a secret value
becomes ``<redacted>``. Matching itself (which processes a matcher takes) sees the command
line as it is, so groups are the same as process-exporter's.

The secret values found (:func:`secret_spans`), case-insensitively:

* an option naming a secret, its value after ``=`` or in the next argument:
  ``--password=x``, ``--db-password x``, ``-token x`` (password, passwd, pwd, secret,
  token, apikey/api-key/api_key, access-key, credential(s), auth);
* ``-p x`` (mysql and friends), unless x is a number alone (``-p 8080``: a port);
* ``NAME=value`` where NAME ends in one of those words (``token=``, ``db_password=``, also in
  a URL's query), or in ``_KEY``, ``_SECRET``, ``_TOKEN`` (``AWS_SECRET_ACCESS_KEY=``);
* the password of a URL's userinfo (``scheme://user:pass@host``).

Patterns are RE2 (linear time whatever the command line).
"""

from __future__ import annotations

import re2

REDACTED = "<redacted>"
_WORDS = r"(?:password|passwd|pwd|secret|token|api[-_]?key|access[-_]?key|credentials?|auth)"
_PATTERNS = tuple(re2.compile(p) for p in (
    # an option naming a secret: its value after "=", or the next argument (not an option)
    rf"(?i)(?:^|\s)--?[a-z0-9_.-]*{_WORDS}[a-z0-9_.-]*(?:=(\S+)|\s+([^\s-]\S*))",
    r"(?:^|\s)-p\s+((?:\d+[^\s\d]|[^\s\d-])\S*)",  # not a number alone: -p 8080 is a port
    # NAME=value
    rf"(?i)(?:^|[\s,;&?])[a-z0-9_.-]*{_WORDS}=([^\s&,;]+)",
    r"(?i)(?:^|\s)[a-z0-9_]*_(?:key|secret|token)=(\S+)",
    # scheme://user:password@host
    r"(?i)[a-z][a-z0-9+.-]*://[^/\s:@]*:([^/\s@]+)@",
))


def secret_spans(text: str) -> list:
    """[(start, end)] of the secret values in text, sorted, not overlapping."""
    spans = []
    for pattern in _PATTERNS:
        for m in pattern.finditer(text):
            for i in range(1, pattern.groups + 1):
                start, end = m.span(i)
                if start >= 0 and end > start:
                    spans.append((start, end))
    spans.sort()
    merged = []
    for start, end in spans:
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def redact_slice(text: str, start: int, end: int, spans: list) -> str:
    """text[start:end] with each part of it inside a secret span made <redacted>."""
    out, at = [], start
    for a, b in spans:
        if b <= start or a >= end:
            continue
        a, b = max(a, start), min(b, end)
        out.append(text[at:a])
        out.append(REDACTED)
        at = b
    out.append(text[at:end])
    return "".join(out)


def redact(text: str) -> str:
    """text with its secret values <redacted>."""
    spans = secret_spans(text)
    return redact_slice(text, 0, len(text), spans) if spans else text


def secrets_of(text: str):
    """() -> secret_spans(text), found on the first call only (most command lines are never
    asked: their captures are empty or there are none)."""
    found: list = []

    def spans() -> list:
        if not found:
            found.append(secret_spans(text))
        return found[0]

    return spans
