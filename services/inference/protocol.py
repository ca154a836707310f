"""uvicorn's HTTP protocol with a deadline for each request's head.

uvicorn closes a connection idle after a response (`timeout_keep_alive`), but not one that has not sent a
complete request head yet: a client that connects and sends nothing, or a header byte now and then, holds a
connection and its buffers for ever (1000 such connections were all still open after 20 s). Here every request
head, the first on a connection included, must be complete within the deadline, or the connection is closed.
"""
from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


def with_head_deadline(seconds: float) -> type[HttpToolsProtocol]:
    """The protocol class uvicorn runs (`http=`), closing connections whose request head takes over `seconds`."""

    class HeadDeadlineProtocol(HttpToolsProtocol):
        head_deadline: asyncio.TimerHandle | None = None

        def _arm(self) -> None:
            self._disarm()
            self.head_deadline = self.loop.call_later(seconds, self._head_too_slow)

        def _disarm(self) -> None:
            if self.head_deadline is not None:
                self.head_deadline.cancel()
                self.head_deadline = None

        def _head_too_slow(self) -> None:
            if not self.transport.is_closing() and (self.cycle is None or self.cycle.response_complete):
                self.transport.close()

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm()

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return HeadDeadlineProtocol
