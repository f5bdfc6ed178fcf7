"""The ClientHello reader (proxy/tls_hello.py) on real ClientHellos produced by Python's
``ssl`` module (OpenSSL), cut at every byte, re-split into several TLS records, and on
garbage: plain text, bogus lengths, other record types, ambiguous server names."""

from __future__ import annotations

import random
import ssl
import struct

import pytest

from proxy.tls_hello import MAX_HELLO, ClientHello, HelloError, parse


def real_hello(server_hostname: str | None, **options: object) -> bytes:
    """The bytes a real TLS client sends first (nothing answers it)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    for name, value in options.items():
        setattr(context, name, value)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=server_hostname)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def records(message: bytes, sizes: list[int], version: bytes = b"\x03\x01") -> bytes:
    """``message`` (a handshake message) re-split into handshake records of ``sizes``."""
    out, pos = b"", 0
    for size in sizes:
        chunk = message[pos:pos + size]
        if not chunk:
            break
        out += b"\x16" + version + struct.pack(">H", len(chunk)) + chunk
        pos += len(chunk)
    if pos < len(message):
        rest = message[pos:]
        out += b"\x16" + version + struct.pack(">H", len(rest)) + rest
    return out


def handshake_of(hello: bytes) -> bytes:
    """The handshake message inside a single-record ClientHello."""
    (length,) = struct.unpack(">H", hello[3:5])
    assert len(hello) == 5 + length
    return hello[5:]


def hand_made(extensions: list[tuple[int, bytes]]) -> bytes:
    """A minimal ClientHello with the given extensions, in one record."""
    body = (b"\x03\x03" + bytes(32) + b"\x00" + b"\x00\x02\x13\x01" + b"\x01\x00"
            + struct.pack(">H", sum(4 + len(d) for _, d in extensions))
            + b"".join(struct.pack(">HH", kind, len(data)) + data
                       for kind, data in extensions))
    message = b"\x01" + len(body).to_bytes(3, "big") + body
    return records(message, [len(message)])


def sni_extension(*names: tuple[int, bytes]) -> tuple[int, bytes]:
    entries = b"".join(bytes([kind]) + struct.pack(">H", len(n)) + n for kind, n in names)
    return 0, struct.pack(">H", len(entries)) + entries


def test_real_hello_gives_its_server_name():
    data = real_hello("allowed.example")
    hello = parse(data)
    assert hello == ClientHello("allowed.example", 0x0303, len(data))


def test_tls12_only_client_and_capitals_are_read_as_sent():
    data = real_hello("Mixed.Example", maximum_version=ssl.TLSVersion.TLSv1_2)
    assert parse(data).server_name == "Mixed.Example"  # the matcher lower-cases


def test_every_prefix_needs_more_and_never_errs():
    """A ClientHello split across TCP segments anywhere: None until the last byte."""
    data = real_hello("allowed.example")
    for cut in range(len(data)):
        assert parse(data[:cut]) is None, cut
    assert parse(data).server_name == "allowed.example"


@pytest.mark.parametrize("sizes", [[1] * 600, [3, 100], [40], [4, 4, 4], [200, 1, 1]])
def test_hello_fragmented_over_several_records(sizes):
    message = handshake_of(real_hello("split.example"))
    data = records(message, sizes)
    assert parse(data).server_name == "split.example"
    for cut in range(0, len(data), 7):  # and each of those split again by TCP
        assert parse(data[:cut]) is None


def test_bytes_after_the_hello_are_left_for_the_server():
    data = real_hello("allowed.example")
    # e.g. 0-RTT application data right behind the ClientHello
    assert parse(data + b"\x17\x03\x03\x00\x05hello").size == len(data)


@pytest.mark.parametrize("name", [None, "192.0.2.1"])  # ssl sends no SNI for an address
def test_no_server_name(name):
    assert parse(real_hello(name)).server_name is None


def test_no_extensions_at_all():
    body = b"\x03\x03" + bytes(32) + b"\x00" + b"\x00\x02\x00\x2f" + b"\x01\x00"
    message = b"\x01" + len(body).to_bytes(3, "big") + body
    assert parse(records(message, [len(message)])).server_name is None


@pytest.mark.parametrize(("data", "words"), [
    (b"GET / HTTP/1.1\r\nHost: allowed.example\r\n\r\n", "first byte is 0x47 ('G'"),
    (b"\x80\x2e\x01\x03\x01", "not a TLS handshake"),  # an SSLv2-format hello
    (b"SSH-2.0-OpenSSH_9.6\r\n", "not a TLS handshake"),
    (b"\x16\x03\x01\xff\xff", "bogus TLS record length 65535"),  # refused before waiting
    (b"\x16\x03\x01\x00\x00", "bogus TLS record length 0"),
    (b"\x16\x07", "not TLS: record version 0x07"),
    (b"\x16\x03\x01\x00\x04\x02\x00\x00\x00", "type 2, not a ClientHello"),
    (b"\x16\x03\x01\x00\x04\x01\xff\xff\xff", "16777215 bytes is larger than the 65536"),
    (b"\x16\x03\x01\x00\x04\x01\x00\x00\x05", "too short to be one"),
])
def test_garbage_is_refused_with_a_reason(data, words):
    with pytest.raises(HelloError, match=words.replace("(", r"\(")):
        parse(data)


def test_a_huge_announced_hello_is_refused_from_its_first_record():
    message = b"\x01" + (MAX_HELLO + 1).to_bytes(3, "big") + bytes(100)
    with pytest.raises(HelloError, match="larger than"):
        parse(records(message, [104]))


def test_another_record_type_before_the_hello_is_complete():
    message = handshake_of(real_hello("allowed.example"))
    first = records(message[:50], [50])
    with pytest.raises(HelloError, match="content type 23 arrived before"):
        parse(first + b"\x17\x03\x03\x00\x01x")
    with pytest.raises(HelloError, match="content type 21 arrived before"):
        parse(first + b"\x15")  # an alert's first byte alone is enough


def test_ambiguous_server_names_are_refused():
    one = sni_extension((0, b"allowed.example"))
    with pytest.raises(HelloError, match="extension 0 appears twice"):
        parse(hand_made([one, sni_extension((0, b"evil.example"))]))
    with pytest.raises(HelloError, match="two host names"):
        parse(hand_made([sni_extension((0, b"allowed.example"), (0, b"evil.example"))]))
    with pytest.raises(HelloError, match="empty or NUL"):
        parse(hand_made([sni_extension((0, b"allowed.example\x00.evil"))]))
    with pytest.raises(HelloError, match="not ASCII"):
        parse(hand_made([sni_extension((0, "bücher.example".encode()))]))
    assert parse(hand_made([one])).server_name == "allowed.example"
    # an unknown name type is skipped, as servers skip it
    assert parse(hand_made([sni_extension((7, b"x"), (0, b"a.example"))])).server_name \
        == "a.example"


@pytest.mark.parametrize("cut", [1, 2, 5, 20])
def test_lengths_that_overrun_their_container(cut):
    data = bytearray(hand_made([sni_extension((0, b"allowed.example"))]))
    # make the server name claim more bytes than its extension holds
    name_len_at = len(data) - len(b"allowed.example") - 2
    data[name_len_at:name_len_at + 2] = struct.pack(">H", len(b"allowed.example") + cut)
    with pytest.raises(HelloError, match="malformed|runs past"):
        parse(bytes(data))


def test_random_bytes_never_crash_the_reader():
    rng = random.Random(15)
    base = real_hello("allowed.example")
    for _ in range(3000):
        data = bytearray(base)
        for _ in range(rng.randint(1, 6)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        data = bytes(data[:rng.randint(0, len(data))])
        try:
            hello = parse(data)
        except HelloError:
            continue
        assert hello is None or isinstance(hello.server_name, str | None)
