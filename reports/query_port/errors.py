"""ClickHouse's error shape: codes, names, HTTP statuses and the response body.

Every failure of the query port reaches the client the way a ClickHouse server sends it
(docs/architecture.md "HTTP", query port): an HTTP status, the header `X-ClickHouse-Exception-Code:
N` and one text line `Code: N. DB::Exception: <message>. (NAME) (version V)`. Clients parse that
line: clickhouse-connect (`.code`), @clickhouse/client (code and type), clickhouse-go
(`DB::Exception`), clickhouse-java (`Code: N.`); Metabase shows "unreadable error" for anything else.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

#: The error codes the port raises itself (src/Common/ErrorCodes.cpp; tests check them against
#: errorCodeToName() of the engine).
UNSUPPORTED_METHOD: Final = 1
BAD_ARGUMENTS: Final = 36
NOT_IMPLEMENTED: Final = 48
SYNTAX_ERROR: Final = 62
UNKNOWN_FORMAT: Final = 73
UNKNOWN_SETTING: Final = 115
READONLY: Final = 164
TOO_MANY_SIMULTANEOUS_QUERIES: Final = 202
QUERY_WITH_SAME_ID_IS_ALREADY_RUNNING: Final = 216
INTO_OUTFILE_NOT_ALLOWED: Final = 358
SESSION_NOT_FOUND: Final = 372
SESSION_IS_LOCKED: Final = 373
INVALID_SESSION_TIMEOUT: Final = 374
QUERY_WAS_CANCELLED: Final = 394
SETTING_CONSTRAINT_VIOLATION: Final = 452
ACCESS_DENIED: Final = 497
AUTHENTICATION_FAILED: Final = 516
USER_SESSION_LIMIT_EXCEEDED: Final = 700
STD_EXCEPTION: Final = 1001

ERROR_NAMES: Final[Mapping[int, str]] = {
    UNSUPPORTED_METHOD: "UNSUPPORTED_METHOD", BAD_ARGUMENTS: "BAD_ARGUMENTS",
    NOT_IMPLEMENTED: "NOT_IMPLEMENTED", SYNTAX_ERROR: "SYNTAX_ERROR", UNKNOWN_FORMAT: "UNKNOWN_FORMAT",
    UNKNOWN_SETTING: "UNKNOWN_SETTING", READONLY: "READONLY",
    TOO_MANY_SIMULTANEOUS_QUERIES: "TOO_MANY_SIMULTANEOUS_QUERIES",
    QUERY_WITH_SAME_ID_IS_ALREADY_RUNNING: "QUERY_WITH_SAME_ID_IS_ALREADY_RUNNING",
    INTO_OUTFILE_NOT_ALLOWED: "INTO_OUTFILE_NOT_ALLOWED", SESSION_NOT_FOUND: "SESSION_NOT_FOUND",
    SESSION_IS_LOCKED: "SESSION_IS_LOCKED", INVALID_SESSION_TIMEOUT: "INVALID_SESSION_TIMEOUT",
    QUERY_WAS_CANCELLED: "QUERY_WAS_CANCELLED", SETTING_CONSTRAINT_VIOLATION: "SETTING_CONSTRAINT_VIOLATION",
    ACCESS_DENIED: "ACCESS_DENIED", AUTHENTICATION_FAILED: "AUTHENTICATION_FAILED",
    USER_SESSION_LIMIT_EXCEEDED: "USER_SESSION_LIMIT_EXCEEDED", STD_EXCEPTION: "STD_EXCEPTION",
}

#: HTTP status of an error, by error *name*: src/Server/HTTP/exceptionCodeToHTTPStatus.cpp (ClickHouse
#: master, 2025). Names are resolved to the engine's numbers at start (errorCodeToName), so the table
#: follows the engine version. Everything else is 500, like ClickHouse.
STATUS_BY_NAME: Final[Mapping[str, int]] = {
    "REQUIRED_PASSWORD": 401,
    **dict.fromkeys(("UNKNOWN_USER", "WRONG_PASSWORD", "AUTHENTICATION_FAILED", "SET_NON_GRANTED_ROLE",
                     "ACCESS_DENIED"), 403),
    **dict.fromkeys((
        "BAD_ARGUMENTS", "CANNOT_COMPILE_REGEXP", "CANNOT_PARSE_TEXT", "CANNOT_PARSE_ESCAPE_SEQUENCE",
        "CANNOT_PARSE_QUOTED_STRING", "CANNOT_PARSE_DATE", "CANNOT_PARSE_DATETIME", "CANNOT_PARSE_NUMBER",
        "CANNOT_PARSE_DOMAIN_VALUE_FROM_STRING", "CANNOT_PARSE_IPV4", "CANNOT_PARSE_IPV6",
        "CANNOT_PARSE_INPUT_ASSERTION_FAILED", "CANNOT_PARSE_UUID", "DUPLICATE_COLUMN", "ILLEGAL_COLUMN",
        "UNKNOWN_ELEMENT_IN_AST", "UNKNOWN_TYPE_OF_AST_NODE", "THERE_IS_NO_COLUMN", "TOO_DEEP_AST",
        "TOO_BIG_AST", "UNEXPECTED_AST_STRUCTURE", "SYNTAX_ERROR", "INCORRECT_DATA", "TYPE_MISMATCH",
        "VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE"), 400),
    **dict.fromkeys((
        "UNKNOWN_TABLE", "UNKNOWN_FUNCTION", "UNKNOWN_IDENTIFIER", "UNKNOWN_TYPE", "UNKNOWN_STORAGE",
        "UNKNOWN_DATABASE", "UNKNOWN_SETTING", "UNKNOWN_DIRECTION_OF_SORTING", "UNKNOWN_AGGREGATE_FUNCTION",
        "UNKNOWN_FORMAT", "UNKNOWN_DATABASE_ENGINE", "UNKNOWN_TYPE_OF_QUERY", "UNKNOWN_ROLE"), 404),
    "QUERY_IS_TOO_LARGE": 413,
    "NOT_IMPLEMENTED": 501,
    **dict.fromkeys(("SOCKET_TIMEOUT", "CANNOT_OPEN_FILE", "CANNOT_SCHEDULE_TASK"), 503),
    "HTTP_LENGTH_REQUIRED": 411,
    "TIMEOUT_EXCEEDED": 408,
    "UNSUPPORTED_MEDIA_TYPE": 415,
}

_CODE = re.compile(r"^Code: (\d+)\.")
_REWRAPPED = re.compile(r"^Code: (\d+)\. DB::Exception: Code: \1\. DB::Exception: (.*\([A-Z0-9_]+\))"
                        r" \(version [^)]*\)\. \([A-Z0-9_]+\)$", re.DOTALL)


class QueryPortError(Exception):
    """A ClickHouse-shaped error: `code` (ErrorCodes.cpp), the message and, optionally, an HTTP status
    that overrides the code's (only 503 for TOO_MANY_SIMULTANEOUS_QUERIES: back-pressure, as
    docs/architecture.md asks; ClickHouse itself answers 500 for code 202) and extra headers
    (`Retry-After`)."""

    def __init__(self, code: int, message: str, *, status: int | None = None,
                 headers: Mapping[str, str] | None = None, engine_text: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.headers = dict(headers or {})
        #: True when `message` is the engine's full "Code: N. DB::Exception: ..." text.
        self.engine_text = engine_text

    @classmethod
    def from_engine(cls, exc: BaseException) -> QueryPortError:
        """Wrap a chDB exception, whose text is already "Code: N. DB::Exception: ... (NAME)".

        chDB re-wraps some errors ("Code: 164. DB::Exception: Code: 164. DB::Exception: msg. (READONLY)
        (version 26.9.2.1). (READONLY)", seen for SETTINGS clauses): the inner message is kept. Text
        without a code becomes STD_EXCEPTION (1001).
        """
        text = str(exc).strip()
        wrapped = _REWRAPPED.match(text)
        if wrapped:
            text = f"Code: {wrapped.group(1)}. DB::Exception: {wrapped.group(2)}"
        match = _CODE.match(text)
        if not match:
            return cls(STD_EXCEPTION, text or type(exc).__name__)
        return cls(int(match.group(1)), text, engine_text=True)

    def body(self, version: str) -> str:
        """The response body, as ClickHouse writes it (one line + LF), e.g.
        `Code: 516. DB::Exception: dashboards: Authentication failed: ... (AUTHENTICATION_FAILED) (version 26.9.2.1)`.
        """
        if self.engine_text:
            text = self.message
            if "(version " not in text[-64:]:
                text = f"{text} (version {version})"
            return text + "\n"
        name = ERROR_NAMES.get(self.code, "UNKNOWN_EXCEPTION")
        message = self.message.rstrip(".")
        return f"Code: {self.code}. DB::Exception: {message}. ({name}) (version {version})\n"


def error(code: int, message: str, **kwargs: Any) -> QueryPortError:
    """A QueryPortError (keyword arguments: status, headers)."""
    return QueryPortError(code, message, **kwargs)


def default_status(code: int) -> int:
    """HTTP status of one of the port's own codes, before the engine's code table is loaded."""
    return STATUS_BY_NAME.get(ERROR_NAMES.get(code, ""), 500)


def statuses_by_code(code_names: Mapping[int, str]) -> dict[int, int]:
    """{code: HTTP status} for the engine's {code: name} table (errorCodeToName), per STATUS_BY_NAME."""
    return {code: STATUS_BY_NAME[name] for code, name in code_names.items() if name in STATUS_BY_NAME}
