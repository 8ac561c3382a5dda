"""The config file: a person who mistypes a key is told which key, in which file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent import config
from agent.config import ConfigError

GOOD = """
[ami]
host = "127.0.0.1"
port = 15038
username = "textback"
secret = "s3cret-from-manager-conf"
[pbx]
trunk_endpoints = ["trunk", "trunk2"]
default_region = "gb"
[database]
url = "sqlite:////tmp/x.db"
[sms]
transports = ["sip"]
[sms.sip]
endpoint = "trunk"
from_number = "+15550009999"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "textback.toml"
    path.write_text(text)
    return path


def test_good_file_loads_with_defaults_filled(tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path, GOOD))
    assert cfg.ami.port == 15038
    assert cfg.pbx.trunk_endpoints == ("trunk", "trunk2")
    assert cfg.pbx.default_region == "GB"
    assert cfg.pbx.inbound_contexts == ()
    assert cfg.sms.sip.from_number == "+15550009999"
    assert (cfg.pbx.cdr_csv, cfg.pbx.cdr_csv_utc) == (None, True)  # not read unless asked


def test_the_cdr_file_and_its_time_zone(tmp_path: Path) -> None:
    text = GOOD.replace('default_region = "gb"', 'default_region = "gb"\n'
                        'cdr_csv = "/var/log/asterisk/cdr-csv/Master.csv"\ncdr_csv_utc = false')
    cfg = config.load(write(tmp_path, text))
    assert cfg.pbx.cdr_csv == Path("/var/log/asterisk/cdr-csv/Master.csv")
    assert cfg.pbx.cdr_csv_utc is False


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('secret = "s3cret-from-manager-conf"', 'secert = "x"', "ami.secert is not a known key"),
        ('secret = "s3cret-from-manager-conf"', "", "ami.secret is required"),
        ("port = 15038", 'port = "5038"', "ami.port must be a TCP port"),
        ('default_region = "gb"', 'default_region = "XX"', "pbx.default_region"),
        ('transports = ["sip"]', 'transports = ["pigeon"]', "unknown transport 'pigeon'"),
        ('endpoint = "trunk"', 'endpoint = ""', "sms.sip.endpoint must not be empty"),
        ("[database]", "[databse]", "databse is not a known key"),
        ('url = "sqlite:////tmp/x.db"', 'url = "/tmp/x.db"', "database.url must be"),
        ('default_region = "gb"', 'default_region = "gb"\ncdr_csv = "cdr-csv/Master.csv"',
         "pbx.cdr_csv must be an absolute path"),
        ('default_region = "gb"', 'default_region = "gb"\ncdr_csv_utc = "yes"',
         "pbx.cdr_csv_utc must be true"),
        ('default_region = "gb"', 'default_region = "gb"\ncdr_cvs = "/x.csv"',
         "pbx.cdr_cvs is not a known key"),
    ],
)
def test_mistakes_name_key_and_file(tmp_path: Path, old: str, new: str, message: str) -> None:
    path = write(tmp_path, GOOD.replace(old, new))
    with pytest.raises(ConfigError) as err:
        config.load(path)
    assert str(path) in str(err.value)
    assert message in str(err.value)


def test_not_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        config.load(write(tmp_path, "[ami\n"))
    with pytest.raises(ConfigError, match="textback init"):
        config.load(tmp_path / "nope.toml")


def test_secret_file_must_be_private(tmp_path: Path) -> None:
    secret = tmp_path / "ami.secret"
    secret.write_text("from-a-file\n")
    os.chmod(secret, 0o644)
    text = GOOD.replace('secret = "s3cret-from-manager-conf"', f'secret_file = "{secret}"')
    with pytest.raises(ConfigError, match="chmod 600"):
        config.load(write(tmp_path, text))
    os.chmod(secret, 0o600)
    assert config.load(write(tmp_path, text)).ami.secret == "from-a-file"


def test_path_resolution_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TEXTBACK_CONFIG", raising=False)
    assert config.resolve_path(None) == Path("/etc/textback/textback.toml")
    monkeypatch.setenv("TEXTBACK_CONFIG", str(tmp_path / "env.toml"))
    assert config.resolve_path(None) == tmp_path / "env.toml"
    assert config.resolve_path(str(tmp_path / "cli.toml")) == tmp_path / "cli.toml"


def test_default_rendering_round_trips(tmp_path: Path) -> None:
    secret = tmp_path / "ami.secret"
    secret.write_text("x")
    os.chmod(secret, 0o600)
    text = config.render_default(ami_secret_file=str(secret), database_url="sqlite:///x.db")
    cfg = config.load(write(tmp_path, text))
    assert cfg.sms.transports == ("sip",)
    assert cfg.ami.secret == "x"
    assert cfg.pbx.cdr_csv is None and cfg.pbx.cdr_csv_utc is True
