"""Unit tests for arbiter.http.proxy_protocol: the PROXY v1/v2 reader and the allow list.

Headers are written out byte by byte from HAProxy's spec (doc/proxy-protocol.txt).
Every header is fed whole, a byte at a time, and split at every position; the
outcome (the ProxyInfo with all the bytes after the header, or the error's
reason) must be the same each way.
"""

from __future__ import annotations

import dataclasses

import pytest

from arbiter.config import load_config
from arbiter.http.proxy_protocol import (
    MAX_V1_LENGTH,
    MAX_V2_LENGTH,
    NEED_MORE,
    PROXY_PROTOCOL_MODES,
    V2_SIGNATURE,
    ProxyAllowList,
    ProxyHeaderError,
    ProxyHeaderReader,
    ProxyInfo,
)
from arbiter.workers.base import http_settings

pytestmark = pytest.mark.timeout(30)

HTTP = b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"
SIG = b"\x0d\x0a\x0d\x0a\x00\x0d\x0a\x51\x55\x49\x54\x0a"  # the spec's 12 bytes, spelt out

# ------------------------------------------------------------------ headers from the spec

V1_TCP4 = b"PROXY TCP4 192.0.2.1 198.51.100.7 56324 443\r\n"
V1_TCP6 = b"PROXY TCP6 2001:db8::1 2001:db8:0:0:0:0:0:2 56324 443\r\n"
V1_UNKNOWN = b"PROXY UNKNOWN\r\n"
# The spec's longest line: 107 bytes with the CRLF.
V1_UNKNOWN_LONGEST = (b"PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
                      b"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n")
V1_TCP6_LONGEST = (b"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
                   b"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n")

V2_TCP4 = (SIG
           + b"\x21"                  # version 2, command PROXY
           + b"\x11"                  # AF_INET, STREAM
           + b"\x00\x0c"              # 12 bytes follow
           + b"\xc0\x00\x02\x01"      # source 192.0.2.1
           + b"\xc6\x33\x64\x07"      # destination 198.51.100.7
           + b"\xdc\x04"              # source port 56324
           + b"\x01\xbb")             # destination port 443
V2_TCP6 = (SIG + b"\x21" + b"\x21" + b"\x00\x24"
           + b"\x20\x01\x0d\xb8" + b"\x00" * 11 + b"\x01"   # 2001:db8::1
           + b"\x20\x01\x0d\xb8" + b"\x00" * 11 + b"\x02"   # 2001:db8::2
           + b"\xdc\x04" + b"\x01\xbb")
V2_UNIX = (SIG + b"\x21" + b"\x31" + b"\x00\xd8"             # 216 bytes
           + b"/run/haproxy.sock".ljust(108, b"\x00")
           + b"/run/app.sock".ljust(108, b"\x00"))
V2_UNIX_ABSTRACT_AND_EMPTY = (SIG + b"\x21\x31\x00\xd8"
                              + b"\x00lb-socket".ljust(108, b"\x00") + b"\x00" * 108)
V2_LOCAL = SIG + b"\x20" + b"\x00" + b"\x00\x00"  # HAProxy's health check
# LOCAL may carry a family and addresses: they are ignored.
V2_LOCAL_WITH_ADDRESSES = SIG + b"\x20\x11\x00\x0c" + V2_TCP4[16:]
V2_UNSPEC = SIG + b"\x21\x00\x00\x00"
# TLVs after the addresses: AWS NLB's VPC endpoint id (0xEA, subtype 0x01), ALPN (0x01),
# authority (0x02), a NOOP (0x04) and an SSL TLV (0x20) with a version sub-TLV (0x21).
_TLVS = (b"\xea\x00\x17\x01" + b"vpce-08d2bf15fac5001c9"
         + b"\x01\x00\x02" + b"h2"
         + b"\x02\x00\x0b" + b"example.com"
         + b"\x04\x00\x03" + b"\x00\x00\x00"
         + b"\x20\x00\x0f" + b"\x01" + b"\x00\x00\x00\x00" + b"\x21\x00\x07" + b"TLSv1.3")
V2_TCP4_TLVS = (SIG + b"\x21\x11" + (12 + len(_TLVS)).to_bytes(2, "big")
                + V2_TCP4[16:] + _TLVS)
V2_UNSPEC_TLVS = SIG + b"\x21\x00" + len(_TLVS).to_bytes(2, "big") + _TLVS

T4 = (("192.0.2.1", 56324), ("198.51.100.7", 443))
T6 = (("2001:db8::1", 56324), ("2001:db8::2", 443))

VALID = {
    "v1 TCP4": (V1_TCP4, ProxyInfo(*T4, 1, "PROXY")),
    "v1 TCP6": (V1_TCP6, ProxyInfo(*T6, 1, "PROXY")),
    "v1 TCP6 longest": (V1_TCP6_LONGEST, ProxyInfo(
        ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535),
        ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535), 1, "PROXY")),
    "v1 ports 0": (b"PROXY TCP4 10.0.0.1 10.0.0.2 0 0\r\n",
                   ProxyInfo(("10.0.0.1", 0), ("10.0.0.2", 0), 1, "PROXY")),
    "v1 TCP6 v4-mapped": (b"PROXY TCP6 ::ffff:192.0.2.1 ::1 1 2\r\n",
                          ProxyInfo(("::ffff:c000:201", 1), ("::1", 2), 1, "PROXY")),
    "v1 UNKNOWN": (V1_UNKNOWN, ProxyInfo(None, None, 1, "UNKNOWN")),
    "v1 UNKNOWN longest": (V1_UNKNOWN_LONGEST, ProxyInfo(None, None, 1, "UNKNOWN")),
    "v1 UNKNOWN garbage": (b"PROXY UNKNOWN whatever \xff the sender likes\r\n",
                           ProxyInfo(None, None, 1, "UNKNOWN")),
    "v2 TCP4": (V2_TCP4, ProxyInfo(*T4, 2, "PROXY")),
    "v2 TCP6": (V2_TCP6, ProxyInfo(*T6, 2, "PROXY")),
    "v2 unix": (V2_UNIX, ProxyInfo(("/run/haproxy.sock", 0), ("/run/app.sock", 0), 2, "PROXY")),
    "v2 unix abstract, empty": (V2_UNIX_ABSTRACT_AND_EMPTY,
                                ProxyInfo(("\x00lb-socket", 0), None, 2, "PROXY")),
    "v2 LOCAL": (V2_LOCAL, ProxyInfo(None, None, 2, "LOCAL")),
    "v2 LOCAL with addresses": (V2_LOCAL_WITH_ADDRESSES, ProxyInfo(None, None, 2, "LOCAL")),
    "v2 UNSPEC": (V2_UNSPEC, ProxyInfo(None, None, 2, "UNKNOWN")),
    "v2 TCP4 TLVs": (V2_TCP4_TLVS, ProxyInfo(*T4, 2, "PROXY")),
    "v2 UNSPEC TLVs": (V2_UNSPEC_TLVS, ProxyInfo(None, None, 2, "UNKNOWN")),
}


def mode_of(header: bytes) -> str:
    return "v1" if header.startswith(b"PROXY ") else "v2"


# ------------------------------------------------------------------ feeding helpers


def run(mode: str, chunks: list[bytes], eof: bool = True) -> tuple:
    """Feed ``chunks`` (then EOF): ("ok", info with every byte after the header in rest),
    ("error", reason) or ("more",)."""
    reader = ProxyHeaderReader(mode)
    for i, chunk in enumerate(chunks):
        assert chunk, "an empty chunk would be EOF"
        try:
            result = reader.feed(chunk)
        except ProxyHeaderError as err:
            return ("error", err.reason)
        if result is not NEED_MORE:
            assert isinstance(result, ProxyInfo)
            later = b"".join(chunks[i + 1 :])
            return ("ok", dataclasses.replace(result, rest=result.rest + later))
    if eof:
        try:
            result = reader.feed(b"")
        except ProxyHeaderError as err:
            return ("error", err.reason)
        assert isinstance(result, ProxyInfo)
        return ("ok", result)
    return ("more",)


def splits(data: bytes) -> list[list[bytes]]:
    """Whole, a byte at a time, at every position, and in three at a few."""
    ways = [[data], [data[i : i + 1] for i in range(len(data))]]
    ways += [[data[:i], data[i:]] for i in range(1, len(data))]
    ways += [[data[:i], data[i : i + 7], data[i + 7 :]] for i in range(1, len(data) - 7, 5)]
    return ways


def outcome(mode: str, data: bytes, eof: bool = True) -> tuple:
    """The outcome of ``data``, asserted to be the same however it is split."""
    first = run(mode, [data], eof) if data else run(mode, [], eof)
    for chunks in splits(data)[1:]:
        assert run(mode, chunks, eof) == first, (mode, [len(c) for c in chunks])
    return first


def error(mode: str, data: bytes, eof: bool = True) -> str:
    result = outcome(mode, data, eof)
    assert result[0] == "error", result
    return result[1]


# ------------------------------------------------------------------ valid headers


@pytest.mark.parametrize("name", list(VALID))
@pytest.mark.parametrize("after", [b"", HTTP], ids=["alone", "with-http"])
def test_valid_headers_every_split(name: str, after: bytes) -> None:
    header, expected = VALID[name]
    expected = dataclasses.replace(expected, rest=after)
    for mode in (mode_of(header), "auto"):
        assert outcome(mode, header + after) == ("ok", expected), mode


def test_rest_is_what_came_in_the_same_feed() -> None:
    reader = ProxyHeaderReader("v1")
    assert reader.feed(V1_TCP4[:20]) is NEED_MORE
    info = reader.feed(V1_TCP4[20:] + HTTP)
    assert isinstance(info, ProxyInfo)
    assert info.rest == HTTP
    reader = ProxyHeaderReader("v2")
    info = reader.feed(V2_TCP4_TLVS + b"\r\n\r\n\x00\r\nQUIT\n")  # looks like a header; is HTTP's
    assert isinstance(info, ProxyInfo)
    assert info.rest == b"\r\n\r\n\x00\r\nQUIT\n"


def test_header_sizes_are_the_specs() -> None:
    assert len(SIG) == 12 and SIG == V2_SIGNATURE
    assert len(V1_UNKNOWN_LONGEST) == MAX_V1_LENGTH == 107
    assert len(V1_TCP6_LONGEST) == 104
    assert len(V2_TCP4) == 16 + 12 and len(V2_TCP6) == 16 + 36 and len(V2_UNIX) == 16 + 216


def test_result_is_frozen_and_done_is_done() -> None:
    reader = ProxyHeaderReader("auto")
    info = reader.feed(V2_TCP4)
    assert isinstance(info, ProxyInfo)
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.source = None  # type: ignore[misc]
    with pytest.raises(RuntimeError):
        reader.feed(HTTP)


def test_errors_are_sticky() -> None:
    reader = ProxyHeaderReader("v1")
    with pytest.raises(ProxyHeaderError) as first:
        reader.feed(b"GET /")
    with pytest.raises(ProxyHeaderError) as again:
        reader.feed(V1_TCP4)
    assert again.value is first.value
    assert str(first.value) == first.value.reason


def test_unknown_mode_is_refused() -> None:
    assert PROXY_PROTOCOL_MODES == ("v1", "v2", "auto")
    with pytest.raises(ValueError, match="expected v1, v2 or auto"):
        ProxyHeaderReader("v3")


# ------------------------------------------------------------------ truncated, EOF


@pytest.mark.parametrize("name", list(VALID))
def test_truncated_headers_need_more_then_fail_at_eof(name: str) -> None:
    header = VALID[name][0]
    for mode in (mode_of(header), "auto"):
        for k in range(len(header)):
            assert run(mode, [header[:k]] if k else [], eof=False) == ("more",)
        for k in range(1, len(header), 7):  # every split of a few prefixes
            assert error(mode, header[:k]) == (
                f"connection closed after {k} bytes, before the PROXY header was complete")


def test_eof_before_any_byte() -> None:
    for mode in PROXY_PROTOCOL_MODES:
        assert error(mode, b"") == "connection closed before a PROXY header"


# ------------------------------------------------------------------ garbage, mixed versions


@pytest.mark.parametrize("mode", PROXY_PROTOCOL_MODES)
def test_garbage_is_refused_at_its_first_byte(mode: str) -> None:
    what = "PROXY protocol header" if mode == "auto" else f"PROXY protocol {mode} header"
    assert error(mode, HTTP, eof=False) == f"not a {what} (starts b'G')"
    assert error(mode, b"\x16\x03\x01\x02\x00", eof=False) == f"not a {what} (starts b'\\x16')"
    assert error(mode, b"PROXY\r\n", eof=False) == f"not a {what} (starts b'PROXY\\r')"
    assert error(mode, b"proxy TCP4", eof=False) == f"not a {what} (starts b'p')"
    assert error(mode, b"\r\n\r\n\x00\r\nQUIZ\n", eof=False) == (
        f"not a {what} (starts b'\\r\\n\\r\\n\\x00\\r\\nQUIZ')")
    assert error(mode, b"\r\nGET", eof=False) == f"not a {what} (starts b'\\r\\nG')"


def test_one_byte_decides_garbage() -> None:
    for mode in PROXY_PROTOCOL_MODES:
        with pytest.raises(ProxyHeaderError):
            ProxyHeaderReader(mode).feed(b"G")


@pytest.mark.parametrize("header", [V1_TCP4, V1_UNKNOWN])
def test_v1_header_when_v2_is_expected(header: bytes) -> None:
    assert error("v2", header + HTTP) == "a PROXY protocol v1 header where v2 is expected"
    reader = ProxyHeaderReader("v2")  # decided on "PROXY ", not later
    assert reader.feed(b"PROXY") is NEED_MORE
    with pytest.raises(ProxyHeaderError):
        reader.feed(b" ")


@pytest.mark.parametrize("header", [V2_TCP4, V2_LOCAL])
def test_v2_header_when_v1_is_expected(header: bytes) -> None:
    assert error("v1", header + HTTP) == "a PROXY protocol v2 header where v1 is expected"
    reader = ProxyHeaderReader("v1")  # decided on the 12th byte of the signature
    assert reader.feed(header[:11]) is NEED_MORE
    with pytest.raises(ProxyHeaderError):
        reader.feed(header[11:12])


# ------------------------------------------------------------------ v1 errors


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"PROXY TCP4 192.0.2.1 198.51.100.7 56324 443\n",
         "PROXY v1 line ends with a bare LF, not CRLF"),
        (b"PROXY UDP4 192.0.2.1 198.51.100.7 1 2\r\n", "PROXY v1: unknown protocol b'UDP4'"),
        (b"PROXY tcp4 192.0.2.1 198.51.100.7 1 2\r\n", "PROXY v1: unknown protocol b'tcp4'"),
        (b"PROXY UNKNOWNX\r\n", "PROXY v1: unknown protocol b'UNKNOWNX'"),
        (b"PROXY \r\n", "PROXY v1: unknown protocol b''"),
        (b"PROXY  TCP4 192.0.2.1 198.51.100.7 1 2\r\n", "PROXY v1: unknown protocol b''"),
        (b"PROXY TCP4 192.0.2.1 198.51.100.7 1\r\n",
         "PROXY v1: expected 'PROXY TCP4 SRC DST SPORT DPORT', "
         "got b'PROXY TCP4 192.0.2.1 198.51.100.7 1'"),
        (b"PROXY TCP4 192.0.2.1 198.51.100.7 1 2 \r\n",
         "PROXY v1: expected 'PROXY TCP4 SRC DST SPORT DPORT', "
         "got b'PROXY TCP4 192.0.2.1 198.51.100.7 1 2 '"),
        (b"PROXY TCP4 192.0.2.1  198.51.100.7 1 2\r\n",
         "PROXY v1: expected 'PROXY TCP4 SRC DST SPORT DPORT', "
         "got b'PROXY TCP4 192.0.2.1  198.51.100.7 1 2'"),
        (b"PROXY TCP4 2001:db8::1 198.51.100.7 1 2\r\n",
         "PROXY v1: source address b'2001:db8::1' is not an IPv4 address"),
        (b"PROXY TCP6 2001:db8::1 198.51.100.7 1 2\r\n",
         "PROXY v1: destination address b'198.51.100.7' is not an IPv6 address"),
        (b"PROXY TCP4 192.0.2.01 198.51.100.7 1 2\r\n",
         "PROXY v1: source address b'192.0.2.01' is not an IPv4 address"),
        (b"PROXY TCP4 192.0.2.256 198.51.100.7 1 2\r\n",
         "PROXY v1: source address b'192.0.2.256' is not an IPv4 address"),
        (b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n",
         "PROXY v1: source address b'fe80::1%eth0' is not an IPv6 address"),
        (b"PROXY TCP4 192.0.\xc3\xa92.1 198.51.100.7 1 2\r\n",
         "PROXY v1: source address b'192.0.\\xc3\\xa92.1' is not an IPv4 address"),
        (b"PROXY TCP4 192.0.2.1 198.51.100.7 +80 2\r\n",
         "PROXY v1: source port b'+80' is not 0..65535"),
        (b"PROXY TCP4 192.0.2.1 198.51.100.7 080 2\r\n",
         "PROXY v1: source port b'080' is not 0..65535"),
        (b"PROXY TCP4 192.0.2.1 198.51.100.7 80 65536\r\n",
         "PROXY v1: destination port b'65536' is not 0..65535"),
        (b"PROXY TCP4 192.0.2.1 198.51.100.7 80 -1\r\n",
         "PROXY v1: destination port b'-1' is not 0..65535"),
        (b"PROXY TCP4 192.0.2.1 198.51.100.7 80 \xd9\xa1\r\n",
         "PROXY v1: destination port b'\\xd9\\xa1' is not 0..65535"),
        (b"PROXY TCP4 192.0.2.1 198.51.100.7 80 2\r\r\n",
         "PROXY v1: destination port b'2\\r' is not 0..65535"),
    ],
)  # fmt: skip
def test_v1_bad_lines(line: bytes, reason: str) -> None:
    for mode in ("v1", "auto"):
        assert error(mode, line + HTTP) == reason


def test_v1_too_long_is_decided_at_107_bytes() -> None:
    line = b"PROXY UNKNOWN " + b"x" * 200
    reason = f"PROXY v1 line longer than {MAX_V1_LENGTH} bytes"
    for mode in ("v1", "auto"):
        reader = ProxyHeaderReader(mode)
        assert reader.feed(line[:106]) is NEED_MORE
        with pytest.raises(ProxyHeaderError, match="longer than 107"):
            reader.feed(line[106:107])
        assert error(mode, line, eof=False) == reason
        # 108 bytes, the CRLF at the end: one byte too many, refused before the LF arrives
        assert error(mode, V1_UNKNOWN_LONGEST[:-2] + b"x\r\n" + HTTP) == reason
        assert error(mode, (V1_UNKNOWN_LONGEST[:-2] + b"x\r")) == reason


# ------------------------------------------------------------------ v2 errors


def v2(ver_cmd: int, fam: int, payload: bytes = b"", length: int | None = None) -> bytes:
    size = len(payload) if length is None else length
    return SIG + bytes([ver_cmd, fam]) + size.to_bytes(2, "big") + payload


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (v2(0x11, 0x11, V2_TCP4[16:]), "PROXY v2: unsupported version 1 (byte 0x11)"),
        (v2(0x31, 0x11, V2_TCP4[16:]), "PROXY v2: unsupported version 3 (byte 0x31)"),
        (v2(0x01, 0x11, V2_TCP4[16:]), "PROXY v2: unsupported version 0 (byte 0x01)"),
        (v2(0x22, 0x11, V2_TCP4[16:]), "PROXY v2: unknown command 2"),
        (v2(0x2F, 0x11, V2_TCP4[16:]), "PROXY v2: unknown command 15"),
        (v2(0x21, 0x12, V2_TCP4[16:]),
         "PROXY v2: a datagram (IPv4) connection; only streams are served"),
        (v2(0x21, 0x22, V2_TCP6[16:]),
         "PROXY v2: a datagram (IPv6) connection; only streams are served"),
        (v2(0x21, 0x32, V2_UNIX[16:]),
         "PROXY v2: a datagram (unix) connection; only streams are served"),
        (v2(0x21, 0x41, V2_TCP4[16:]), "PROXY v2: unknown address family/transport 0x41"),
        (v2(0x21, 0x13, V2_TCP4[16:]), "PROXY v2: unknown address family/transport 0x13"),
        (v2(0x21, 0x10, V2_TCP4[16:]), "PROXY v2: unknown address family/transport 0x10"),
        (v2(0x21, 0x01), "PROXY v2: unknown address family/transport 0x01"),
        (v2(0x21, 0x02), "PROXY v2: unknown address family/transport 0x02"),
        (v2(0x21, 0x11, V2_TCP4[16:24]),
         "PROXY v2: length 8 is too short for the IPv4 addresses (12 bytes)"),
        (v2(0x21, 0x21, V2_TCP4[16:]),
         "PROXY v2: length 12 is too short for the IPv6 addresses (36 bytes)"),
        (v2(0x21, 0x31, V2_UNIX[16:-1]),
         "PROXY v2: length 215 is too short for the unix addresses (216 bytes)"),
        (v2(0x21, 0x11, V2_TCP4[16:] + b"\x04\x00"),
         "PROXY v2: 2 stray bytes after the last TLV"),
        (v2(0x21, 0x11, V2_TCP4[16:] + b"\x04\x00\x05abcd"),
         "PROXY v2: TLV type 0x04 of 5 bytes overruns the header"),
        (v2(0x21, 0x00, b"\x01\x00\x02h2\x02\x00\x09abc"),
         "PROXY v2: TLV type 0x02 of 9 bytes overruns the header"),
    ],
)  # fmt: skip
def test_v2_bad_headers(header: bytes, reason: str) -> None:
    for mode in ("v2", "auto"):
        assert error(mode, header + HTTP) == reason


@pytest.mark.parametrize(("byte", "fed"), [(12, 0x31), (12, 0x23), (13, 0x12), (13, 0x51)])
def test_v2_fixed_fields_are_decided_on_their_byte(byte: int, fed: int) -> None:
    header = bytearray(V2_TCP4)
    header[byte] = fed
    reader = ProxyHeaderReader("v2")
    assert reader.feed(bytes(header[:byte])) is NEED_MORE
    with pytest.raises(ProxyHeaderError):
        reader.feed(bytes(header[byte : byte + 1]))


def test_v2_length_over_the_cap_is_refused_on_the_length_field() -> None:
    reason = f"PROXY v2: length {MAX_V2_LENGTH + 1} is over the {MAX_V2_LENGTH}-byte limit"
    for length in (MAX_V2_LENGTH + 1, 65535):
        header = v2(0x21, 0x11, length=length)
        reader = ProxyHeaderReader("v2")
        assert reader.feed(header[:15]) is NEED_MORE
        with pytest.raises(ProxyHeaderError, match="over the 4096-byte limit"):
            reader.feed(header[15:16])
    assert error("auto", v2(0x21, 0x11, length=MAX_V2_LENGTH + 1) + b"\x00" * 64) == reason
    # LOCAL too: its block is skipped, but still bounded.
    assert error("v2", v2(0x20, 0x00, length=MAX_V2_LENGTH + 1)) == reason


def test_v2_length_at_the_cap_is_read() -> None:
    padding = MAX_V2_LENGTH - 12 - 3
    header = v2(0x21, 0x11, V2_TCP4[16:] + b"\x04" + padding.to_bytes(2, "big")
                + b"\x00" * padding)
    assert len(header) == 16 + MAX_V2_LENGTH
    reader = ProxyHeaderReader("v2")
    info = reader.feed(header + HTTP)
    assert info == ProxyInfo(*T4, 2, "PROXY", HTTP)


def test_v2_local_skips_whatever_follows_unread() -> None:
    # LOCAL: "discard the protocol block including the family": even a DGRAM family,
    # and bytes that are no TLVs.
    for fam in (0x00, 0x12, 0x41, 0x31):
        header = v2(0x20, fam, b"\x99" * 5)
        assert outcome("v2", header + HTTP) == ("ok", ProxyInfo(None, None, 2, "LOCAL", HTTP))


# ------------------------------------------------------------------ the allow list


def test_allow_list_default_entries() -> None:
    allow = ProxyAllowList(("127.0.0.1", "::1"))
    assert allow.allows(("127.0.0.1", 40000))
    assert allow.allows(("::1", 40000, 0, 0))
    assert allow.allows(("::ffff:127.0.0.1", 40000, 0, 0))  # a dual-stack listener's view
    assert not allow.allows(("10.0.0.1", 40000))
    assert not allow.allows(("::2", 40000, 0, 0))
    assert not allow.allows(("not an ip", 1))
    assert not allow.allows(None)
    assert not allow.allows(())


def test_allow_list_networks_star_and_unix_peers() -> None:
    allow = ProxyAllowList(["10.0.0.0/8", "2001:db8::/32", "fe80::/10"])
    assert allow.allows(("10.1.2.3", 1))
    assert not allow.allows(("11.0.0.1", 1))
    assert allow.allows(("2001:db8::5", 1, 0, 0))
    assert allow.allows(("fe80::1%eth0", 1, 0, 2))
    assert not allow.allows(("127.0.0.1", 1))
    star = ProxyAllowList(["*"])
    assert star.allows(("203.0.113.9", 1)) and star.allows(("::1", 1, 0, 0))
    nobody = ProxyAllowList([])
    assert not nobody.allows(("127.0.0.1", 1))
    for unix_peer in ("", "/run/haproxy.sock", b"", b"\x00abstract"):
        assert nobody.allows(unix_peer)


def test_allow_list_refuses_bad_entries_and_bounds_its_cache() -> None:
    with pytest.raises(ValueError, match="proxy_allow_ips"):
        ProxyAllowList(["10.0.0.1", "nope"])
    allow = ProxyAllowList(["10.0.0.0/8"])
    for i in range(10000):
        assert allow.allows((f"10.{i >> 8 & 255}.{i & 255}.1", 1))
    assert 0 < len(allow._cache) <= 4096


# ------------------------------------------------------------------ settings reach the HTTP core


def test_http_settings_carry_the_proxy_protocol() -> None:
    settings = http_settings(load_config(env={}), "preforked")
    assert settings.proxy_protocol is None
    assert settings.proxy_allow_ips == ("127.0.0.1", "::1")
    cfg = load_config(env={"ARBITER_PROXY_PROTOCOL": "auto",
                           "ARBITER_PROXY_ALLOW_IPS": "10.0.0.0/8,::1"})
    settings = http_settings(cfg, "preforked")
    assert settings.proxy_protocol == "auto"
    assert settings.proxy_allow_ips == ("10.0.0.0/8", "::1")
    ProxyHeaderReader(settings.proxy_protocol)
    ProxyAllowList(settings.proxy_allow_ips)


# ------------------------------------------------------------------ mutated headers


def test_mutated_headers_fail_cleanly_and_split_independently() -> None:
    """Headers with a few bytes changed, dropped or added: a ProxyInfo or a
    ProxyHeaderError (nothing else escapes), the same under random splits."""
    import random

    rng = random.Random(20240601)
    headers = [header for header, _ in VALID.values()]
    for _ in range(3000):
        data = bytearray(rng.choice(headers) + HTTP)
        for _ in range(rng.randint(1, 3)):
            i, op = rng.randrange(len(data)), rng.random()
            if op < 0.5:
                data[i] = rng.randrange(256)
            elif op < 0.75:
                del data[i]
            else:
                data.insert(i, rng.randrange(256))
        blob = bytes(data)
        cuts = sorted(rng.sample(range(1, len(blob)), 3))
        chunks = [blob[a:b] for a, b in zip([0, *cuts], [*cuts, len(blob)], strict=True)]
        for mode in PROXY_PROTOCOL_MODES:
            assert run(mode, chunks) == run(mode, [blob]), (mode, blob, cuts)
