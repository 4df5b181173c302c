"""The command line's parsing and texts, the log formats, and the first-run documents (README's
Quickstart, examples/relay.toml) checked against what the code does."""

from __future__ import annotations

import argparse
import errno
import gc
import io
import logging
import re
import socket
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest

from relay import cli, logs
from relay.cli import GC_THRESHOLDS, _tune_gc
from relay.config import load_config
from relay.tail import refusal, url_problem

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "relay.toml"


def parse(*argv: str) -> Any:
    return cli._parser().parse_args(argv)


# ---------------------------------------------------------------------------------------------
# Parsing


def test_serve_host_and_port_are_optional_overrides() -> None:
    args = parse("serve", "--config", "x.toml")
    assert (args.config, args.host, args.port) == ("x.toml", None, None)
    args = parse("serve", "--config", "x.toml", "--host", "0.0.0.0", "--port", "9000")
    assert (args.host, args.port) == ("0.0.0.0", 9000)


def test_serve_config_is_not_an_argparse_error() -> None:
    assert parse("serve").config is None  # main() explains instead


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["serve", "--port", "70000"], "--port: must be between 0 and 65535, got 70000"),
        (["serve", "--port", "http"], "--port: not a port number: 'http'"),
        (["serve", "--host", ""], "--host: must not be empty"),
        (["demo", "--sim-port", "-1"], "--sim-port: must be between 0 and 65535, got -1"),
        (["demo", "--rate", "0"], "--rate: must be a positive number, got 0"),
        (["--log-format", "xml", "serve"], "--log-format: invalid choice: 'xml'"),
    ],
)
def test_bad_values_are_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        parse(*argv)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_log_options_go_before_or_after_the_command() -> None:
    default = parse("serve", "--config", "x")
    assert (default.log_level, default.log_format) == ("info", "text")
    before = parse("--log-format", "json", "--log-level", "debug", "serve", "--config", "x")
    after = parse("serve", "--config", "x", "--log-format", "json", "--log-level", "debug")
    for args in (before, after):
        assert (args.log_level, args.log_format) == ("debug", "json")
    # Given before, not overridden by the command's absent option.
    assert parse("--log-format", "json", "demo").log_format == "json"


def test_defaults_agree_with_the_example_and_the_demo() -> None:
    assert parse("simulate").port == cli.DEMO_SIM_PORT == 8766
    assert parse("demo").port == cli.DEMO_PORT == 8765
    assert parse("demo").sim_port == cli.DEMO_SIM_PORT


# ---------------------------------------------------------------------------------------------
# Help: plain text


def _helps() -> dict[str, str]:
    parser = cli._parser()
    helps = {"relay": parser.format_help()}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                helps[name] = sub.format_help()
    return helps


def test_help_has_no_markup() -> None:
    helps = _helps()
    assert set(helps) == {"relay", "serve", "demo", "simulate", "tail", "keys"}
    for name, text in helps.items():
        assert "``" not in text, name
        assert not re.search(r":(class|func|mod):`", text), name
        assert "\x1b" not in text, name


def test_help_says_how_to_start() -> None:
    text = _helps()["relay"]
    assert "relay demo" in text
    assert "relay serve --config examples/relay.toml" in text
    assert "relay simulate" in text
    serve = _helps()["serve"]
    assert "--host HOST" in serve and "--port PORT" in serve and "--config FILE" in serve


def test_serve_without_config_explains(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["serve"]) == 2
    err = capsys.readouterr().err
    assert "relay serve --config examples/relay.toml" in err
    assert "relay demo" in err


# ---------------------------------------------------------------------------------------------
# serve: the overrides applied to the file


def test_load_applies_host_and_port_and_keeps_the_rest() -> None:
    args = parse("serve", "--config", str(EXAMPLE), "--port", "0")
    config = cli._load(args)
    assert config is not None
    original = load_config(EXAMPLE)
    assert config.server.port == 0
    assert config.server.host == original.server.host
    assert config.server.heartbeat == original.server.heartbeat
    assert config.keys == original.keys and config.sources == original.sources

    config = cli._load(parse("serve", "--config", str(EXAMPLE), "--host", "::1"))
    assert config is not None
    assert (config.server.host, config.server.port) == ("::1", original.server.port)


def test_load_without_overrides_is_the_file() -> None:
    assert cli._load(parse("serve", "--config", str(EXAMPLE))) == load_config(EXAMPLE)


def test_example_keys_beyond_loopback_are_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="relay"):
        cli._load(parse("serve", "--config", str(EXAMPLE)))
        assert not caplog.records
        cli._load(parse("serve", "--config", str(EXAMPLE), "--host", "0.0.0.0"))
    [record] = caplog.records
    assert "keys[0], keys[1]" in record.getMessage()
    assert "replace them" in record.getMessage()


def test_listen_failures_are_recognized() -> None:
    in_use = OSError(errno.EADDRINUSE, "Address already in use")
    assert cli._listen_failure(in_use) is in_use
    grouped = ExceptionGroup("x", [ExceptionGroup("y", [in_use])])
    assert cli._listen_failure(grouped) is in_use
    unresolved = socket.gaierror(-2, "Name or service not known")
    assert cli._listen_failure(unresolved) is unresolved
    assert cli._listen_failure(OSError(errno.EPIPE, "Broken pipe")) is None
    assert cli._listen_failure(ExceptionGroup("x", [in_use, ValueError()])) is None


# ---------------------------------------------------------------------------------------------
# examples/relay.toml: runs as written next to `relay simulate`


def test_example_binds_loopback_and_points_at_relay_simulate() -> None:
    config = load_config(EXAMPLE)
    assert config.server.host == "127.0.0.1"
    sim = config.sources["sim"]
    simulate = parse("simulate")
    for url in (sim.url, sim.rest_url):
        assert url is not None
        parts = urlsplit(url)
        assert (parts.hostname, parts.port) == (simulate.host, simulate.port)


def test_example_says_where_its_keys_must_be_replaced() -> None:
    text = EXAMPLE.read_text()
    raw = tomllib.loads(text)
    for entry in raw["keys"]:
        assert cli.EXAMPLE_KEY_MARK in entry["key"]
        # The line of each key says REPLACE.
        [line] = [x for x in text.splitlines() if f'"{entry["key"]}"' in x and "key =" in x]
        assert "REPLACE" in line
    assert "replace the two example API keys" in text


# ---------------------------------------------------------------------------------------------
# README


def _readme() -> str:
    return (ROOT / "README.md").read_text(encoding="utf-8")


def test_readme_quickstart_creates_the_venv_before_installing() -> None:
    quickstart = _readme().split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", quickstart, re.DOTALL)
    assert block is not None
    commands = [line.split("#")[0].strip() for line in block.group(1).splitlines()]
    assert commands[0] == "python3 -m venv .venv && . .venv/bin/activate"
    assert commands[1].startswith("python3 -m pip install -e . && python3 -m relay demo")
    assert commands[2].startswith("python3 -m pip install nox && python3 -m nox -s tests")


def test_readme_tail_example_activates_the_venv_in_the_second_terminal() -> None:
    quickstart = _readme().split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    before_tail = quickstart.split("$ relay tail", 1)[0]
    assert "another terminal" in before_tail
    assert "$ . .venv/bin/activate" in before_tail


def test_readme_names_the_example_file_by_its_path() -> None:
    for match in re.finditer(r"[\w/.-]*relay\.toml", _readme()):
        assert match.group(0).endswith("examples/relay.toml"), match.group(0)


def test_readme_documents_the_log_options() -> None:
    readme = _readme()
    for option in ("--log-level", "--log-format json", "--log-format text"):
        assert option in readme


# ---------------------------------------------------------------------------------------------
# Logs


def _record(message: str, *args: object, **extra: Any) -> logging.LogRecord:
    record = logging.LogRecord("relay.upstream", logging.WARNING, __file__, 1, message, args, None)
    record.__dict__.update(extra)
    return record


def test_text_leaves_out_fields_the_message_shows_and_rounds_the_rest() -> None:
    formatter = logs.TextFormatter()
    reason = "ConnectFailed: all attempts to connect to 127.0.0.1:8766 failed"
    record = _record(
        "upstream %s: %s; next attempt in %.2fs",
        "sim",
        reason,
        0.5312345678,
        source="sim",
        reason=reason,
        retry_in=0.5312345678,
    )
    line = formatter.format(record)
    assert line.endswith(
        "WARNING relay.upstream: upstream sim: ConnectFailed: all attempts to connect to "
        "127.0.0.1:8766 failed; next attempt in 0.53s"
    )
    record = _record("upstream sim: gap", source="sim", delay=1.23456789, why="two words")
    assert formatter.format(record).endswith('upstream sim: gap delay=1.235 why="two words"')


def test_json_has_every_field_rounded() -> None:
    record = _record("upstream %s: retry in %.2fs", "sim", 0.5312345678, retry_in=0.5312345678)
    out = orjson.loads(logs.JsonFormatter().format(record))
    assert out["message"] == "upstream sim: retry in 0.53s"
    assert out["retry_in"] == 0.531
    assert (out["level"], out["logger"]) == ("warning", "relay.upstream")
    assert isinstance(out["ts"], float)


def test_configure_installs_one_handler_and_quiets_http_libraries() -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        logs.configure("info", "json", stream=stream)
        logging.getLogger("relay.test").info("hello %s", "there", extra={"n": 1})
        logging.getLogger("httpx").info("HTTP Request: GET http://x")
        assert [orjson.loads(line)["message"] for line in stream.getvalue().splitlines()] == [
            "hello there"
        ]
        with pytest.raises(ValueError, match="log format"):
            logs.configure("info", "xml")
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
        logging.getLogger("httpx").setLevel(logging.NOTSET)
        logging.getLogger("httpcore").setLevel(logging.NOTSET)


# ---------------------------------------------------------------------------------------------
# tail's messages


def test_refusal_shows_the_servers_message_and_hints_at_key() -> None:
    body = b'{"error":"missing_credentials","message":"an API key is required"}'
    text = refusal("ws://h/ws", 401, body, None)
    assert text.startswith("ws://h/ws refused the connection: HTTP 401: an API key is required")
    assert "--key KEY" in text
    assert "check --key" in refusal("ws://h/ws", 401, b'{"message":"unknown API key"}', "k")


def test_refusal_403_and_429_and_bodies_that_are_not_json() -> None:
    text = refusal("ws://h/ws", 403, b'{"error":"forbidden","message":"not for you"}', "k")
    assert text == "ws://h/ws refused the connection: HTTP 403: not for you"
    text = refusal("ws://h/ws", 429, b'{"error":"server_full","message":"full"}', None)
    assert text.splitlines()[0] == "ws://h/ws refused the connection: HTTP 429: full"
    assert refusal("ws://h/ws", 502, b"Bad Gateway\n", None).endswith("HTTP 502: Bad Gateway")
    assert refusal("ws://h/ws", 500, None, None).endswith("HTTP 500")
    assert len(refusal("ws://h/ws", 500, b"x" * 1000, None)) < 300


def test_url_problems() -> None:
    assert url_problem("ws://127.0.0.1:8765/ws") is None
    assert url_problem("wss://relay.example/ws") is None
    problem = url_problem("127.0.0.1:8765")
    assert problem is not None and "ws://127.0.0.1:8765/ws" in problem
    assert url_problem("ws:///ws") is not None
    assert url_problem("ws://h:port/ws") is not None


def test_a_serving_process_collects_garbage_less_often_and_never_its_startup_objects() -> None:
    thresholds = gc.get_threshold()
    try:
        _tune_gc()
        assert gc.get_threshold() == GC_THRESHOLDS
        assert gc.get_freeze_count() > 0  # modules, classes: never traversed again
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)
