"""Reading a TLS ClientHello without terminating TLS: the server name (SNI) it asks for.

Owns the wire format (RFC 8446 section 4.1.2 and 5.1, RFC 6066 section 3) as far as
the SNI needs it: TLS records of content type handshake (22), reassembled when the
ClientHello spans several records (a client may fragment it, and TCP may split it
anywhere), the ClientHello body, its extensions and the ``server_name`` extension.

:func:`parse` is called on everything received so far and says "need more" (None),
gives the :class:`ClientHello`, or raises :class:`HelloError` with a sentence for the
event. It refuses as early as the bytes allow: a first byte that is not a handshake
record, a record or handshake length out of bounds (before waiting for the bytes it
announces), a handshake message that is not a ClientHello, two server_name extensions
or two host names (which one would the server use?), a name that is not ASCII.
"""

from __future__ import annotations

from dataclasses import dataclass

HANDSHAKE = 22
CLIENT_HELLO = 1
SERVER_NAME = 0
HOST_NAME = 0
MAX_RECORD = 1 << 14  # TLSPlaintext.length limit (RFC 8446 section 5.1)
MAX_HELLO = 1 << 16  # the largest ClientHello accepted (real ones are well below 4 KiB)
RECORD_HEADER = 5


class HelloError(ValueError):
    """The bytes are not (or not an acceptable) TLS ClientHello."""


@dataclass(frozen=True)
class ClientHello:
    server_name: str | None  # None: no server_name extension (or no host_name in it)
    version: int  # legacy_version of the ClientHello (0x0303 for TLS 1.2 and 1.3)
    size: int  # bytes of the records that carried it


def _describe_first(byte: int) -> str:
    if 0x41 <= byte <= 0x5A:  # an upper-case letter: a plain-text protocol verb
        return f"0x{byte:02x} ('{chr(byte)}': plain text, e.g. an HTTP request)"
    return f"0x{byte:02x}"


def parse(data: bytes) -> ClientHello | None:
    """The ClientHello at the start of ``data``; None while more bytes are needed."""
    if not data:
        return None
    if data[0] != HANDSHAKE:
        raise HelloError(f"not a TLS handshake: the first byte is {_describe_first(data[0])}")
    message = bytearray()
    offset = 0
    while len(data) - offset >= RECORD_HEADER:
        kind, major, length = data[offset], data[offset + 1], \
            int.from_bytes(data[offset + 3:offset + 5], "big")
        if kind != HANDSHAKE:
            raise HelloError(f"a record of content type {kind} arrived before the "
                             "ClientHello was complete")
        if major != 3:
            raise HelloError(f"not TLS: record version 0x{major:02x}{data[offset + 2]:02x}")
        if not 0 < length <= MAX_RECORD:
            raise HelloError(f"bogus TLS record length {length} (1..{MAX_RECORD})")
        body = data[offset + RECORD_HEADER:offset + RECORD_HEADER + length]
        offset += RECORD_HEADER + length
        message += body
        _check_header(message)
        if len(body) < length:
            return None  # the record's remaining bytes have not arrived yet
        if len(message) >= 4 and len(message) >= 4 + _length(message):
            end = 4 + _length(message)
            if len(message) > end:
                # a handshake record may hold a following message too, but nothing may
                # follow the ClientHello before the server answers
                raise HelloError("bytes after the ClientHello in its handshake record")
            return ClientHello(_server_name(bytes(message[4:end])),
                               int.from_bytes(message[4:6], "big") if end >= 6 else 0,
                               offset)
    tail = data[offset:]  # a record header not complete yet: judge what is there
    if tail and tail[0] != HANDSHAKE:
        raise HelloError(f"a record of content type {tail[0]} arrived before the "
                         "ClientHello was complete")
    if len(tail) >= 2 and tail[1] != 3:
        raise HelloError(f"not TLS: record version 0x{tail[1]:02x}..")
    return None


def _length(message: bytearray) -> int:
    return int.from_bytes(message[1:4], "big")


def _check_header(message: bytearray) -> None:
    if message and message[0] != CLIENT_HELLO:
        raise HelloError(f"the first handshake message is of type {message[0]}, not a "
                         "ClientHello (1)")
    if len(message) >= 4:
        length = _length(message)
        if length > MAX_HELLO:
            raise HelloError(f"a ClientHello of {length} bytes is larger than the "
                             f"{MAX_HELLO} accepted")
        if length < 38:
            raise HelloError(f"a ClientHello of {length} bytes is too short to be one")


class _Reader:
    """Bounds-checked reads from one ClientHello body."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, count: int, what: str) -> bytes:
        if self.pos + count > len(self.data):
            raise HelloError(f"malformed ClientHello: {what} runs past its end")
        chunk = self.data[self.pos:self.pos + count]
        self.pos += count
        return chunk

    def number(self, size: int, what: str) -> int:
        return int.from_bytes(self.take(size, what), "big")

    def vector(self, size: int, what: str) -> bytes:
        return self.take(self.number(size, f"the length of {what}"), what)

    @property
    def left(self) -> int:
        return len(self.data) - self.pos


def _server_name(body: bytes) -> str | None:
    hello = _Reader(body)
    hello.take(2 + 32, "version and random")
    hello.vector(1, "session id")
    hello.vector(2, "cipher suites")
    hello.vector(1, "compression methods")
    if hello.left == 0:
        return None  # no extensions at all (TLS 1.0-1.2 allow it)
    extensions = _Reader(hello.vector(2, "extensions"))
    if hello.left:
        raise HelloError("malformed ClientHello: bytes after its extensions")
    found: str | None = None
    seen: set[int] = set()
    while extensions.left:
        kind = extensions.number(2, "an extension type")
        data = extensions.vector(2, f"extension {kind}")
        if kind in seen:
            raise HelloError(f"malformed ClientHello: extension {kind} appears twice")
        seen.add(kind)
        if kind == SERVER_NAME:
            found = _host_name(data)
    return found


def _host_name(data: bytes) -> str | None:
    outer = _Reader(data)
    names = _Reader(outer.vector(2, "the server name list"))
    if outer.left:
        raise HelloError("malformed server_name extension: bytes after its list")
    host: str | None = None
    while names.left:
        kind = names.number(1, "a server name type")
        name = names.vector(2, "a server name")
        if kind != HOST_NAME:
            continue  # no other type is defined; a server ignores unknown ones
        if host is not None:
            raise HelloError("server_name extension names two host names")
        if not name or b"\x00" in name:
            raise HelloError("server_name extension has an empty or NUL-holding name")
        try:
            host = name.decode("ascii")
        except UnicodeDecodeError:
            raise HelloError("server name is not ASCII (IDNs travel as A-labels, "
                             "xn--...)") from None
    return host
