"""`textback doctor`'s modem checks: each failure names the exact fix.

The usual ways a USB modem on a PBX box fails to work: the port name is wrong or
changed (no udev rule), ModemManager grabbed the port, a Huawei E3372 is in
HiLink (network card) mode, the user is not in `dialout`, the SIM wants a PIN,
no network registration or signal, no SMSC on the SIM, SIM storage full.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path

from agent.config import Config
from agent.transports.modem.driver import Modem, find_port

GUIDE = "see hardware/README.md"


@dataclass
class ModemCheck:
    ok: bool | None
    what: str
    fix: str = ""


def holders(device: str) -> list[str]:
    """Processes that have `device` open ("ModemManager (pid 612)"), from /proc."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            fds = list((proc / "fd").iterdir())
            if any(os.path.realpath(fd) == device for fd in fds):
                name = (proc / "comm").read_text().strip()
                found.append(f"{name} (pid {proc.name})")
        except OSError:
            continue
    return found


def hilink_present() -> bool:
    """A Huawei modem in HiLink mode shows as a network card (USB id 12d1:14db/14dc)."""
    for product in Path("/sys/bus/usb/devices").glob("*/idProduct"):
        try:
            vendor = (product.parent / "idVendor").read_text().strip()
            if vendor == "12d1" and product.read_text().strip() in ("14db", "14dc"):
                return True
        except OSError:
            continue
    return False


async def _leave_on_sim(_: object) -> None:
    raise RuntimeError("doctor does not store SMS; the agent does")


async def _probe(cfg: Config) -> Modem:
    modem = Modem(cfg.sms.gsm, on_deliver=_leave_on_sim, on_report=_leave_on_sim)
    task = asyncio.get_running_loop().create_task(modem.run())
    for _ in range(150):  # up to 15 s: ready, or a problem a person must fix
        if modem.ready.is_set() or modem.problem:
            break
        await asyncio.sleep(0.1)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return modem


def modem_checks(cfg: Config) -> list[ModemCheck]:
    if "gsm" not in cfg.sms.transports:
        return [ModemCheck(True, "GSM modem transport not in use")]
    pattern = cfg.sms.gsm.port
    path = find_port(pattern)
    if path is None:
        fix = (f"plug the modem in and set [sms.gsm] port in {cfg.path} to its "
               "/dev/serial/by-id/… name (`ls -l /dev/serial/by-id/`); install "
               f"hardware/99-textback-modem.rules for a stable name ({GUIDE})")
        if hilink_present():
            fix = ("a Huawei modem in HiLink mode (a network card, no serial port) is "
                   "plugged in: switch it to stick mode with usb_modeswitch "
                   f"(`usb_modeswitch -v 12d1 -p 14dc -J`, then `-X` firmware) — {GUIDE}")
        return [ModemCheck(False, f"modem port {pattern}: not found", fix)]
    device = os.path.realpath(path)
    checks = [ModemCheck(True, f"modem port found: {path} → {device}")]
    if not os.access(device, os.R_OK | os.W_OK):
        checks.append(ModemCheck(False, f"{device} is not readable and writable by this user",
                                 "add the user to the dialout group: "
                                 "`usermod -aG dialout textback` (log in again)"))
        return checks
    others = holders(device)
    if others:
        fix = "stop whatever else holds the port"
        if any(o.startswith("ModemManager") for o in others):
            fix = ("ModemManager holds the port: install hardware/99-textback-modem.rules "
                   "(ID_MM_DEVICE_IGNORE) and `udevadm control --reload && udevadm trigger`, "
                   "or `systemctl disable --now ModemManager`")
        elif any(o.startswith(("textback", "python")) for o in others):
            fix = "the textback agent holds it (normal when it runs): `systemctl stop " \
                  "textback-agent` to let doctor talk to the modem"
        checks.append(ModemCheck(False, f"{device} is held by: {', '.join(others)}", fix))
        return checks
    checks.append(ModemCheck(True, f"{device} is free"))
    modem = asyncio.run(_probe(cfg))
    info = modem.info
    if not modem.connected_count:
        return [*checks, ModemCheck(False, f"modem on {path}: {modem.problem or 'no answer'}",
                                    f"fix the SIM as said, or check baudrate and cable; {GUIDE}"
                                    if modem.problem else
                                    "is it the AT port? many modems have several "
                                    "(if00, if02, if03…); try another in [sms.gsm] port")]
    checks.append(ModemCheck(True, f"modem {info.manufacturer} {info.model}, IMEI {info.imei}"))
    checks.append(ModemCheck(True, "SIM ready (PIN " + ("given" if cfg.sms.gsm.pin else
                                                        "not needed") + ")"))
    registered = info.registration in ("home", "roaming")
    checks.append(ModemCheck(registered, f"network registration: {info.registration or '?'}"
                             f" ({info.operator or 'no operator'})",
                             "check the antenna, the SIM's plan and coverage; an LTE-only "
                             "modem needs a SIM with VoLTE/LTE SMS"))
    signal = info.signal_dbm
    checks.append(ModemCheck(signal is not None and signal >= -105,
                             f"signal: {signal if signal is not None else 'unknown'} dBm",
                             "move the modem or add an external antenna (-105 dBm or better)"))
    checks.append(ModemCheck(bool(info.smsc or cfg.sms.gsm.smsc),
                             f"SMSC: {info.smsc or cfg.sms.gsm.smsc or 'none on the SIM'}",
                             f"set [sms.gsm] smsc in {cfg.path} to your carrier's SMSC number"))
    for memory, (used, total) in info.storage.items():
        checks.append(ModemCheck(used < total, f"SMS storage {memory}: {used}/{total} used",
                                 "start the agent: it reads and clears the SIM"))
    return checks
