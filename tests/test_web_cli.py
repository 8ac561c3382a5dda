"""`textback init --admin-user`, `textback users …` and the [web] config, as IT staff use them."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from agent import config as configuration
from agent.cli import main


def _init(tmp_path: Path, *extra: str) -> tuple[Path, object]:
    path = tmp_path / "etc" / "textback.toml"
    result = CliRunner().invoke(main, ["init", "--config", str(path), "--database-url",
                                       f"sqlite:///{tmp_path / 'textback.db'}", *extra])
    return path, result


def _password_file(tmp_path: Path, password: str, name: str = "pw") -> str:
    path = tmp_path / name
    path.write_text(password + "\n")
    return str(path)


def test_init_creates_the_web_key_and_the_first_admin(tmp_path: Path) -> None:
    path, result = _init(tmp_path, "--admin-user", "owner", "--admin-password-file",
                         _password_file(tmp_path, "a good long password"))
    assert result.exit_code == 0, result.output
    assert "web UI admin owner created" in result.output
    key = path.with_name("web.secret")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and len(key.read_text().strip()) >= 48
    cfg = configuration.load(path)
    assert configuration.read_web_secret_key(cfg) == key.read_text().strip()
    listing = CliRunner().invoke(main, ["users", "list", "--config", str(path)]).output
    assert "owner" in listing and "admin" in listing and "active" in listing


def test_init_without_a_terminal_never_invents_an_admin(tmp_path: Path) -> None:
    path, result = _init(tmp_path)
    assert result.exit_code == 0, result.output
    assert "no web UI admin yet" in result.output
    assert "no users yet" in CliRunner().invoke(
        main, ["users", "list", "--config", str(path)]).output


def test_init_refuses_a_short_admin_password(tmp_path: Path) -> None:
    _path, result = _init(tmp_path, "--admin-user", "owner", "--admin-password-file",
                          _password_file(tmp_path, "short"))
    assert result.exit_code != 0
    assert "at least 10" in result.output


def test_users_add_passwd_disable(tmp_path: Path) -> None:
    path, _ = _init(tmp_path, "--admin-user", "owner", "--admin-password-file",
                    _password_file(tmp_path, "a good long password"))
    run = CliRunner().invoke
    added = run(main, ["users", "add", "desk", "--config", str(path), "--role", "staff",
                       "--password-file", _password_file(tmp_path, "front desk pass"),
                       "--phone", "(415) 867-5309", "--extension", "101"])
    assert added.exit_code == 0, added.output
    listing = run(main, ["users", "list", "--config", str(path)]).output
    assert "desk" in listing and "+14158675309" in listing and "ext=101" in listing
    short = run(main, ["users", "passwd", "desk", "--config", str(path), "--password-file",
                       _password_file(tmp_path, "123456789")])
    assert short.exit_code != 0 and "has 9 characters; it needs at least 10" in short.output
    ok = run(main, ["users", "passwd", "desk", "--config", str(path), "--password-file", "-"],
             input="another long one\n")
    assert ok.exit_code == 0, ok.output
    assert run(main, ["users", "disable", "desk", "--config", str(path)]).exit_code == 0
    assert "disabled" in run(main, ["users", "list", "--config", str(path)]).output
    last = run(main, ["users", "disable", "owner", "--config", str(path)])
    assert last.exit_code != 0 and "last active admin" in last.output
    again = run(main, ["users", "add", "desk", "--config", str(path), "--role", "staff",
                       "--password-file", _password_file(tmp_path, "front desk pass")])
    assert again.exit_code != 0 and "exists already" in again.output


def test_users_set_and_enable(tmp_path: Path) -> None:
    path, _ = _init(tmp_path, "--admin-user", "owner", "--admin-password-file",
                    _password_file(tmp_path, "a good long password"))
    run = CliRunner().invoke
    config = ["--config", str(path)]
    run(main, ["users", "add", "desk", *config, "--role", "staff", "--password-file",
               _password_file(tmp_path, "front desk pass"), "--extension", "101"])
    moved = run(main, ["users", "set", "desk", *config, "--extension", "102", "--phone",
                       "(415) 867-5309"])
    assert moved.exit_code == 0 and "phone, extension changed" in moved.output, moved.output
    listing = run(main, ["users", "list", *config]).output
    assert "ext=102" in listing and "+14158675309" in listing
    bad = run(main, ["users", "set", "desk", *config, "--phone", "12"])
    assert bad.exit_code != 0 and "phone" in bad.output
    cleared = run(main, ["users", "set", "desk", *config, "--phone", ""])
    assert cleared.exit_code == 0 and "+14158675309" not in run(
        main, ["users", "list", *config]).output
    demote = run(main, ["users", "set", "owner", *config, "--role", "staff"])
    assert demote.exit_code != 0 and "last active admin" in demote.output
    assert run(main, ["users", "set", "desk", *config]).exit_code == 2  # nothing to change
    run(main, ["users", "disable", "desk", *config])
    enabled = run(main, ["users", "enable", "desk", *config])
    assert enabled.exit_code == 0 and "desk enabled" in enabled.output
    assert "disabled" not in run(main, ["users", "list", *config]).output


def test_passwords_never_come_from_the_command_line(tmp_path: Path) -> None:
    path, _ = _init(tmp_path)
    run = CliRunner().invoke
    argv = run(main, ["users", "add", "x", "--config", str(path), "--role", "staff",
                      "--password", "a long password"])
    assert argv.exit_code == 2 and "No such option" in argv.output
    no_tty = run(main, ["users", "add", "x", "--config", str(path), "--role", "staff"])
    assert no_tty.exit_code == 2 and "--password-file" in no_tty.output


def test_a_terminal_is_asked_for_the_password(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    path, _ = _init(tmp_path)
    monkeypatch.setattr("agent.cli._interactive", lambda: True)
    result = CliRunner().invoke(main, ["users", "add", "x", "--config", str(path), "--role",
                                       "admin"], input="typed password\ntyped password\n")
    assert result.exit_code == 0, result.output
    assert "typed password" not in result.output  # hidden while typed


BASE = '[ami]\nsecret = "s"\n'


@pytest.mark.parametrize(("toml", "message"), [
    ('[web]\nport = 0\n', "web.port must be a TCP port number"),
    ('[web]\nhost = ""\n', "web.host must not be empty"),
    ('[web]\nsecure_cookies = "yes"\n', "web.secure_cookies must be true or false"),
    ('[web]\nsecret = "x"\n', "web.secret is not a known key"),
    ('[web]\nsecret_key_file = ""\n', "web.secret_key_file must not be empty"),
])
def test_web_config_errors_name_the_key_and_the_file(tmp_path: Path, toml: str,
                                                     message: str) -> None:
    path = tmp_path / "textback.toml"
    path.write_text(BASE + toml)
    with pytest.raises(configuration.ConfigError) as error:
        configuration.load(path)
    assert str(error.value).startswith(f"{path}: {message}")


def test_web_config_defaults_and_key_checks(tmp_path: Path) -> None:
    path = tmp_path / "textback.toml"
    path.write_text(BASE)
    cfg = configuration.load(path)
    assert (cfg.web.host, cfg.web.port, cfg.web.secure_cookies) == ("127.0.0.1", 8080, False)
    assert cfg.web_secret_key_file == tmp_path / "web.secret"
    with pytest.raises(configuration.ConfigError, match="does not exist; create it with"):
        configuration.read_web_secret_key(cfg)
    key = tmp_path / "web.secret"
    key.write_text("k" * 40)
    key.chmod(0o644)
    with pytest.raises(configuration.ConfigError, match="readable by others; run: chmod 600"):
        configuration.read_web_secret_key(cfg)
    key.chmod(0o600)
    key.write_text("short")
    with pytest.raises(configuration.ConfigError, match="at least 32"):
        configuration.read_web_secret_key(cfg)
    path.write_text(BASE + '[web]\nport = 8443\nsecret_key_file = "keys/ui.key"\n'
                    "secure_cookies = true\n")
    cfg = configuration.load(path)
    assert cfg.web_secret_key_file == tmp_path / "keys" / "ui.key" and cfg.web.secure_cookies


def test_create_app_from_the_config(tmp_path: Path) -> None:
    from web import create_app

    path, _ = _init(tmp_path)
    app = create_app(configuration.load(path))
    assert app.config["SECRET_KEY"] == path.with_name("web.secret").read_text().strip()
    assert app.test_client().get("/healthz").get_json() == {"status": "ok"}
