"""The infrastructure configuration: one TOML file (AMI, PBX, database, transports).

Business rules (hours, templates, cooldown…) are not here: they live in the
database (agent.rules.settings) so the web UI can edit them. Every key is validated;
an unknown or mistyped key is an error that names the key and the file, because a
silently ignored `[ami] secert = …` costs an IT person an afternoon.
"""

from __future__ import annotations

import base64
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_PATH = Path("/etc/textback/textback.toml")
KNOWN_TRANSPORTS = ("sip", "gsm", "twilio", "telnyx")
PROVIDERS = ("twilio", "telnyx")  # messaging APIs: they call the web app back


class ConfigError(Exception):
    """A configuration problem, worded for the person who has to fix the file."""


@dataclass(frozen=True)
class AmiConfig:
    host: str = "127.0.0.1"
    port: int = 5038
    username: str = "textback"
    secret: str = ""
    # where the secret was read from ([ami] secret_file); None: given inline as secret
    secret_file: Path | None = None
    # how often the link is pinged, and how long a reply may take before the link
    # is declared dead and reconnected (the issue asks for detection within 30 s)
    ping_interval: float = 10.0
    ping_timeout: float = 5.0


@dataclass(frozen=True)
class PbxConfig:
    trunk_endpoints: tuple[str, ...] = ("trunk",)
    inbound_contexts: tuple[str, ...] = ()
    default_region: str = "US"
    # Asterisk's CDR file (cdr_csv's Master.csv), read after an AMI outage and at
    # start-up to text calls that ended unseen; None: not read
    cdr_csv: Path | None = None
    # how the file writes times: UTC (cdr.conf [csv] usegmtime = yes) or, when false,
    # the local time zone of the host the agent runs on
    cdr_csv_utc: bool = True


@dataclass(frozen=True)
class DatabaseConfig:
    url: str = "sqlite:////var/lib/textback/textback.db"


@dataclass(frozen=True)
class SipTransportConfig:
    endpoint: str = "trunk"
    from_number: str = ""  # empty: reply from the DID that was called
    max_per_minute: int = 60
    max_per_day: int = 0  # a registered trunk route has its own limits; 0: none here


@dataclass(frozen=True)
class GsmTransportConfig:
    """[sms.gsm]: a USB/serial modem with a SIM. Timings below the line are not in the
    TOML; they are fields so tests and the benchmark can shorten them."""

    port: str = "/dev/serial/by-id/usb-*-if00-port0"  # a path or a glob
    baudrate: int = 115200
    pin: str = ""
    smsc: str = ""  # empty: the SMSC stored on the SIM
    max_per_minute: int = 6  # carriers flag SIMs that send faster
    max_per_day: int = 200  # SMS parts in any 24 h; 0: no limit (see README)
    delivery_reports: bool = True
    # ---
    command_timeout: float = 5.0
    send_timeout: float = 60.0  # the network's answer to AT+CMGS takes 1-10 s
    heartbeat: float = 30.0  # an idle modem is asked AT+CSQ this often
    sweep_interval: float = 600.0  # AT+CMGL=4: SMS whose notification was lost
    reconnect_delay: float = 2.0
    failures_before_failover: int = 3  # temporary send failures in a row


@dataclass(frozen=True)
class TwilioConfig:
    """[sms.twilio]: Twilio's Messages API, or SignalWire's compatible (LaML) one."""

    account_sid: str = ""  # "AC…"; SignalWire: the project id
    auth_token: str = ""  # read from auth_token_file; also signs the webhooks
    auth_token_file: Path | None = None
    # SignalWire signs its webhooks with the project's signing key, not the API token
    signing_key: str = ""
    signing_key_file: Path | None = None
    from_number: str = ""  # E.164, or…
    messaging_service_sid: str = ""  # "MG…": the service picks the number
    api_base: str = "https://api.twilio.com"  # SignalWire: https://<space>.signalwire.com/api/laml
    max_per_minute: int = 60
    max_per_day: int = 0
    timeout: float = 10.0  # seconds an API request may take (not in the TOML)


@dataclass(frozen=True)
class TelnyxConfig:
    """[sms.telnyx]: Telnyx's Messaging API v2."""

    api_key: str = ""  # read from api_key_file
    api_key_file: Path | None = None
    public_key: str = ""  # the account's Ed25519 key (base64) that signs webhooks
    from_number: str = ""
    messaging_profile_id: str = ""
    api_base: str = "https://api.telnyx.com"
    max_per_minute: int = 60
    max_per_day: int = 0
    timeout: float = 10.0  # seconds an API request may take (not in the TOML)


@dataclass(frozen=True)
class SmsConfig:
    transports: tuple[str, ...] = ("sip",)
    sip: SipTransportConfig = field(default_factory=SipTransportConfig)
    gsm: GsmTransportConfig = field(default_factory=GsmTransportConfig)
    twilio: TwilioConfig | None = None  # None: no [sms.twilio] table
    telnyx: TelnyxConfig | None = None
    max_attempts: int = 5


@dataclass(frozen=True)
class AgiConfig:
    """The FastAGI routing server inside the agent (off: the `textback-route` command
    serves the dialplan instead, one process per call)."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 4573


@dataclass(frozen=True)
class WebConfig:
    """[web]: the admin and front-desk UI (`textback web`).

    Loopback by default: put it behind a TLS reverse proxy (and set secure_cookies)
    before anyone reaches it from another machine.
    """

    host: str = "127.0.0.1"
    port: int = 8080
    # None: web.secret beside the config file, written by `textback init`
    secret_key_file: Path | None = None
    # true when served over https (behind a proxy): cookies only travel encrypted
    secure_cookies: bool = False
    # where a messaging provider reaches this web app (its TLS proxy), no trailing
    # slash: its webhooks are public_url + /hooks/...; "" when no provider is used
    public_url: str = ""


@dataclass(frozen=True)
class SmtpConfig:
    """[digest.smtp]: the mail server the weekly digest is sent through (none: no e-mail)."""

    host: str = ""
    port: int = 587
    # "starttls" (port 587), "ssl" (port 465) or "none" (a relay on this host)
    security: str = "starttls"
    username: str = ""
    password: str = field(default="", repr=False)  # read from password_file
    sender: str = ""  # the From address

    @property
    def configured(self) -> bool:
        return bool(self.host)


@dataclass(frozen=True)
class DigestConfig:
    smtp: SmtpConfig = field(default_factory=SmtpConfig)


@dataclass(frozen=True)
class Config:
    path: Path
    ami: AmiConfig = field(default_factory=AmiConfig)
    pbx: PbxConfig = field(default_factory=PbxConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    sms: SmsConfig = field(default_factory=SmsConfig)
    agi: AgiConfig = field(default_factory=AgiConfig)
    web: WebConfig = field(default_factory=WebConfig)
    digest: DigestConfig = field(default_factory=DigestConfig)

    @property
    def dial_trunk(self) -> str:
        """The PJSIP endpoint that calls out to customers (the on-call ring, an inbox
        "Call back"): the first trunk calls come in on, else the SMS trunk."""
        return self.pbx.trunk_endpoints[0] if self.pbx.trunk_endpoints else self.sms.sip.endpoint

    @property
    def web_secret_key_file(self) -> Path:
        return self.web.secret_key_file or self.path.with_name("web.secret")


def resolve_path(explicit: str | os.PathLike[str] | None) -> Path:
    """--config FILE, else $TEXTBACK_CONFIG, else /etc/textback/textback.toml."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("TEXTBACK_CONFIG")
    return Path(env) if env else DEFAULT_PATH


def load(explicit: str | os.PathLike[str] | None = None) -> Config:
    path = resolve_path(explicit)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no such file (create one with `textback init --config {path}`, "
            "or point --config / $TEXTBACK_CONFIG at yours)"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse(data, path)


def parse(data: dict[str, Any], path: Path) -> Config:
    reader = _Reader(path)
    reader.only(data, "", {"ami", "pbx", "database", "sms", "agi", "web", "digest"})

    ami_t = reader.table(data, "ami")
    reader.only(ami_t, "ami", {"host", "port", "username", "secret", "secret_file",
                               "ping_interval", "ping_timeout"})
    secret = reader.string(ami_t, "ami.secret", "")
    secret_file = reader.string(ami_t, "ami.secret_file", "")
    if secret and secret_file:
        raise reader.error("ami.secret", "give either secret or secret_file, not both")
    if secret_file:
        secret = _read_secret_file(reader, "ami.secret_file", Path(secret_file))
    if not secret:
        raise reader.error("ami.secret", "is required (the password of the AMI user in "
                           "Asterisk's manager.conf); there is no default")
    ami = AmiConfig(
        host=reader.string(ami_t, "ami.host", AmiConfig.host),
        port=reader.port(ami_t, "ami.port", AmiConfig.port),
        username=reader.string(ami_t, "ami.username", AmiConfig.username, required=True),
        secret=secret,
        secret_file=Path(secret_file) if secret_file else None,
        ping_interval=reader.number(ami_t, "ami.ping_interval", AmiConfig.ping_interval, 1, 30),
        ping_timeout=reader.number(ami_t, "ami.ping_timeout", AmiConfig.ping_timeout, 0.5, 20),
    )

    pbx_t = reader.table(data, "pbx")
    reader.only(pbx_t, "pbx", {"trunk_endpoints", "inbound_contexts", "default_region",
                               "cdr_csv", "cdr_csv_utc"})
    region = reader.string(pbx_t, "pbx.default_region", PbxConfig.default_region).upper()
    _check_region(reader, region)
    cdr_csv, cdr_csv_utc = _cdr_csv(reader, pbx_t)
    pbx = PbxConfig(
        trunk_endpoints=reader.strings(pbx_t, "pbx.trunk_endpoints", PbxConfig.trunk_endpoints),
        inbound_contexts=reader.strings(pbx_t, "pbx.inbound_contexts", ()),
        default_region=region,
        cdr_csv=cdr_csv,
        cdr_csv_utc=cdr_csv_utc,
    )
    if not pbx.trunk_endpoints and not pbx.inbound_contexts:
        raise reader.error("pbx.trunk_endpoints", "name at least one trunk endpoint or "
                           "inbound context, or no call can ever count as inbound")

    db_t = reader.table(data, "database")
    reader.only(db_t, "database", {"url"})
    database = DatabaseConfig(url=reader.string(db_t, "database.url", DatabaseConfig.url))
    if "://" not in database.url:
        raise reader.error("database.url", "must be a SQLAlchemy URL such as "
                           "sqlite:////var/lib/textback/textback.db")

    sms_t = reader.table(data, "sms")
    reader.only(sms_t, "sms", {"transports", "sip", "gsm", "twilio", "telnyx", "max_attempts"})
    transports = reader.strings(sms_t, "sms.transports", SmsConfig.transports)
    for name in transports:
        if name not in KNOWN_TRANSPORTS:
            raise reader.error("sms.transports", f"unknown transport {name!r} "
                               f"(known: {', '.join(KNOWN_TRANSPORTS)})")
    sip_t = reader.table(sms_t, "sip", "sms.sip")
    reader.only(sip_t, "sms.sip", {"endpoint", "from_number", "max_per_minute",
                                   "max_per_day"})
    sip = SipTransportConfig(
        endpoint=reader.string(sip_t, "sms.sip.endpoint", SipTransportConfig.endpoint,
                               required=True),
        from_number=reader.string(sip_t, "sms.sip.from_number", ""),
        max_per_minute=int(reader.number(sip_t, "sms.sip.max_per_minute",
                                         SipTransportConfig.max_per_minute, 1, 6000)),
        max_per_day=int(reader.number(sip_t, "sms.sip.max_per_day",
                                      SipTransportConfig.max_per_day, 0, 10_000_000)),
    )
    sms = SmsConfig(
        transports=transports,
        sip=sip,
        gsm=_gsm(reader, reader.table(sms_t, "gsm", "sms.gsm")),
        twilio=_twilio(reader, sms_t, "twilio" in transports),
        telnyx=_telnyx(reader, sms_t, "telnyx" in transports),
        max_attempts=int(reader.number(sms_t, "sms.max_attempts", SmsConfig.max_attempts, 1, 50)),
    )
    agi_t = reader.table(data, "agi")
    reader.only(agi_t, "agi", {"enabled", "host", "port"})
    enabled = agi_t.get("enabled", AgiConfig.enabled)
    if not isinstance(enabled, bool):
        raise reader.error("agi.enabled", f"must be true or false, not {enabled!r}")
    agi = AgiConfig(enabled=enabled, host=reader.string(agi_t, "agi.host", AgiConfig.host),
                    port=reader.port(agi_t, "agi.port", AgiConfig.port))
    web = _web(reader, reader.table(data, "web"))
    for name in PROVIDERS:
        if name in transports and not web.public_url:
            raise reader.error("web.public_url", f'is required with the {name} transport: the '
                               "https address where the provider reaches this web app, like "
                               '"https://textback.example.com" (its delivery reports and '
                               "customers' texts come there)")
    return Config(path=path, ami=ami, pbx=pbx, database=database, sms=sms, agi=agi, web=web,
                  digest=_digest(reader, reader.table(data, "digest")))


def _cdr_csv(reader: _Reader, pbx_t: dict[str, Any]) -> tuple[Path | None, bool]:
    """[pbx] cdr_csv and cdr_csv_utc; whether the file is readable is doctor's check."""
    raw = reader.string(pbx_t, "pbx.cdr_csv", "").strip()
    if raw and not Path(raw).is_absolute():
        raise reader.error("pbx.cdr_csv", "must be an absolute path like "
                           f'"/var/log/asterisk/cdr-csv/Master.csv", not {raw!r}')
    utc = pbx_t.get("cdr_csv_utc", PbxConfig.cdr_csv_utc)
    if not isinstance(utc, bool):
        raise reader.error("pbx.cdr_csv_utc", "must be true (cdr.conf [csv] usegmtime = yes) "
                           f"or false (times in this host's local time zone), not {utc!r}")
    return (Path(raw) if raw else None), utc


def _web(reader: _Reader, web_t: dict[str, Any]) -> WebConfig:
    reader.only(web_t, "web", {"host", "port", "secret_key_file", "secure_cookies",
                               "public_url"})
    public_url = reader.string(web_t, "web.public_url", "").strip().rstrip("/")
    if public_url and not _is_http_url(public_url):
        raise reader.error("web.public_url", "must be an address like "
                           f'"https://textback.example.com", not {public_url!r}')
    secure = web_t.get("secure_cookies", WebConfig.secure_cookies)
    if not isinstance(secure, bool):
        raise reader.error("web.secure_cookies", f"must be true or false, not {secure!r}")
    key_file = reader.string(web_t, "web.secret_key_file", "")
    if "secret_key_file" in web_t and not key_file.strip():
        raise reader.error("web.secret_key_file", "must not be empty (leave it out for "
                           "web.secret beside this file)")
    return WebConfig(
        host=reader.string(web_t, "web.host", WebConfig.host, required=True),
        port=reader.port(web_t, "web.port", WebConfig.port),
        # a relative path is read from the config's own directory, not the cwd
        secret_key_file=reader.path.parent / key_file if key_file else None,
        secure_cookies=secure,
        public_url=public_url,
    )


def _is_http_url(url: str) -> bool:
    scheme, _, rest = url.partition("://")
    return scheme in ("http", "https") and bool(rest) and " " not in url


def _twilio(reader: _Reader, sms_t: dict[str, Any], used: bool) -> TwilioConfig | None:
    if "twilio" not in sms_t and not used:
        return None
    t = reader.table(sms_t, "twilio", "sms.twilio")
    reader.only(t, "sms.twilio", {"account_sid", "auth_token_file", "signing_key_file",
                                  "from_number", "messaging_service_sid", "api_base",
                                  "max_per_minute", "max_per_day"})
    sid = reader.string(t, "sms.twilio.account_sid", "", required=True).strip()
    token_file, token = _api_secret(reader, t, "sms.twilio.auth_token_file",
                                    "put the account's auth token in it (Console → Account "
                                    "→ API keys)")
    key_file = reader.string(t, "sms.twilio.signing_key_file", "").strip()
    signing_key = ""
    if key_file:
        signing_key = _read_secret_file(reader, "sms.twilio.signing_key_file", Path(key_file))
        if not signing_key:
            raise reader.error("sms.twilio.signing_key_file", f"{key_file} is empty; put the "
                               "project's signing key in it (SignalWire: API → Signing Key)")
    sender = reader.string(t, "sms.twilio.from_number", "").strip()
    service = reader.string(t, "sms.twilio.messaging_service_sid", "").strip()
    if bool(sender) == bool(service):
        raise reader.error("sms.twilio.from_number", "give either from_number (E.164, like "
                           '"+15550001234") or messaging_service_sid ("MG…"), one of them')
    _check_e164(reader, "sms.twilio.from_number", sender)
    return TwilioConfig(
        account_sid=sid, auth_token=token, auth_token_file=Path(token_file),
        signing_key=signing_key, signing_key_file=Path(key_file) if key_file else None,
        from_number=sender, messaging_service_sid=service,
        **_api_common(reader, t, "sms.twilio", TwilioConfig),
    )


def _telnyx(reader: _Reader, sms_t: dict[str, Any], used: bool) -> TelnyxConfig | None:
    if "telnyx" not in sms_t and not used:
        return None
    t = reader.table(sms_t, "telnyx", "sms.telnyx")
    reader.only(t, "sms.telnyx", {"api_key_file", "public_key", "from_number",
                                  "messaging_profile_id", "api_base", "max_per_minute",
                                  "max_per_day"})
    key_file, key = _api_secret(reader, t, "sms.telnyx.api_key_file",
                                "put an API key in it (Portal → Account settings → Keys & "
                                "credentials)")
    public_key = reader.string(t, "sms.telnyx.public_key", "", required=True).strip()
    try:
        raw = base64.b64decode(public_key, validate=True)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise reader.error("sms.telnyx.public_key", "must be the account's public key as the "
                           "portal shows it (base64, 32 bytes; Portal → Keys & credentials → "
                           "Public key)")
    sender = reader.string(t, "sms.telnyx.from_number", "").strip()
    profile = reader.string(t, "sms.telnyx.messaging_profile_id", "").strip()
    if not sender and not profile:
        raise reader.error("sms.telnyx.from_number", 'is required (E.164, like '
                           '"+15550001234"), unless messaging_profile_id names a profile '
                           "with a number pool")
    _check_e164(reader, "sms.telnyx.from_number", sender)
    return TelnyxConfig(
        api_key=key, api_key_file=Path(key_file), public_key=public_key,
        from_number=sender, messaging_profile_id=profile,
        **_api_common(reader, t, "sms.telnyx", TelnyxConfig),
    )


def _api_secret(reader: _Reader, t: dict[str, Any], key: str, fill: str) -> tuple[str, str]:
    """A messaging API's credential: (its file's name, what it holds), never empty."""
    name = reader.string(t, key, "", required=True).strip()
    secret = _read_secret_file(reader, key, Path(name))
    if not secret:
        raise reader.error(key, f"{name} is empty; {fill}")
    return name, secret


def _check_e164(reader: _Reader, key: str, sender: str) -> None:
    if sender and not (sender.startswith("+") and sender[1:].isdigit()):
        raise reader.error(key, f'must be E.164, like "+15550001234", not {sender!r}')


def _api_common(reader: _Reader, t: dict[str, Any], table: str,
                defaults: type[TwilioConfig] | type[TelnyxConfig]) -> dict[str, Any]:
    """What every messaging API's table has: api_base and the send limits."""
    base = reader.string(t, f"{table}.api_base", defaults.api_base).strip().rstrip("/")
    if not _is_http_url(base):
        raise reader.error(f"{table}.api_base", f'must be an address like '
                           f'"{defaults.api_base}", not {base!r}')
    return {"api_base": base,
            "max_per_minute": int(reader.number(t, f"{table}.max_per_minute",
                                                defaults.max_per_minute, 1, 6000)),
            "max_per_day": int(reader.number(t, f"{table}.max_per_day", 0, 0, 10_000_000))}


def _digest(reader: _Reader, digest_t: dict[str, Any]) -> DigestConfig:
    """[digest.smtp]; the password only ever from a file (0600/0640), like the AMI secret."""
    reader.only(digest_t, "digest", {"smtp"})
    smtp_t = reader.table(digest_t, "smtp", "digest.smtp")
    reader.only(smtp_t, "digest.smtp", {"host", "port", "security", "username",
                                        "password_file", "sender"})
    if not smtp_t:
        return DigestConfig()
    host = reader.string(smtp_t, "digest.smtp.host", "", required=True)
    security = reader.string(smtp_t, "digest.smtp.security", SmtpConfig.security)
    if security not in ("starttls", "ssl", "none"):
        raise reader.error("digest.smtp.security", f"must be starttls, ssl or none, "
                           f"not {security!r}")
    sender = reader.string(smtp_t, "digest.smtp.sender", "", required=True)
    if "@" not in sender:
        raise reader.error("digest.smtp.sender", f"must be an e-mail address, not {sender!r}")
    username = reader.string(smtp_t, "digest.smtp.username", "")
    password_file = reader.string(smtp_t, "digest.smtp.password_file", "")
    if username and not password_file:
        raise reader.error("digest.smtp.password_file", "is required with a username (the "
                           "password is read from that file, never written in this one)")
    password = ""
    if password_file:
        path = Path(password_file)
        password = _read_secret_file(reader, "digest.smtp.password_file",
                                     path if path.is_absolute() else reader.path.parent / path)
    default_port = 465 if security == "ssl" else 25 if security == "none" else 587
    return DigestConfig(SmtpConfig(
        host=host, port=reader.port(smtp_t, "digest.smtp.port", default_port),
        security=security, username=username, password=password, sender=sender))


def read_web_secret_key(config: Config) -> str:
    """The key that signs web sessions and CSRF tokens, from its 0600 file.

    There is no fallback: a missing or short key stops `textback web` with the fix.
    """
    reader = _Reader(config.path)
    path = config.web_secret_key_file
    if not path.exists():
        raise reader.error("web.secret_key_file", f"{path} does not exist; create it with "
                           f"`textback init --config {config.path}`")
    key = _read_secret_file(reader, "web.secret_key_file", path)
    if len(key) < 32:
        raise reader.error("web.secret_key_file", f"{path} holds a key of {len(key)} "
                           "characters; it needs at least 32 random ones (delete the file "
                           "and run `textback init` to make a new one)")
    return key


def _gsm(reader: _Reader, gsm_t: dict[str, Any]) -> GsmTransportConfig:
    reader.only(gsm_t, "sms.gsm", {"port", "baudrate", "pin", "smsc", "max_per_minute",
                                   "max_per_day", "delivery_reports"})
    baudrate = int(reader.number(gsm_t, "sms.gsm.baudrate", GsmTransportConfig.baudrate,
                                 1200, 4_000_000))
    pin = reader.string(gsm_t, "sms.gsm.pin", "")
    if pin and not (pin.isdigit() and 4 <= len(pin) <= 8):
        raise reader.error("sms.gsm.pin", "must be the SIM's 4-8 digit PIN, or empty when "
                           "the SIM has none")
    smsc = reader.string(gsm_t, "sms.gsm.smsc", "")
    if smsc and not (smsc.startswith("+") and smsc[1:].isdigit()):
        raise reader.error("sms.gsm.smsc", f"must be an international number like "
                           f'"+447785016005", or empty to use the SIM\'s; not {smsc!r}')
    reports = gsm_t.get("delivery_reports", GsmTransportConfig.delivery_reports)
    if not isinstance(reports, bool):
        raise reader.error("sms.gsm.delivery_reports", f"must be true or false, not {reports!r}")
    return GsmTransportConfig(
        port=reader.string(gsm_t, "sms.gsm.port", GsmTransportConfig.port, required=True),
        baudrate=baudrate, pin=pin, smsc=smsc,
        max_per_minute=int(reader.number(gsm_t, "sms.gsm.max_per_minute",
                                         GsmTransportConfig.max_per_minute, 1, 60)),
        max_per_day=int(reader.number(gsm_t, "sms.gsm.max_per_day",
                                      GsmTransportConfig.max_per_day, 0, 100_000)),
        delivery_reports=reports,
    )


# phonenumbers' SUPPORTED_REGIONS (9.0): a region found here is taken without importing
# the library, which costs the fast commands (`textback settings`) a tenth of their
# start-up; any other is asked of the library itself (tests keep this a subset of it)
_REGIONS = (
    "AC AD AE AF AG AI AL AM AO AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN "
    "BO BQ BR BS BT BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE "
    "DJ DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM "
    "GN GP GQ GR GT GU GW GY HK HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE "
    "KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH "
    "MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ "
    "OM PA PE PF PG PH PK PL PM PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI "
    "SJ SK SL SM SN SO SR SS ST SV SX SY SZ TA TC TD TG TH TJ TK TL TM TN TO TR TT TV TW "
    "TZ UA UG US UY UZ VA VC VE VG VI VN VU WF WS XK YE YT ZA ZM ZW"
)
KNOWN_REGIONS = frozenset(_REGIONS.split())


def _check_region(reader: _Reader, region: str) -> None:
    if region in KNOWN_REGIONS:
        return
    import phonenumbers  # only here: keeps `import agent.config` light

    if region not in phonenumbers.SUPPORTED_REGIONS:
        raise reader.error("pbx.default_region", f"{region!r} is not a region code like "
                           "US, GB, DE, FR, AU")


def _read_secret_file(reader: _Reader, key: str, path: Path) -> str:
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise reader.error(key, f"cannot read {path}: {exc.strerror}") from None
    # 0600, or 0640 with the service's group (root:textback): group write or any
    # access for others is refused
    if mode & 0o027:
        raise reader.error(key, f"{path} is readable by others; run: chmod 600 {path} "
                           "(or chmod 640 when its group is the service's, e.g. "
                           "root:textback)")
    return text


class _Reader:
    """Typed access to the parsed TOML that words every error with key and file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def error(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.path}: {key} {problem}")

    def only(self, table: dict[str, Any], prefix: str, allowed: set[str]) -> None:
        for key in table:
            if key not in allowed:
                where = f"{prefix}.{key}" if prefix else key
                raise self.error(where, "is not a known key (known here: "
                                 f"{', '.join(sorted(allowed))})")

    def table(self, data: dict[str, Any], name: str, full: str | None = None) -> dict[str, Any]:
        value = data.get(name, {})
        if not isinstance(value, dict):
            raise self.error(full or name, "must be a table, like [" + (full or name) + "]")
        return value

    def string(self, table: dict[str, Any], key: str, default: str,
               *, required: bool = False) -> str:
        value = table.get(key.rsplit(".", 1)[-1], default)
        if not isinstance(value, str):
            raise self.error(key, f"must be a string in quotes, not {value!r}")
        if required and not value.strip():
            raise self.error(key, "must not be empty")
        return value

    def strings(self, table: dict[str, Any], key: str, default: tuple[str, ...]) -> tuple[str, ...]:
        value = table.get(key.rsplit(".", 1)[-1], list(default))
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.error(key, f'must be a list of non-empty strings, like ["trunk"], '
                             f"not {value!r}")
        return tuple(value)

    def number(self, table: dict[str, Any], key: str, default: float,
               low: float, high: float) -> float:
        value = table.get(key.rsplit(".", 1)[-1], default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(key, f"must be a number, not {value!r}")
        if not low <= value <= high:
            raise self.error(key, f"must be between {low:g} and {high:g}, not {value!r}")
        return float(value)

    def port(self, table: dict[str, Any], key: str, default: int) -> int:
        value = table.get(key.rsplit(".", 1)[-1], default)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
            raise self.error(key, f"must be a TCP port number (1-65535), not {value!r}")
        return value


def render_default(*, ami_secret_file: str, database_url: str, ami_port: int = 5038) -> str:
    """The commented config `textback init` writes: every key, with why."""
    return f"""\
# textback configuration: infrastructure only. Business rules (hours, templates,
# cooldown, exclusions) live in the database: `textback settings list`.

[ami]
# Asterisk Manager Interface; the user is defined in manager.conf (see
# asterisk/manager_textback.conf for the least privileges it needs).
host = "127.0.0.1"
port = {ami_port}
username = "textback"
# the secret lives in its own file with 0600 permissions (or use: secret = "...")
secret_file = "{ami_secret_file}"

[pbx]
# a call whose first channel is PJSIP/<one of these>-... came from outside
trunk_endpoints = ["trunk"]
# alternatively, contexts that mean "came from outside" (FreePBX: from-pstn, from-trunk)
inbound_contexts = []
# region for numbers written without a country code
default_region = "US"
# Asterisk's CDR file, read after an AMI outage (and at start-up) to text the calls
# that ended while the agent was not watching; empty: not read. Needs cdr_csv.so and
# cdr.conf [csv] with loguniqueid = yes and newcdrcolumns = yes (asterisk/README.md),
# and read access for the agent's user (group asterisk).
cdr_csv = ""
# true: the file's times are UTC (cdr.conf [csv] usegmtime = yes, recommended);
# false: they are in this host's local time zone (usegmtime = no, Asterisk's default)
cdr_csv_utc = true

[database]
url = "{database_url}"

[sms]
# failover order
transports = ["sip"]

[sms.sip]
# PJSIP endpoint of the SMS-capable trunk
endpoint = "trunk"
# empty: reply from the DID that was called
from_number = ""

# A USB/serial GSM modem with a SIM (see hardware/README.md); add "gsm" to
# transports above, e.g. transports = ["gsm", "sip"] for the trunk as failover.
# [sms.gsm]
# port = "/dev/serial/by-id/usb-*-if02-port0"   # a path or a glob, never /dev/ttyUSB2
# pin = ""              # the SIM's PIN, if any
# smsc = ""             # empty: the SMS centre stored on the SIM
# max_per_minute = 6    # carriers flag SIMs that send faster
# max_per_day = 200     # SMS parts in any 24 h (more gets a consumer SIM blocked); 0: none
# delivery_reports = true

# A messaging API (US: the usual way, see the README's "US texting"); add its name to
# transports above, e.g. transports = ["twilio", "sip"], and set [web] public_url.
# [sms.twilio]                  # Twilio, or SignalWire's compatible API
# account_sid = "AC..."         # SignalWire: the project id
# auth_token_file = "/etc/textback/twilio.token"   # mode 0600 (or 0640 root:textback)
# signing_key_file = "/etc/textback/signalwire.key"  # SignalWire only: its webhook key
# from_number = "+15550001234"  # or messaging_service_sid = "MG..."
# api_base = "https://api.twilio.com"   # SignalWire: "https://<space>.signalwire.com/api/laml"
# max_per_minute = 60
# [sms.telnyx]
# api_key_file = "/etc/textback/telnyx.key"        # mode 0600 (or 0640 root:textback)
# public_key = "..."            # the account's public key: webhooks are signed with it
# from_number = "+15550001234"  # and/or messaging_profile_id = "..."
# api_base = "https://api.telnyx.com"
# max_per_minute = 60

[agi]
# FastAGI routing inside the agent, for TEXTBACK_AGI=agi://127.0.0.1:4573/textback-route
# in the dialplan. Off: Asterisk runs the textback-route command per call instead.
enabled = false
host = "127.0.0.1"
port = 4573

[web]
# the admin and front-desk UI (`textback web`); loopback only until it sits
# behind a TLS reverse proxy
host = "127.0.0.1"
port = 8080
# signs sessions and CSRF tokens; written by `textback init` with mode 0600
# (default: web.secret beside this file)
# secret_key_file = "/etc/textback/web.secret"
# true when browsers reach the UI over https: cookies are then never sent in clear
secure_cookies = false
# with a messaging API: the https address where the provider reaches this UI (its
# webhooks are <public_url>/hooks/...); "": none
public_url = ""
"""
