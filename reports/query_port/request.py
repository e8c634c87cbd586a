"""An HTTP request of the ClickHouse interface, read: credentials, body, form fields, and the Job.

What is read follows clickhouse.com/docs/interfaces/http: the query in `query=` and/or the body
(joined by a line feed), `param_<name>` query parameters, reserved parameters (`database`,
`default_format`, `query_id`, `session_id`, ...), every other URL parameter a setting (checked by
the policy), and the `X-ClickHouse-*` headers.
"""

from __future__ import annotations

import base64
import binascii
import email.parser
import email.policy
import hmac
from collections.abc import Mapping, Sequence

from starlette.datastructures import Headers
from starlette.requests import Request

from reports.query_port.compression import CORRUPT_ERRORS, choose_encoding, decoder, native_compression_available
from reports.query_port.config import QueryPortConfig
from reports.query_port.engine import Job, QueryEngine
from reports.query_port.errors import (
    AUTHENTICATION_FAILED,
    BAD_ARGUMENTS,
    NOT_IMPLEMENTED,
    SYNTAX_ERROR,
    QueryPortError,
    error,
)
from reports.query_port.policy import RESERVED_PARAMS
from reports.query_port.sessions import Session, Sessions

Params = list[tuple[str, str]]
_TRUE = ("1", "true")


def authenticate(headers: Headers, params: Sequence[tuple[str, str]], config: QueryPortConfig) -> None:
    """HTTP Basic, X-ClickHouse-User/-Key, or user/password URL parameters, never two at once
    (src/Server/HTTP/authenticateUserByHTTP.cpp). No credentials means user `default` with an
    empty password, as in ClickHouse. Raises 516 AUTHENTICATION_FAILED (HTTP 403)."""
    header_user = headers.get("x-clickhouse-user", "")
    header_key = headers.get("x-clickhouse-key", "")
    authorization = headers.get("authorization", "")
    in_params = any(name in ("user", "password") for name, _ in params)
    if header_user or header_key:
        if authorization:
            raise _auth_error("Invalid authentication: it is not allowed to use X-ClickHouse HTTP "
                              "headers and Authorization HTTP header simultaneously")
        if in_params:
            raise _auth_error("Invalid authentication: it is not allowed to use X-ClickHouse HTTP "
                              "headers and authentication via parameters simultaneously")
        if not header_user:
            raise _auth_error("Got an empty user name from X-ClickHouse HTTP headers")
        user, password = header_user, header_key
    elif authorization:
        if in_params:
            raise _auth_error("Invalid authentication: it is not allowed to use Authorization HTTP "
                              "header and authentication via parameters simultaneously")
        user, password = _basic(authorization)
    else:
        values = dict(params)
        user = values.get("user", "default")
        password = values.get("password", "")
        if not user:
            raise _auth_error("Got an empty user name from authentication via parameters")
    # TRICKY: both comparisons always run, in constant time, so timing tells nothing about which
    # part was wrong (hmac.compare_digest, docs.python.org/3/library/hmac.html).
    user_ok = hmac.compare_digest(user.encode(), config.user.encode())
    password_ok = hmac.compare_digest(password.encode(), config.password.encode())
    if not (user_ok and password_ok):
        raise _auth_error(f"{user}: Authentication failed: password is incorrect, or there is no user with such name")


def _basic(authorization: str) -> tuple[str, str]:
    scheme, _, info = authorization.partition(" ")
    if scheme.lower() != "basic":
        raise _auth_error(f"Invalid authentication: '{scheme}' HTTP Authorization scheme is not supported")
    try:
        decoded = base64.b64decode(info.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise _auth_error("Invalid authentication: malformed Basic credentials") from None
    user, _, password = decoded.partition(":")
    if not user:
        raise _auth_error("Got an empty user name from Authorization HTTP header")
    return user, password


def _is_number(text: str) -> bool:
    """ASCII digits only: str.isdigit() is also true for '²' or '١', which int() refuses or reads."""
    return text.isascii() and text.isdigit()


def _auth_error(message: str) -> QueryPortError:
    return error(AUTHENTICATION_FAILED, message)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, decompressed per Content-Encoding, at most `limit` bytes after decompression.
    Raises 62 (over the size, like max_query_size), 48 (another encoding) or 36 (corrupt data)."""
    encoding = request.headers.get("content-encoding", "").strip().lower()
    body_decoder = decoder(encoding)
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            if body_decoder is not None and chunk:
                chunk = body_decoder.decompress(chunk, limit + 1 - size)
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            chunks.append(chunk)
        if body_decoder is not None:
            tail = body_decoder.finish(limit + 1 - size)
            if size + len(tail) > limit:
                raise _too_large(limit)
            chunks.append(tail)
    except CORRUPT_ERRORS as exc:
        raise error(BAD_ARGUMENTS, f"Cannot decompress the request body ({encoding}): {exc}") from None
    return b"".join(chunks)


def _too_large(limit: int) -> QueryPortError:
    return error(SYNTAX_ERROR, f"Max query size exceeded: the request body is larger than {limit} bytes")


def form_fields(content_type: str, body: bytes) -> Params:
    """Text fields of a multipart/form-data body (`query`, `param_*`, as clickhouse-connect and
    @clickhouse/client send long parameters). File parts are external tables: refused with 48."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body)
    if not message.is_multipart():
        raise error(BAD_ARGUMENTS, "Malformed multipart/form-data body")
    fields: Params = []
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        if part.get_filename() is not None:
            raise error(NOT_IMPLEMENTED, "External data (temporary tables) is not supported by the query port")
        payload = part.get_payload(decode=True)
        text = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else str(payload)
        fields.append((name, text))
    return fields


def split_params(params: Params, multipart: bool) -> tuple[dict[str, str], dict[str, str], Params]:
    """(reserved parameters, query parameters without `param_`, setting changes in order). In a
    multipart request `<name>_format/_types/_structure` describe external tables and are not settings."""
    reserved: dict[str, str] = {}
    query_params: dict[str, str] = {}
    changes: Params = []
    for key, value in params:
        if key.startswith("param_"):
            query_params[key[6:]] = value
        elif key in RESERVED_PARAMS:
            reserved[key] = value
        elif key and not (multipart and key.endswith(("_format", "_types", "_structure"))):
            changes.append((key, value))
    return reserved, query_params, changes


def query_text(reserved: Mapping[str, str], body: bytes, config: QueryPortConfig) -> str:
    """URL `query`, a line feed, then the body (either may be absent). Raises 62 when empty or over
    max_query_size_bytes."""
    text = reserved.get("query", "")
    if body:
        decoded = body.decode("utf-8", "replace")
        text = f"{text}\n{decoded}" if text else decoded
    if not text.strip():
        raise error(SYNTAX_ERROR, "Empty query")
    if len(text.encode()) > config.max_query_size_bytes:
        raise error(SYNTAX_ERROR, f"Max query size exceeded (max_query_size = {config.max_query_size_bytes})")
    return text


def response_compression(headers: Headers, changes: Params, config: QueryPortConfig) -> tuple[str | None, int]:
    """(Content-Encoding, level) of the response: like ClickHouse, compressed only when the effective
    `enable_http_compression` is 1 and Accept-Encoding names a method; the level is
    `http_zlib_compression_level` (1-9, default 3)."""
    url = dict(changes)
    enabled = url.get("enable_http_compression", "1" if config.http_compression_default else "0")
    level_text = url.get("http_zlib_compression_level", "3")
    level = min(9, max(1, int(level_text))) if _is_number(level_text) else 3
    if enabled.strip().lower() not in _TRUE:
        return None, level
    return choose_encoding(headers.get("accept-encoding", "")), level


def build_job(engine: QueryEngine, sessions: Sessions, headers: Headers, params: Params, body: bytes,
              query_id: str, multipart: bool) -> tuple[Job, Session | None, bool]:
    """The Job of a request, its session (acquired: release it when done) and whether to close the
    session afterwards. Settings: the session's, then the URL's (checked). Database: header, URL,
    session, default. Raises QueryPortError."""
    config = engine.config
    reserved, query_params, changes = split_params(params, multipart)
    text = query_text(reserved, body, config)
    settings = engine.policy.check_all(changes)
    native_compression = reserved.get("compress", "") in _TRUE
    if native_compression and not native_compression_available():
        raise error(NOT_IMPLEMENTED, "compress=1 (ClickHouse native compression) needs the lz4 and "
                                     "clickhouse-cityhash modules; use HTTP compression (Accept-Encoding)")
    if reserved.get("decompress", "") in _TRUE:
        raise error(NOT_IMPLEMENTED, "decompress=1 (a natively compressed request body) is not supported by "
                                     "the query port; use Content-Encoding")
    revision_text = reserved.get("client_protocol_version", "0") or "0"
    if not _is_number(revision_text):
        raise error(BAD_ARGUMENTS, f"Cannot parse client_protocol_version '{revision_text}'")
    session_id = reserved.get("session_id", "")
    if len(session_id) > 256:
        raise error(BAD_ARGUMENTS, "session_id is longer than 256 characters")
    session = (sessions.acquire(session_id, reserved.get("session_timeout"), reserved.get("session_check", "") in _TRUE)
               if session_id else None)
    try:
        merged = {**(session.settings if session else {}), **settings}
        database = (headers.get("x-clickhouse-database") or reserved.get("database")
                    or (session.database if session else None) or config.database)
        default_format = headers.get("x-clickhouse-format") or reserved.get("default_format") or "TabSeparated"
        engine.canonical_format(default_format)
        compression, level = response_compression(headers, changes, config)
    except QueryPortError:
        if session is not None:
            sessions.release(session, False)
        raise
    job = Job(text=text, params=query_params, settings=merged, database=database, default_format=default_format,
              query_id=query_id, session=session, revision=int(revision_text), compression=compression,
              compression_level=level, native_compression=native_compression)
    return job, session, reserved.get("close_session", "") in _TRUE
