"""The witness's HTTP face (c2sp.org/tlog-witness), served by `ledger witness serve`.

- ``POST /add-checkpoint``: the body is ``old <size>``, the consistency proof lines, an
  empty line and the signed checkpoint; 200 with the cosignature line, or 400, 403, 404,
  409 (body: the size held, ``Content-Type: text/x.tlog.size``), 413 or 422.
- ``GET /<hex SHA-256 of the origin>/checkpoint``: the last checkpoint cosigned for that
  log, with the log's signatures and the witness's cosignature (404 if none).
- ``GET /``: the witness's name, verifier key and the logs it follows (plain text).

The protocol's logic and storage are `ledger.tlog.witness`; this module only carries
bytes. It needs no ledger database.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ledger.tlog.witness import MAX_REQUEST_BYTES, Answer, Witness


def _answer(answer: Answer) -> Response:
    # bytes and an explicit header: Starlette would add "; charset=utf-8" to a text type,
    # and clients compare text/x.tlog.size exactly.
    return Response(
        answer.body.encode(), answer.status, headers={"content-type": answer.content_type}
    )


async def _body(request: Request) -> bytes | None:
    """The request body, or None once it passes MAX_REQUEST_BYTES."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_REQUEST_BYTES:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_REQUEST_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def witness_app(witness: Witness) -> Starlette:
    async def add_checkpoint(request: Request) -> Response:
        body = await _body(request)
        if body is None:
            return _answer(Answer(413, "request too large\n"))
        return _answer(await run_in_threadpool(witness.add_checkpoint, body))

    async def checkpoint(request: Request) -> Response:
        note = await run_in_threadpool(witness.latest_by_hash, request.path_params["hashed"])
        if note is None:
            return _answer(Answer(404, "no checkpoint cosigned for that log\n"))
        return Response(
            note.encode(),
            headers={"content-type": "text/plain; charset=utf-8", "cache-control": "no-cache"},
        )

    async def about(request: Request) -> Response:
        lines = [f"witness {witness.cosigner.name}", f"vkey {witness.cosigner.vkey}"]
        lines += [f"log {origin}" for origin in sorted(witness.logs)]
        return _answer(Answer(200, "\n".join(lines) + "\n"))

    return Starlette(
        routes=[
            Route("/add-checkpoint", add_checkpoint, methods=["POST"]),
            Route("/{hashed:str}/checkpoint", checkpoint, methods=["GET"]),
            Route("/", about, methods=["GET"]),
        ]
    )
