"""The regulator's console (issue 24): static files under /console, served with a strict
Content-Security-Policy. The page loads every figure through /graphql with the user's own
token: it has no query path of its own."""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import Message, Receive, Scope, Send

CONSOLE_DIR = Path(__file__).parent / "static" / "console"

POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
    " connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self';"
    " frame-ancestors 'none'"
)
HEADERS = {
    b"content-security-policy": POLICY.encode(),
    b"x-content-type-options": b"nosniff",
    b"referrer-policy": b"no-referrer",
    b"x-frame-options": b"DENY",
    # Revalidate every time (an ETag answers 304): a new release shows at once.
    b"cache-control": b"no-cache",
}


class ConsoleFiles:
    """StaticFiles with the console's security headers on every answer."""

    def __init__(self) -> None:
        self.files = StaticFiles(directory=CONSOLE_DIR, html=True)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in HEADERS]
                message["headers"] = kept + list(HEADERS.items())
            await send(message)

        await self.files(scope, receive, with_headers)


async def to_console(request: Request) -> Response:
    return RedirectResponse("/console/", status_code=308)
