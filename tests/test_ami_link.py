"""The AMI link against an Asterisk that stops answering (a stand-in server speaking AMI:
freezing the real one mid-action is the chaos suite's job, bench/chaos asterisk-freeze).

A frozen Asterisk that resumes carries out the one action it had read and drops the
link; the SIP transport relies on that to tell "sent by a frozen Asterisk" from "lost".
So once an action goes unanswered, nothing more may be written to that link."""

from __future__ import annotations

import asyncio

from agent.config import AmiConfig
from agent.pbx.ami import AmiLink, AmiNoAnswer, AmiUnavailable


class FreezingAsterisk:
    """Answers the login and CoreStatus, then reads actions and answers none."""

    def __init__(self) -> None:
        self.actions: list[str] = []
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        writer.write(b"Asterisk Call Manager/9.0.0\r\n")
        try:
            while True:
                block = await reader.readuntil(b"\r\n\r\n")
                fields = dict(line.split(": ", 1) for line in
                              block.decode().strip().split("\r\n") if ": " in line)
                action, action_id = fields.get("Action", ""), fields.get("ActionID", "")
                if action in ("Login", "CoreStatus"):
                    writer.write(f"Response: Success\r\nActionID: {action_id}\r\n"
                                 "CoreStartupDate: 2026-12-07\r\nCoreStartupTime: 08:00:00\r\n"
                                 "\r\n".encode())
                else:
                    self.actions.append(action)  # read, never answered: frozen
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()


def test_an_unanswered_action_ends_the_link_before_another_is_written() -> None:
    async def main() -> tuple[type[Exception], type[Exception], list[str], int]:
        asterisk = FreezingAsterisk()
        port = await asterisk.start()
        link = AmiLink(AmiConfig(port=port, secret="x", ping_interval=30.0), lambda _e: None)
        runner = asyncio.create_task(link.run())
        assert await link.wait_up(5)
        message = {"Action": "MessageSend", "To": "pjsip:PJSIP/+15550000001@trunk"}
        outcomes = await asyncio.gather(link.action(message, timeout=0.3),
                                        link.action(message, timeout=2.0),
                                        return_exceptions=True)
        for _ in range(100):  # the link is taken for dead and made again
            if asterisk.connections >= 2 and link.connected:
                break
            await asyncio.sleep(0.05)
        link.close()
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        first, second = (type(outcome) for outcome in outcomes)
        return first, second, asterisk.actions, asterisk.connections

    first, second, written, connections = asyncio.run(main())
    assert first is AmiNoAnswer  # written, not answered: Asterisk may still do it
    assert second is AmiUnavailable  # never written to the link that stopped answering
    assert written == ["MessageSend"]
    assert connections >= 2


def test_an_answered_link_is_left_alone() -> None:
    timeout = 0.3

    async def main() -> int:
        asterisk = FreezingAsterisk()
        port = await asterisk.start()
        link = AmiLink(AmiConfig(port=port, secret="x", ping_interval=30.0), lambda _e: None)
        runner = asyncio.create_task(link.run())
        assert await link.wait_up(5)
        response = await link.action({"Action": "CoreStatus"}, timeout=timeout)
        assert response.success
        await asyncio.sleep(timeout * 2)
        link.close()
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        return asterisk.connections

    assert asyncio.run(main()) == 1
