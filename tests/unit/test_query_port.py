"""Pure functions of the query port (reports/query_port): errors, the statement guard's parsing and
syntax-tree check, the settings policy, Accept-Encoding, configuration bounds."""

from __future__ import annotations

import pytest

from clickstream.core.settings import Settings
from reports.query_port import QueryPort, QueryPortConfig, QueryPortError, errors, guard
from reports.query_port.compression import choose_encoding
from reports.query_port.policy import SettingsPolicy


def test_error_body_shape() -> None:
    err = QueryPortError(errors.AUTHENTICATION_FAILED, "u: Authentication failed")
    assert err.body("26.9.2.1") == ("Code: 516. DB::Exception: u: Authentication failed. (AUTHENTICATION_FAILED) "
                                    "(version 26.9.2.1)\n")
    engine = QueryPortError.from_engine(RuntimeError("Code: 60. DB::Exception: Unknown table x. (UNKNOWN_TABLE)"))
    assert engine.code == 60
    assert engine.body("1.2") == "Code: 60. DB::Exception: Unknown table x. (UNKNOWN_TABLE) (version 1.2)\n"
    rewrapped = QueryPortError.from_engine(RuntimeError(
        "Code: 164. DB::Exception: Code: 164. DB::Exception: Cannot modify 'a' setting in readonly mode. (READONLY) "
        "(version 26.9.2.1). (READONLY)"))
    assert rewrapped.body("26.9.2.1") == ("Code: 164. DB::Exception: Cannot modify 'a' setting in readonly mode. "
                                          "(READONLY) (version 26.9.2.1)\n")


def test_parse_formatted() -> None:
    s = guard.parse_formatted("SELECT 1\nUNION ALL\nSELECT 2\nFORMAT JSON\nSETTINGS max_threads = 1\n")
    assert s == guard.Statement("SELECT", "SELECT 1\nUNION ALL\nSELECT 2\nSETTINGS max_threads = 1", "JSON", False)
    s = guard.parse_formatted("SELECT 'a\\nFORMAT x' AS FORMAT")
    assert s.format is None
    assert guard.parse_formatted("SELECT 1\nINTO OUTFILE 'x'\nFORMAT CSV").into_outfile
    assert guard.parse_formatted("WITH\n    1 AS x\nSELECT x").kind == "WITH"


def test_parse_set_and_use() -> None:
    assert guard.parse_set("SET a = 1, b = 'x\\'y', c = true, d") == [
        ("a", "1"), ("b", "x'y"), ("c", "true"), ("d", "1")]
    with pytest.raises(QueryPortError) as raised:
        guard.parse_set("SET a = 1 + 1")
    assert raised.value.code == errors.BAD_ARGUMENTS
    with pytest.raises(QueryPortError):
        guard.parse_set("SET ROLE admin")
    assert guard.parse_use("USE `my db`") == "my db" and guard.parse_use("USE system") == "system"


FUNCTIONS = frozenset({"file", "url", "numbers", "eval", "view"})


def ast(*lines: str) -> str:
    return "\n".join(lines) + "\n"


def test_check_ast_table_functions_and_views() -> None:
    select = ("SelectWithUnionQuery (children 1)", " ExpressionList (children 1)", "  SelectQuery (children 2)",
              "   ExpressionList (children 1)", "    Asterisk", "   TablesInSelectQuery (children 1)",
              "    TablesInSelectQueryElement (children 1)", "     TableExpression (children 1)")
    guard.check_ast(ast(*select, "      Function numbers (children 1)", "       ExpressionList (children 1)",
                     "        Literal UInt64_3"), FUNCTIONS)
    view = ("      Function v_site_range (children 1)", "       ExpressionList (children 0)")
    guard.check_ast(ast(*select, *view), FUNCTIONS)
    for name in ("url", "eval", "URL"):
        with pytest.raises(QueryPortError) as raised:
            guard.check_ast(ast(*select, f"      Function {name} (children 1)", "       ExpressionList (children 0)"),
                         FUNCTIONS)
        assert raised.value.code == errors.ACCESS_DENIED


def test_check_ast_denies_file_anywhere_and_verifies_the_tree() -> None:
    with pytest.raises(QueryPortError, match="function FILE"):
        guard.check_ast(ast("SelectWithUnionQuery (children 1)", " ExpressionList (children 1)",
                         "  SelectQuery (children 1)", "   ExpressionList (children 1)",
                         "    Function FILE (alias x) (children 1)", "     ExpressionList (children 1)",
                         "      Literal 'a'"), FUNCTIONS)
    truncated = ast("SelectWithUnionQuery (children 1)", " ExpressionList (children 1)", "  SelectQuery (children 2)",
                    "   ExpressionList (children 1)", "    Literal UInt64_1")
    with pytest.raises(QueryPortError, match="could not verify"):
        guard.check_ast(truncated, FUNCTIONS)
    with pytest.raises(QueryPortError, match="could not verify"):
        guard.check_ast("", FUNCTIONS)
    with pytest.raises(QueryPortError, match="could not verify"):
        guard.check_ast(ast("ShowTables", "ShowTables"), FUNCTIONS)  # two roots: two statements


def test_settings_policy() -> None:
    policy = SettingsPolicy(QueryPortConfig(password="x"), {"max_threads", "limit", "readonly",
                                                                  "max_execution_time", "result_overflow_mode",
                                                                  "allow_ddl", "log_comment"})
    assert policy.check("limit", "10") == "10"
    assert policy.check("max_threads", "1") == "1"
    assert policy.check("max_execution_time", "12.5") == "12.5"
    assert policy.check("readonly", "2") is None and policy.check("enable_http_compression", "1") is None
    violation = errors.SETTING_CONSTRAINT_VIOLATION
    cases = [("max_threads", "2", violation), ("max_execution_time", "0", violation),
             ("result_overflow_mode", "break", violation), ("readonly", "0", errors.READONLY),
             ("allow_ddl", "1", errors.READONLY), ("nope", "1", errors.UNKNOWN_SETTING),
             ("log_comment", "a&b", errors.BAD_ARGUMENTS), ("log_comment", "%26", errors.BAD_ARGUMENTS)]
    for name, value, code in cases:
        with pytest.raises(QueryPortError) as raised:
            policy.check(name, value)
        assert raised.value.code == code, (name, value)


def test_choose_encoding() -> None:
    assert choose_encoding("lz4, zstd, br, gzip") == "gzip"
    assert choose_encoding("deflate;q=0.5, gzip;q=0") == "deflate"
    assert choose_encoding("identity") is None and choose_encoding("") is None


def test_config_validation_and_settings() -> None:
    with pytest.raises(ValueError, match="password"):
        QueryPort(QueryPortConfig(password=""), "/nonexistent")
    assert QueryPortConfig.from_settings(Settings.from_env({})) is None  # the port is off without a password
    config = QueryPortConfig.from_settings(Settings.from_env({
        "CLICKSTREAM_SQL_PASSWORD": "pw", "CLICKSTREAM_SQL_MAX_CONCURRENT_QUERIES": "3",
        "CLICKSTREAM_SQL_MAX_EXECUTION_TIME_S": "12.5", "CLICKSTREAM_SQL_PORT": "9123"}))
    assert config is not None
    assert (config.password, config.max_concurrent_queries, config.max_execution_time_s, config.port) == (
        "pw", 3, 12.5, 9123)
    assert SettingsPolicy(config, ()).caps()["max_execution_time"] == "12.5"
    with pytest.raises(ValueError, match="max_concurrent_queries"):
        QueryPortConfig(password="x", max_concurrent_queries=0)
    assert "password" not in repr(QueryPortConfig(password="hunter2")) and "hunter2" not in repr(
        QueryPortConfig(password="hunter2"))

