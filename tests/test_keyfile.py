"""The key file and ``relay keys add|list|revoke``, in temporary directories."""

from __future__ import annotations

import os
import stat
import tomllib
from datetime import UTC, datetime
from pathlib import Path

import pytest

from relay import cli
from relay.config import ConfigError, load_config
from relay.core.credentials import hash_secret
from relay.keyfile import SECRET_PREFIX, add_key, read_key_file, revoke_key, write_key_file
from relay.server.credentials import load_credentials

NOW = datetime(2026, 11, 30, 12, 0, 0, 123456, tzinfo=UTC)


def write_config(directory: Path, extra: str = "") -> Path:
    path = directory / "relay.toml"
    path.write_text(f'[auth]\nkey_file = "keys.toml"\n{extra}\n[tiers.default]\n[tiers.pro]\n')
    return path


def keys(*argv: str) -> int:
    return cli.main(["keys", *argv])


def test_add_stores_only_a_hash_with_owner_only_permissions(tmp_path: Path) -> None:
    path = str(tmp_path / "keys.toml")
    secret = add_key(path, "alice", "pro", NOW)
    assert secret.startswith(SECRET_PREFIX) and len(secret) == len(SECRET_PREFIX) + 43
    text = Path(path).read_text()
    assert secret not in text and secret[len(SECRET_PREFIX) :] not in text
    assert hash_secret(secret) in text
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    (entry,) = read_key_file(path)
    assert (entry.name, entry.tier, entry.hash) == ("alice", "pro", hash_secret(secret))
    assert entry.created == NOW.replace(microsecond=0)
    assert secret not in repr(entry) and entry.hash not in repr(entry)


def test_each_secret_is_new(tmp_path: Path) -> None:
    path = str(tmp_path / "keys.toml")
    secrets = {add_key(path, f"k{i}", "default", NOW) for i in range(20)}
    assert len(secrets) == 20
    assert len(read_key_file(path)) == 20


def test_writes_are_atomic_and_leave_no_temporary_file(tmp_path: Path) -> None:
    path = str(tmp_path / "keys.toml")
    add_key(path, "alice", "pro", NOW)
    inode = os.stat(path).st_ino
    add_key(path, "bob", "pro", NOW)
    assert os.stat(path).st_ino != inode  # replaced by a rename, not rewritten in place
    assert sorted(os.listdir(tmp_path)) == ["keys.toml"]


def test_a_failed_write_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = str(tmp_path / "keys.toml")
    add_key(path, "alice", "pro", NOW)
    before = Path(path).read_bytes()

    def broken(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError, match="No space"):
        add_key(path, "bob", "pro", NOW)
    assert Path(path).read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["keys.toml"]


def test_names_are_unique_and_well_formed(tmp_path: Path) -> None:
    path = str(tmp_path / "keys.toml")
    add_key(path, "alice", "pro", NOW)
    with pytest.raises(ValueError, match="exists already"):
        add_key(path, "alice", "default", NOW)
    for bad in ("", "has space", "a:b", "-dash", "x" * 65):
        with pytest.raises(ValueError, match="key name"):
            add_key(path, bad, "pro", NOW)
    assert [e.name for e in read_key_file(path)] == ["alice"]


def test_revoke_removes_one_key_and_an_unknown_name_is_a_key_error(tmp_path: Path) -> None:
    path = str(tmp_path / "keys.toml")
    add_key(path, "alice", "pro", NOW)
    add_key(path, "bob", "pro", NOW)
    assert revoke_key(path, "alice").name == "alice"
    assert [e.name for e in read_key_file(path)] == ["bob"]
    with pytest.raises(KeyError):
        revoke_key(path, "alice")


def test_a_bad_key_file_lists_every_problem_with_the_file_name(tmp_path: Path) -> None:
    path = tmp_path / "keys.toml"
    path.write_text(
        "extra = 1\n"
        '[[keys]]\nname = "a b"\ntier = ""\nhash = "md5:x"\ncreated = "yesterday"\n'
        '[[keys]]\nname = "ok"\ntier = "pro"\n'
        f'[[keys]]\nname = "ok"\ntier = "pro"\nhash = "{hash_secret("s")}"\n'
        "created = 2026-01-01T00:00:00Z\ncolour = 1\n"
    )
    with pytest.raises(ConfigError) as caught:
        read_key_file(str(path))
    lines = str(caught.value).splitlines()
    p = str(path)
    assert lines == [
        f"unknown key '{p}: extra'",
        f"{p}: keys[0].name: a key name is 1 to 64 letters, digits and _ . @ -, "
        "starting with a letter or digit",
        f"{p}: keys[0].tier: must be a non-empty string",
        f"{p}: keys[0].hash: must be sha256: and 64 lower-case hex digits",
        f"{p}: keys[0].created: must be a TOML date-time",
        f"{p}: keys[1].hash: required key missing",
        f"{p}: keys[1].created: required key missing",
        f"unknown key '{p}: keys[2].colour'",
    ]


def test_duplicates_in_a_hand_edited_file_are_refused(tmp_path: Path) -> None:
    path = str(tmp_path / "keys.toml")
    add_key(path, "alice", "pro", NOW)
    (entry,) = read_key_file(path)
    write_key_file(path, [entry, entry])
    with pytest.raises(ConfigError, match=r"keys\[1\].name: duplicate name 'alice'"):
        read_key_file(path)
    with pytest.raises(ConfigError, match=r"keys\[1\].hash: the same secret as another key"):
        read_key_file(path)


def test_invalid_toml_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "keys.toml"
    path.write_text("[[keys]\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        read_key_file(str(path))


# The relay's view: tiers checked, inline keys beside the file's ------------------------------


def test_the_key_file_is_relative_to_the_configuration_and_its_keys_resolve(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config_path = write_config(tmp_path, '[[keys]]\nkey = "inline-key"\ntier = "default"\n')
    secret = add_key(str(tmp_path / "keys.toml"), "alice", "pro", NOW)
    monkeypatch.chdir("/")
    config = load_config(config_path)
    assert config.auth.key_file == str(tmp_path / "keys.toml")
    creds = load_credentials(config)
    assert creds.resolve(secret, 0.0).tier == "pro"
    assert creds.resolve("inline-key", 0.0).tier == "default"


def test_a_key_file_naming_an_unknown_tier_or_an_inline_secret_is_a_config_error(
    tmp_path: Path,
) -> None:
    config_path = write_config(tmp_path)
    add_key(str(tmp_path / "keys.toml"), "alice", "gold", NOW)
    with pytest.raises(ConfigError, match=r"keys\[0\].tier: unknown tier 'gold'"):
        load_credentials(load_config(config_path))


def test_a_missing_key_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"auth.key_file: cannot read .*keys.toml"):
        load_credentials(load_config(write_config(tmp_path)))


# The command --------------------------------------------------------------------------------


def test_cli_add_prints_the_secret_once_and_it_works(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(write_config(tmp_path))
    assert keys("add", "alice", "--tier", "pro", "--config", config) == 0
    out, err = capsys.readouterr()
    secret = out.strip()
    assert secret.startswith(SECRET_PREFIX) and "\n" not in secret
    assert "will not be shown again" in err and secret not in err
    assert load_credentials(load_config(config)).resolve(secret, 0.0).name == "alice"

    assert keys("list", "--config", config) == 0
    out, _ = capsys.readouterr()
    assert secret not in out
    digest = hash_secret(secret)
    assert digest not in out and digest[:15] + "..." in out
    header, row = out.splitlines()
    assert header.split() == ["NAME", "TIER", "CREATED", "HASH"]
    assert row.split()[:2] == ["alice", "pro"]


def test_cli_add_checks_the_tier_against_the_configuration(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(write_config(tmp_path))
    assert keys("add", "alice", "--tier", "gold", "--config", config) == 2
    _, err = capsys.readouterr()
    assert "unknown tier 'gold' (defined: default, pro)" in err
    assert not (tmp_path / "keys.toml").exists()


def test_cli_revoke_and_its_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = str(tmp_path / "keys.toml")
    assert keys("add", "alice", "--tier", "pro", "--file", path) == 0
    assert keys("revoke", "carol", "--file", path) == 2
    assert "no key named 'carol'" in capsys.readouterr().err
    assert keys("revoke", "alice", "--file", path) == 0
    assert read_key_file(path) == []
    assert keys("list", "--file", str(tmp_path / "none.toml")) == 2
    assert "relay keys add` creates it" in capsys.readouterr().err


def test_cli_needs_a_key_file_in_the_configuration(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "relay.toml"
    config.write_text("[tiers.default]\n")
    assert keys("list", "--config", str(config)) == 2
    assert "has no [auth] key_file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        keys("list")  # --config or --file is required


def test_the_file_written_is_plain_toml_with_a_comment(tmp_path: Path) -> None:
    path = tmp_path / "keys.toml"
    add_key(str(path), "alice", "pro", NOW)
    text = path.read_text()
    assert text.startswith("# API keys of the relay")
    data = tomllib.loads(text)
    assert set(data["keys"][0]) == {"name", "tier", "hash", "created"}


def test_serve_with_a_missing_key_file_says_so_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path)
    assert cli.main(["serve", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "bad configuration" in err and "auth.key_file: cannot read" in err


def test_sighup_with_a_broken_configuration_logs_it_and_changes_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from relay.server.relay import Relay

    config_path = write_config(tmp_path)
    add_key(str(tmp_path / "keys.toml"), "alice", "pro", NOW)
    args = cli._parser().parse_args(["serve", "--config", str(config_path), "--port", "0"])
    config = cli._load(args)
    assert config is not None
    relay = Relay(config)
    before = relay.config
    config_path.write_text("[auth\n")
    cli._reload(args, relay)
    assert relay.config is before
    assert "refused, nothing changed" in caplog.text and "invalid TOML" in caplog.text
    # Fixed again, with a new tier: applied, and the command line's --port still wins.
    config_path.write_text(
        '[auth]\nkey_file = "keys.toml"\n[tiers.default]\n[tiers.pro]\n[tiers.x]\n'
    )
    cli._reload(args, relay)
    assert set(relay.config.tiers) == {"default", "pro", "x"}
    assert relay.config.server.port == 0
    assert "need a restart" not in caplog.text
