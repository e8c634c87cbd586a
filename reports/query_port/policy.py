"""Which settings a dashboard may set, and to what: readonly=2 semantics with constraints.

ClickHouse's `readonly=2` lets a user change harmless settings but not write; a settings profile
with constraints keeps caps as upper bounds. chDB has neither a safe readonly=2 (it lets every
table function through, see reports/query_port/__init__.py) nor profiles (CREATE SETTINGS PROFILE
is refused), so the engine runs each query with readonly=1 and this policy decides what a client
may change: the checked values are passed to the engine in the query connection's string.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Final

from reports.query_port.config import QueryPortConfig
from reports.query_port.errors import (
    BAD_ARGUMENTS,
    READONLY,
    SETTING_CONSTRAINT_VIOLATION,
    UNKNOWN_SETTING,
    error,
)

#: URL parameters that are not settings (HTTPHandler.cpp `reserved_param_names`, plus `query`,
#: `database`, `default_format`, `role` and `param_*` which it handles before settings).
RESERVED_PARAMS: Final = frozenset({
    "query", "database", "default_format", "compress", "decompress", "user", "password", "quota_key",
    "query_id", "stacktrace", "buffer_size", "wait_end_of_query", "session_id", "session_timeout",
    "session_check", "client_protocol_version", "close_session", "role",
})

#: Settings the HTTP layer applies (or, for progress and buffering, accepts and ignores: the port
#: always answers after the query ends, so errors always get their real status).
HTTP_LAYER_SETTINGS: Final = frozenset({
    "enable_http_compression", "http_zlib_compression_level", "send_progress_in_http_headers",
    "http_headers_progress_interval_ms", "cancel_http_readonly_queries_on_client_close",
    "http_wait_end_of_query", "http_response_buffer_size", "http_write_exception_in_output_format",
    "add_http_cors_header",
})

#: Upper bounds a client may lower but not raise (QueryPortConfig field per ClickHouse setting).
CAPPED_SETTINGS: Final[Mapping[str, str]] = {
    "max_execution_time": "max_execution_time_s",
    "max_memory_usage": "max_memory_usage_bytes",
    "max_result_rows": "max_result_rows",
    "max_result_bytes": "max_result_bytes",
    "max_threads": "max_threads",
}

#: Settings whose value is fixed by the port (a different value is a constraint violation).
FIXED_SETTINGS: Final[Mapping[str, str]] = {"result_overflow_mode": "throw", "timeout_overflow_mode": "throw"}

#: Harmless settings a BI tool may set (output shape, limits that only lower, planner hints). Not a
#: prefix rule: `output_format_schema` and `format_template_*` name files, so names are listed.
DEFAULT_ALLOWED_SETTINGS: Final = frozenset({
    "limit", "offset", "extremes", "totals_mode", "totals_auto_threshold", "max_block_size",
    "session_timezone", "date_time_output_format", "date_time_input_format", "log_comment",
    "join_use_nulls", "transform_null_in", "aggregate_functions_null_for_empty", "cast_keep_nullable",
    "prefer_column_name_to_alias", "joined_subquery_requires_alias", "union_default_mode",
    "enable_positional_arguments", "enable_analyzer", "allow_experimental_analyzer",
    "cast_string_to_dynamic_use_inference", "low_cardinality_allow_in_native_format",
    "max_rows_to_read", "max_bytes_to_read", "read_overflow_mode", "max_rows_to_group_by",
    "group_by_overflow_mode", "max_rows_to_sort", "max_bytes_to_sort", "sort_overflow_mode",
    "max_columns_to_read", "max_query_size", "max_ast_depth", "max_ast_elements", "max_subquery_depth",
    "max_execution_speed", "min_execution_speed", "timeout_before_checking_execution_speed",
    "force_index_by_date", "force_primary_key", "optimize_read_in_order", "optimize_aggregation_in_order",
    "final", "use_skip_indexes", "compile_expressions", "output_format_json_quote_64bit_integers",
    "output_format_json_quote_64bit_floats", "output_format_json_quote_denormals",
    "output_format_json_quote_decimals", "output_format_json_named_tuples_as_objects",
    "output_format_json_array_of_rows", "output_format_json_validate_utf8",
    "output_format_json_escape_forward_slashes", "output_format_json_pretty_print",
    "output_format_write_statistics", "output_format_decimal_trailing_zeros",
    "output_format_csv_crlf_end_of_line", "output_format_tsv_crlf_end_of_line", "format_csv_delimiter",
    "format_csv_null_representation", "format_tsv_null_representation", "output_format_pretty_max_rows",
    "output_format_pretty_max_column_pad_width", "output_format_pretty_max_value_width",
    "output_format_pretty_color", "output_format_pretty_grid_charset", "output_format_pretty_row_numbers",
    "output_format_arrow_low_cardinality_as_dictionary", "output_format_arrow_string_as_string",
    "output_format_arrow_fixed_string_as_fixed_byte_array", "output_format_parquet_string_as_string",
    "output_format_native_encode_types_in_binary_format", "output_format_native_write_json_as_string",
    "output_format_binary_encode_types_in_binary_format", "output_format_binary_write_json_as_string",
    "bool_true_representation", "bool_false_representation",
})

#: A setting value the port passes to the engine's connection string, which URL-decodes and then
#: splits on '&' itself: '%26' there turns into a separator (verified on chDB 26.9). Spaces are sent
#: as %20.
_SAFE_VALUE = re.compile(r"^[A-Za-z0-9_.:/\-+ ,;|]{0,256}$")
_NUMBER = re.compile(r"^[0-9]+(\.[0-9]+)?$")  # ASCII: \d would also match other scripts' digits


def format_number(value: float) -> str:
    """12.0 -> '12', 12.5 -> '12.5' (how the engine's connection string takes numbers)."""
    return str(int(value)) if float(value).is_integer() else repr(value)


class SettingsPolicy:
    """Checks setting changes against the port's caps and allowlist.

    `known` is the engine's setting names (system.settings). Errors, as ClickHouse reports them:
    unknown name -> 115 UNKNOWN_SETTING (404); a setting outside the allowlist, or readonly=0 ->
    164 READONLY (500), like a readonly user; a cap raised or a fixed setting changed -> 452
    SETTING_CONSTRAINT_VIOLATION (500), like a profile constraint; an unsafe value -> 36 BAD_ARGUMENTS.
    """

    def __init__(self, config: QueryPortConfig, known: Iterable[str]) -> None:
        self.config = config
        self.known = frozenset(known)
        self.allowed = DEFAULT_ALLOWED_SETTINGS | config.extra_allowed_settings

    def caps(self) -> dict[str, str]:
        """The settings every query runs with (the engine also gets readonly=1)."""
        c = self.config
        return {
            "max_execution_time": format_number(c.max_execution_time_s),
            "max_memory_usage": str(c.max_memory_usage_bytes),
            "max_result_rows": str(c.max_result_rows),
            "max_result_bytes": str(c.max_result_bytes),
            "max_threads": str(c.max_threads),
            **FIXED_SETTINGS,
        }

    def check(self, name: str, value: str) -> str | None:
        """Validate one change; return the value to give the engine, or None for an HTTP-layer
        setting or a `readonly` that is at least as strict as the port's. Raises QueryPortError."""
        if name in HTTP_LAYER_SETTINGS:
            return None
        if name not in self.known:
            raise error(UNKNOWN_SETTING, f"Setting {name} is neither a builtin setting nor started with the "
                                         "prefix 'custom_' registered for user-defined settings")
        if name == "readonly":
            if value.strip() in ("1", "2"):
                return None
            raise error(READONLY, "Cannot modify 'readonly' setting in readonly mode")
        if name in CAPPED_SETTINGS:
            return self._capped(name, value.strip())
        if name in FIXED_SETTINGS:
            if value.strip().strip("'") != FIXED_SETTINGS[name]:
                raise error(SETTING_CONSTRAINT_VIOLATION, f"Setting {name} should not be changed")
            return FIXED_SETTINGS[name]
        if name not in self.allowed:
            raise error(READONLY, f"Cannot modify '{name}' setting in readonly mode")
        if not _SAFE_VALUE.match(value):
            raise error(BAD_ARGUMENTS, f"Value of setting {name} has characters the query port does not "
                                       "pass to the engine (allowed: letters, digits, space and _.:/-+,;|)")
        return value

    def _capped(self, name: str, text: str) -> str:
        cap = float(getattr(self.config, CAPPED_SETTINGS[name]))
        if not _NUMBER.match(text):
            raise error(SETTING_CONSTRAINT_VIOLATION,
                        f"Setting {name} should be a number not greater than {format_number(cap)}")
        number = float(text)
        if number == 0 or number > cap:  # 0 is "unlimited" in ClickHouse
            raise error(SETTING_CONSTRAINT_VIOLATION, f"Setting {name} shouldn't be greater than {format_number(cap)}")
        return format_number(number)

    def check_all(self, changes: Iterable[tuple[str, str]]) -> dict[str, str]:
        """Validate changes in order (the last value of a name wins, as in ClickHouse)."""
        out: dict[str, str] = {}
        for name, value in changes:
            checked = self.check(name, value)
            if checked is not None:
                out[name] = checked
        return out
