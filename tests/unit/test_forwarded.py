"""Proxy headers without sockets: the chain walk, the RFC 7239 parser, the one trusted
header family, and SCRIPT_NAME from a trusted proxy -- as the app's environ shows them."""

from __future__ import annotations

import logging

import pytest

from arbiter.http import EMPTY_INPUT, HTTPConnection, HTTPSettings, Request, WSGIHandler
from arbiter.http.forwarded import ProxyTrust, parse_forwarded, parse_node, script_name_prefix

pytestmark = pytest.mark.timeout(5)

LOG = logging.getLogger("test.http.forwarded")
PROXIES = ("127.0.0.1", "10.0.0.0/8")  # the proxy in front of us, and an internal tier


def environ(headers: list[tuple[str, str]], path: str = "/", peer=("127.0.0.1", 40000),
            sockname=("127.0.0.1", 8000), **settings) -> dict:
    raw = f"GET {path} HTTP/1.1\r\nHost: app.example\r\n".encode("latin-1")
    raw += b"".join(f"{k}: {v}\r\n".encode("latin-1") for k, v in headers) + b"\r\n"
    conn = HTTPConnection(HTTPSettings())
    conn.receive_data(raw)
    request = conn.next_event()
    assert isinstance(request, Request), request
    handler = WSGIHandler(lambda e, s: [], HTTPSettings(**settings), LOG)
    return handler.build_environ(request, handler.connection_info(peer, sockname), EMPTY_INPUT)


def client(xff: str | list[str], allow=PROXIES, peer=("127.0.0.1", 40000)) -> str:
    lines = [xff] if isinstance(xff, str) else xff
    env = environ([("X-Forwarded-For", v) for v in lines], peer=peer, forwarded_allow_ips=allow)
    return env["REMOTE_ADDR"]


# -- addresses -----------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "addr"), [
    ("1.2.3.4", "1.2.3.4"),
    ("  1.2.3.4 ", "1.2.3.4"),
    ("1.2.3.4:5678", "1.2.3.4"),
    ("::1", "::1"),
    ("2001:DB8:0:0::1", "2001:db8::1"),
    ("[::1]", "::1"),
    ("[::1]:80", "::1"),
    ("[2001:db8::1]:4711", "2001:db8::1"),
    ("::ffff:192.0.2.1", "192.0.2.1"),
    ("[::ffff:192.0.2.1]:80", "192.0.2.1"),
])
def test_parse_node_accepts_addresses(text: str, addr: str) -> None:
    assert parse_node(text) == addr


@pytest.mark.parametrize("text", [
    "", " ", "<script>x</script>", "unknown", "_hidden", "example.com", "1.2.3", "1.2.3.4.5",
    "1.2.3.4:", "1.2.3.4:99999", "1.2.3.4:80:80", "1.2.3.4:_obf", "[::1", "[::1]x", "[::1]:",
    "[1.2.3.4]", "::1]:80", "1.2.3.4 5.6.7.8", '"1.2.3.4"', "\u0661.2.3.4", "1.2.3.\xb2",
    "01.2.3.4",
])
def test_parse_node_refuses_the_rest(text: str) -> None:
    assert parse_node(text) is None


def test_parse_node_obfuscated_port_only_when_asked() -> None:
    assert parse_node("1.2.3.4:_obf", obfuscated_port=True) == "1.2.3.4"
    assert parse_node("[::1]:_p-1", obfuscated_port=True) == "::1"
    assert parse_node("_hidden:_obf", obfuscated_port=True) is None


# -- the X-Forwarded-For chain ---------------------------------------------------------------
def test_rightmost_untrusted_is_the_client() -> None:
    assert client("198.51.100.1, 10.1.2.3") == "198.51.100.1"  # 10.1.2.3 is our internal tier
    assert client("6.6.6.6, 198.51.100.1, 10.1.2.3") == "198.51.100.1"  # 6.6.6.6: client-sent
    assert client("6.6.6.6, 1.2.3.4", allow=("127.0.0.1",)) == "1.2.3.4"


def test_all_trusted_takes_the_leftmost() -> None:
    assert client("10.0.0.1, 10.0.0.2, 127.0.0.1") == "10.0.0.1"
    assert client("127.0.0.1") == "127.0.0.1"


def test_header_lines_are_joined_in_order() -> None:
    assert client(["198.51.100.1", "10.1.2.3"]) == "198.51.100.1"
    assert client(["10.1.2.3", "198.51.100.1"]) == "198.51.100.1"
    assert client(["6.6.6.6", "198.51.100.1, 10.9.9.9"]) == "198.51.100.1"


def test_ports_ipv6_and_brackets() -> None:
    assert client("203.0.113.9:5678") == "203.0.113.9"
    assert client("[2001:db8::1]:443, 10.0.0.1") == "2001:db8::1"
    assert client("2001:DB8::2") == "2001:db8::2"
    assert client("::ffff:10.0.0.1, 198.51.100.7") == "198.51.100.7"
    # an IPv4-mapped hop is matched against the IPv4 networks
    assert client("198.51.100.7, ::ffff:10.0.0.1") == "198.51.100.7"


@pytest.mark.parametrize(("xff", "expected"), [
    ("<script>x</script>", "127.0.0.1"),  # the peer: nothing we could verify
    ("1.2.3.4, <script>x</script>", "127.0.0.1"),  # walking stops at the garbage
    ("6.6.6.6, <script>x</script>, 10.0.0.5", "10.0.0.5"),  # the last trusted hop
    ("1.2.3.4,", "127.0.0.1"),  # an empty entry is not an address either
    ("1.2.3.4, unknown", "127.0.0.1"),
    ('"1.2.3.4"', "127.0.0.1"),
])
def test_invalid_entries_are_never_copied(xff: str, expected: str) -> None:
    assert client(xff) == expected


def test_invalid_entry_is_logged_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger=LOG.name):
        assert client("<script>x</script>") == "127.0.0.1"
    assert any("<script>x</script>" in r.getMessage() and r.levelno == logging.DEBUG
               for r in caplog.records)


def test_untrusted_peer_gets_nothing_applied() -> None:
    env = environ([("X-Forwarded-For", "203.0.113.7"), ("X-Forwarded-Proto", "https")],
                  peer=("127.0.0.1", 1), forwarded_allow_ips=("10.0.0.0/8",))
    assert env["REMOTE_ADDR"] == "127.0.0.1" and env["wsgi.url_scheme"] == "http"
    assert env["HTTP_X_FORWARDED_FOR"] == "203.0.113.7"  # still there, as a plain header


def test_star_trusts_every_peer_but_no_hop() -> None:
    """``"*"``: anyone may send the headers, but a client can't name itself by
    prepending addresses: the rightmost entry is the client."""
    assert client("6.6.6.6, 1.2.3.4", allow=("*",), peer=("8.8.8.8", 1)) == "1.2.3.4"
    assert client("6.6.6.6, 10.0.0.9", allow=("*", "10.0.0.0/8"),
                  peer=("8.8.8.8", 1)) == "6.6.6.6"


@pytest.mark.parametrize(("values", "scheme"), [
    (["https"], "https"),
    (["HTTPS"], "https"),
    (["https, http"], "http"),  # the rightmost: what the proxy next to us saw
    (["http", "https"], "https"),
    (["ftp"], "http"),
    (["https, javascript"], "http"),
])
def test_x_forwarded_proto(values: list[str], scheme: str) -> None:
    env = environ([("X-Forwarded-Proto", v) for v in values])
    assert env["wsgi.url_scheme"] == scheme


# -- RFC 7239 ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("value", "elements"), [
    ("for=1.2.3.4", [{"for": "1.2.3.4"}]),
    ("For=1.2.3.4;PROTO=https;by=_proxy", [{"for": "1.2.3.4", "proto": "https", "by": "_proxy"}]),
    ('for="[2001:db8::1]:4711", for=10.0.0.1',
     [{"for": "[2001:db8::1]:4711"}, {"for": "10.0.0.1"}]),
    ('for="1.2.3.4:80";host="a,b;c=d"', [{"for": "1.2.3.4:80", "host": "a,b;c=d"}]),
    ('for=1.2.3.4;note="say \\"hi\\", for=6.6.6.6"',
     [{"for": "1.2.3.4", "note": 'say "hi", for=6.6.6.6'}]),
    ('for="\\1\\.2.3.4"', [{"for": "1.2.3.4"}]),
    ("for=1.2.3.4 ; proto=http ,for=5.6.7.8", [{"for": "1.2.3.4", "proto": "http"},
                                              {"for": "5.6.7.8"}]),
    (", for=1.2.3.4,, ;", [{"for": "1.2.3.4"}]),  # empty list elements and pairs
    ('for=""', [{"for": ""}]),
    ("", []),
])
def test_parse_forwarded(value: str, elements: list[dict[str, str]]) -> None:
    assert parse_forwarded(value) == elements


@pytest.mark.parametrize("value", [
    "for=", "for", "=1.2.3.4", "for = 1.2.3.4", "for =1.2.3.4", "for=1.2.3.4 5.6.7.8",
    'for="1.2.3.4', 'for="1.2.3.4\\"', 'for=1.2.3.4"', "for=[::1]", "for=1.2.3.4:80",
    "for=1.2.3.4;for=5.6.7.8", "for=<script>", "for=a/b", 'for="a"b', "for=1.2.3.4;;x",
])
def test_parse_forwarded_malformed(value: str) -> None:
    assert parse_forwarded(value) is None


def forwarded_env(value: str | list[str], allow=PROXIES, **kw) -> dict:
    lines = [value] if isinstance(value, str) else value
    return environ([("Forwarded", v) for v in lines], forwarded_allow_ips=allow,
                   forwarded_headers="forwarded", **kw)


def test_forwarded_chain_and_its_proto() -> None:
    env = forwarded_env("for=198.51.100.1;proto=https, for=10.1.2.3;proto=http")
    assert env["REMOTE_ADDR"] == "198.51.100.1"
    assert env["wsgi.url_scheme"] == "https"  # the proto of the element that named the client
    env = forwarded_env("for=6.6.6.6;proto=https, for=198.51.100.1")
    assert env["REMOTE_ADDR"] == "198.51.100.1" and env["wsgi.url_scheme"] == "http"
    env = forwarded_env(['for="[2001:db8::1]:4711";proto=HTTPS', "for=10.0.0.2"])
    assert env["REMOTE_ADDR"] == "2001:db8::1" and env["wsgi.url_scheme"] == "https"
    env = forwarded_env("for=10.0.0.1;proto=https, for=10.0.0.2")
    assert env["REMOTE_ADDR"] == "10.0.0.1" and env["wsgi.url_scheme"] == "https"  # all trusted
    env = forwarded_env('for="1.2.3.4:_obf";proto=ftp')
    assert env["REMOTE_ADDR"] == "1.2.3.4" and env["wsgi.url_scheme"] == "http"


@pytest.mark.parametrize(("value", "addr"), [
    ("for=unknown", "127.0.0.1"),
    ("for=_hidden", "127.0.0.1"),
    ("for=198.51.100.1, for=_hidden", "127.0.0.1"),  # the walk stops: not copied, not passed
    ("for=198.51.100.1, for=unknown, for=10.0.0.3", "10.0.0.3"),
    ("proto=https", "127.0.0.1"),  # no for=: nothing verifiable
    ('for="<script>x</script>"', "127.0.0.1"),
    ('for="1.2.3.4:80";note="x, for=6.6.6.6"', "1.2.3.4"),  # a quoted comma is not a hop
])
def test_forwarded_stops_at_what_is_not_an_ip(value: str, addr: str) -> None:
    env = forwarded_env(value)
    assert env["REMOTE_ADDR"] == addr
    assert env["wsgi.url_scheme"] == "http"


def test_malformed_forwarded_is_ignored_entirely(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger=LOG.name):
        env = forwarded_env("for=198.51.100.1;proto=https, for=<script>")
    assert env["REMOTE_ADDR"] == "127.0.0.1" and env["wsgi.url_scheme"] == "http"
    assert any("malformed" in r.getMessage() for r in caplog.records)


# -- one header family -------------------------------------------------------------------------
SPOOF = [("Forwarded", "for=6.6.6.6;proto=https"), ("X-Forwarded-For", "203.0.113.7"),
         ("X-Forwarded-Proto", "http")]


def test_x_forwarded_mode_ignores_forwarded() -> None:
    """The measured spoof: nginx passes the client's Forwarded through untouched."""
    env = environ(SPOOF)
    assert env["REMOTE_ADDR"] == "203.0.113.7" and env["wsgi.url_scheme"] == "http"
    assert env["HTTP_FORWARDED"] == "for=6.6.6.6;proto=https"  # left as a plain header
    env = environ([("Forwarded", "for=6.6.6.6;proto=https")])
    assert env["REMOTE_ADDR"] == "127.0.0.1" and env["wsgi.url_scheme"] == "http"


def test_forwarded_mode_ignores_x_forwarded() -> None:
    env = environ([("Forwarded", "for=203.0.113.7;proto=http"), ("X-Forwarded-For", "6.6.6.6"),
                   ("X-Forwarded-Proto", "https")], forwarded_headers="forwarded")
    assert env["REMOTE_ADDR"] == "203.0.113.7" and env["wsgi.url_scheme"] == "http"
    env = environ([("X-Forwarded-For", "6.6.6.6"), ("X-Forwarded-Proto", "https")],
                  forwarded_headers="forwarded")
    assert env["REMOTE_ADDR"] == "127.0.0.1" and env["wsgi.url_scheme"] == "http"
    assert env["HTTP_X_FORWARDED_FOR"] == "6.6.6.6"


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="forwarded_headers"):
        ProxyTrust(("127.0.0.1",), "both")


def test_unix_socket_peer_is_trusted() -> None:
    env = environ(SPOOF, peer="", sockname="/run/app.sock")
    assert env["REMOTE_ADDR"] == "203.0.113.7" and env["wsgi.url_scheme"] == "http"


def test_parsed_chain_entries_are_cached() -> None:
    trust = ProxyTrust(PROXIES)
    assert trust.node(" 10.0.0.1") == ("10.0.0.1", True)
    assert trust.node(" 10.0.0.1") is trust.node(" 10.0.0.1")
    assert trust.node("198.51.100.1") == ("198.51.100.1", False)
    assert trust.node("junk") == (None, False)
    assert trust.peer_trusted("10.1.1.1") and not trust.peer_trusted("192.0.2.1")
    assert trust.peer_trusted("::ffff:127.0.0.1")


# -- SCRIPT_NAME -------------------------------------------------------------------------------
def test_script_name_prefix() -> None:
    assert script_name_prefix("/app") == "/app"
    assert script_name_prefix("/app/") == "/app"
    assert script_name_prefix("/") == ""
    assert script_name_prefix("app") is None
    assert script_name_prefix("") is None


@pytest.mark.parametrize("name", ["SCRIPT_NAME", "script_name", "Script_Name"])
def test_script_name_header_from_a_trusted_proxy(name: str) -> None:
    env = environ([(name, "/prefix/")], path="/prefix/x/y?q=1")
    assert env["SCRIPT_NAME"] == "/prefix" and env["PATH_INFO"] == "/x/y"
    assert env["QUERY_STRING"] == "q=1"
    assert "HTTP_SCRIPT_NAME" not in env
    env = environ([(name, "/prefix")], path="/prefix")
    assert env["SCRIPT_NAME"] == "/prefix" and env["PATH_INFO"] == ""


def test_script_name_header_edge_cases() -> None:
    env = environ([("SCRIPT_NAME", "/prefix")], path="/prefixed/x")  # not under the prefix
    assert env["SCRIPT_NAME"] == "/prefix" and env["PATH_INFO"] == "/prefixed/x"
    env = environ([("SCRIPT_NAME", "prefix")], path="/prefix/x")  # must start with /
    assert env["SCRIPT_NAME"] == "" and env["PATH_INFO"] == "/prefix/x"
    env = environ([("SCRIPT_NAME", "/a"), ("SCRIPT_NAME", "/b")], path="/a/x")  # ambiguous
    assert env["SCRIPT_NAME"] == "" and env["PATH_INFO"] == "/a/x"
    env = environ([("SCRIPT_NAME", "/")], path="/x")
    assert env["SCRIPT_NAME"] == "" and env["PATH_INFO"] == "/x"
    env = environ([("SCRIPT_NAME", "/p"), ("PATH_INFO", "/evil"), ("X_Other", "1")],
                  path="/p/ok")
    assert env["PATH_INFO"] == "/ok"  # other underscore headers stay dropped
    assert "HTTP_X_OTHER" not in env and "HTTP_PATH_INFO" not in env
    env = environ([("SCRIPT_NAME", "/p")], path="/p/x", peer="", sockname="/run/app.sock")
    assert env["SCRIPT_NAME"] == "/p" and env["PATH_INFO"] == "/x"  # unix peer: trusted


def test_script_name_header_from_an_untrusted_peer_is_dropped() -> None:
    env = environ([("SCRIPT_NAME", "/prefix")], path="/prefix/x", peer=("192.0.2.1", 1))
    assert env["SCRIPT_NAME"] == "" and env["PATH_INFO"] == "/prefix/x"
    assert "HTTP_SCRIPT_NAME" not in env


def test_script_name_header_replaces_the_process_environment(monkeypatch) -> None:
    monkeypatch.setenv("SCRIPT_NAME", "/env")
    env = environ([], path="/env/x")
    assert env["SCRIPT_NAME"] == "/env" and env["PATH_INFO"] == "/x"
    env = environ([("SCRIPT_NAME", "/hdr")], path="/env/x")
    assert env["SCRIPT_NAME"] == "/hdr" and env["PATH_INFO"] == "/env/x"
    env = environ([("SCRIPT_NAME", "/hdr")], path="/hdr/x", peer=("192.0.2.1", 1))
    assert env["SCRIPT_NAME"] == "/env" and env["PATH_INFO"] == "/hdr/x"
