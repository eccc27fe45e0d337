"""Real local servers for tests: an HTTP server that records requests and answers from a script."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from dataclasses import dataclass, field

# --- a real HTTP server --------------------------------------------------------------------------------


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int


@dataclass
class HookServer:
    """A minimal HTTP/1.1 server on 127.0.0.1: records each request, answers from a script (then 200)."""

    port: int = 0
    requests: list[Received] = field(default_factory=list)
    script: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    delay_s: float = 0.0

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def delivered_ids(self) -> Counter[str]:
        """Notification ids the server accepted (2xx), with how many times."""
        return Counter(r.headers["x-terrain-notification-id"] for r in self.requests if r.status < 300)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = await reader.readline()
            if not request_line:
                return
            _, path, _ = request_line.decode("latin-1").split(" ", 2)
            headers: dict[str, str] = {}
            while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            status, extra = self.script.pop(0) if self.script else (200, {})
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            self.requests.append(Received(path, headers, body, status))
            head = [f"HTTP/1.1 {status} Scripted", "Content-Type: text/plain", "Content-Length: 2", "Connection: close"]
            head += [f"{k}: {v}" for k, v in extra.items()]
            writer.write(("\r\n".join(head) + "\r\n\r\nok").encode("latin-1"))
            await writer.drain()
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
