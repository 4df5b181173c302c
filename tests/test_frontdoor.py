"""The front door's HTTP (``relay.server.frontdoor``, on httptools): a request head read
whole however it arrives, what came after it kept for the WebSocket handshake, bodies by
length or chunked, the refusals (400, 413, 431) and the responses, HEAD's included. Over
memory streams, with the deadline on MockClock."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from relay.core.protocol import Refusal
from relay.server.frontdoor import RequestHead, read_request_head

UPGRADE = (
    b"GET /ws?key=abc&key=def HTTP/1.1\r\nHost: relay.test\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\nX-Forwarded-For: 10.0.0.1  \r\nx-forwarded-for: 10.0.0.2\r\n\r\n"
)


async def read(*pieces: bytes, max_bytes: int = 8192, close: bool = True) -> RequestHead | None:
    """The head read from ``pieces``, each arriving as its own receive: a lockstep stream
    hands the reader one piece per ``send_all``."""
    ours, theirs = trio.testing.lockstep_stream_pair()
    async with trio.open_nursery() as nursery:

        async def client() -> None:
            for piece in pieces:
                await theirs.send_all(piece)
            if close:
                await theirs.aclose()

        nursery.start_soon(client)
        refused: Refusal | None = None
        try:
            head = await read_request_head(ours, max_bytes, trio.current_time() + 10)
        except Refusal as exc:  # raised from here, not from inside the nursery's group
            refused = exc
        nursery.cancel_scope.cancel()
    if refused is not None:
        raise refused
    return head


async def body_of(head_and_body: bytes, *more: bytes, max_bytes: int = 1000) -> bytes:
    ours, theirs = trio.testing.memory_stream_pair()
    await theirs.send_all(head_and_body)
    head = await read_request_head(ours, 8192, trio.current_time() + 10)
    assert head is not None
    for piece in more:
        await theirs.send_all(piece)
    await theirs.aclose()
    return await head.read_body(ours, max_bytes)


async def test_an_upgrade_head_keeps_what_came_after_it() -> None:
    head = await read(UPGRADE + b"\x81\x05early")
    assert head is not None and head.is_upgrade
    assert (head.method, head.target, head.path) == ("GET", "/ws?key=abc&key=def", "/ws")
    assert head.query == {"key": ["abc", "def"]}
    assert head.head == UPGRADE and head.trailing == b"\x81\x05early"
    assert head.headers["sec-websocket-version"] == "13"
    # Names lower-cased, values without surrounding whitespace, repeats joined.
    assert head.headers["x-forwarded-for"] == "10.0.0.1, 10.0.0.2"


async def test_a_head_in_pieces_is_read_whole() -> None:
    pieces = [UPGRADE[i : i + 7] for i in range(0, len(UPGRADE), 7)]
    head = await read(*pieces[:-1], pieces[-1] + b"tail")
    assert head is not None
    assert head.head == UPGRADE and head.trailing == b"tail"
    assert head.query_value("key") == "abc" and head.query_value("other") is None


async def test_a_plain_request_is_not_an_upgrade() -> None:
    head = await read(b"GET /healthz HTTP/1.1\r\nHost: relay.test\r\nConnection: close\r\n\r\n")
    assert head is not None and not head.is_upgrade
    assert head.path == "/healthz" and head.trailing == b""


async def test_empty_lines_before_the_request_line_are_skipped() -> None:
    head = await read(b"\r\n\r\n", b"GET /healthz HTTP/1.1\r\n", b"Host: a\r\n\r\n")
    assert head is not None and (head.method, head.path) == ("GET", "/healthz")
    # The head handed on (to the synthetic market's WebSocket library) starts at the request.
    assert head.head == b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n"


async def test_only_the_first_requests_head_counts() -> None:
    """Bytes behind a whole request, pipelined or not, are not its own (h11 ignored them)."""
    head = await read(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b?x=1 HTTP/1.1\r\nHost: b\r\n\r\n")
    assert head is not None
    assert (head.target, head.headers) == ("/a", {"host": "a"})
    head = await read(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\nxyz")
    assert head is not None and head.path == "/healthz"
    head = await read(b"GET /healthz HTTP/1.0\r\n\r\nX")
    assert head is not None and head.path == "/healthz"


async def test_a_chunked_bodys_trailers_are_not_headers() -> None:
    """A trailer must not add a hop to X-Forwarded-For (nor a Host)."""
    request = (
        b"POST /v1/publish HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 10.0.0.1\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n"
    )
    head = await read(request)
    assert head is not None and head.headers["x-forwarded-for"] == "10.0.0.1"
    assert await body_of(request) == b"{}"


async def test_a_pipelined_requests_body_is_not_added_to_the_first() -> None:
    first = b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nab"
    second = b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\ncd"
    assert await body_of(first + second) == b"ab"


async def test_a_body_behind_an_upgrade_the_relay_does_not_serve_is_refused() -> None:
    """llhttp stops at the head of any upgrade, so the body would be lost: refused instead."""
    request = (
        b"POST /v1/publish HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: h2c\r\n"
        b"Content-Length: 5\r\n\r\nhello"
    )
    with pytest.raises(Refusal) as refused:
        await body_of(request)
    assert refused.value.status == 400 and "upgrade" in refused.value.message


async def test_a_peer_that_closes_before_the_head_ends_gives_none() -> None:
    assert await read(b"GET / HTTP/1.1\r\nHost: rel") is None
    assert await read() is None


async def test_a_head_that_does_not_end_by_the_deadline_gives_none(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ours, theirs = trio.testing.memory_stream_pair()
    await theirs.send_all(b"GET / HTTP/1.1\r\n")
    start = trio.current_time()
    assert await read_request_head(ours, 8192, start + 5) is None
    assert trio.current_time() == start + 5


@pytest.mark.parametrize(
    ("request_bytes", "status", "message"),
    [
        (b"GARBAGE\r\n\r\n", 400, "Invalid method"),
        (b"GET / HTTP/1.1\r\nHo st: a\r\n\r\n", 400, "Invalid header"),
        (b"GET / HTTP/1.1\nHost: a\n\n", 400, "CRLF"),
        (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 400, "HTTP/2.0 is not served here"),
        (b"GET /ws RTSP/1.0\r\nHost: a\r\n\r\n", 400, "RTSP/1.0 is not served here"),
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, "multiple Host"),
        (b"GET //[x/ HTTP/1.1\r\nHost: h\r\n\r\n", 400, "IPv6"),
        (b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n", 400, "Host"),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n",
            400,
            "Transfer-Encoding",
        ),
    ],
)
async def test_what_is_not_a_request_head_is_refused(
    request_bytes: bytes, status: int, message: str
) -> None:
    with pytest.raises(Refusal) as refused:
        await read(request_bytes)
    assert refused.value.status == status and message in refused.value.message


async def test_http_1_0_needs_no_host() -> None:
    head = await read(b"GET /healthz HTTP/1.0\r\n\r\n")
    assert head is not None and head.headers == {}


async def test_a_head_over_the_limit_that_has_not_ended_is_431() -> None:
    start = b"GET / HTTP/1.1\r\nHost: a\r\n"
    with pytest.raises(Refusal) as refused:
        await read(start, b"X-Pad: " + b"p" * 200 + b"\r\n", max_bytes=200, close=False)
    assert refused.value.status == 431
    # The same head under the limit is read.
    head = await read(start, b"X-Pad: " + b"p" * 100 + b"\r\n\r\n", max_bytes=200)
    assert head is not None and head.headers["x-pad"] == "p" * 100


async def test_a_body_by_length_arrives_whole_across_reads() -> None:
    request = b"POST /v1/publish HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhello"
    assert await body_of(request, b" wor", b"ld") == b"hello world"


async def test_a_chunked_body_is_decoded() -> None:
    request = b"POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n"
    assert await body_of(request, b"2\r\nde\r\n0\r\n\r\n") == b"abcde"


async def test_a_request_without_a_body_has_an_empty_one() -> None:
    assert await body_of(b"GET /v1/status HTTP/1.1\r\nHost: a\r\n\r\n") == b""


async def test_bodies_over_the_limit_are_413_announced_or_not() -> None:
    announced = b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 2000\r\n\r\n"
    with pytest.raises(Refusal) as refused:
        await body_of(announced)
    assert refused.value.status == 413
    chunked = b"POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    with pytest.raises(Refusal) as refused:
        await body_of(chunked, b"400\r\n" + b"x" * 1024 + b"\r\n", b"0\r\n\r\n", max_bytes=1000)
    assert refused.value.status == 413


async def test_a_truncated_or_malformed_body_is_400() -> None:
    with pytest.raises(Refusal) as refused:
        await body_of(b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc")
    assert (refused.value.status, refused.value.message) == (400, "the body ended early")
    chunked = b"POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    with pytest.raises(Refusal) as refused:
        await body_of(chunked, b"zz\r\n")
    assert refused.value.status == 400


async def test_a_response_has_its_status_headers_and_body() -> None:
    head = await read(b"GET /v1/status HTTP/1.1\r\nHost: a\r\n\r\n")
    assert head is not None
    out = head.response(404, b'{"error":"not_found"}', headers=[("retry-after", "3")])
    assert out == (
        b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: 21\r\n"
        b'connection: close\r\nretry-after: 3\r\n\r\n{"error":"not_found"}'
    )


async def test_the_answer_to_a_head_request_has_the_length_and_no_body() -> None:
    head = await read(b"HEAD /v1/snapshot/sim:book:BTC-USD HTTP/1.1\r\nHost: a\r\n\r\n")
    assert head is not None
    out = head.response(200, b'{"seq":1}')
    assert out.endswith(b"content-length: 9\r\nconnection: close\r\n\r\n")


async def test_a_line_break_in_a_response_header_is_refused() -> None:
    head = await read(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert head is not None
    with pytest.raises(ValueError, match="line break"):
        head.response(200, b"", headers=[("x-injected", "a\r\nset-cookie: b")])
