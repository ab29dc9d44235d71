"""TLS for every listener: the server-side ``ssl.SSLContext`` and the handshake helpers.

Owns :func:`server_context`, which turns the config's ``ssl`` section into a
context (``None`` when ``ssl.certfile`` is unset). The master builds it at
start and on every reload, so a bad certificate, key, CA file or cipher
string is a clean error naming the key and the file (exit 1 at start; the
reload is aborted and the old generation keeps serving on HUP). The workers
inherit the context through ``fork()``: session-ticket keys are shared by
every worker of a generation, so a client resumes its session whichever
worker it reaches.

Defaults: TLS 1.2 or newer, no compression, no renegotiation, the server's
cipher preference, ALPN ``http/1.1``, OpenSSL's default cipher list unless
``ssl.ciphers`` names one. ``ssl.ca_certs`` set -> every client must present a
certificate signed by one of those CAs (``CERT_REQUIRED``).

The handshake itself is the transports' (:mod:`arbiter.io.transport`): in
the serving thread or process for the blocking drivers, step by step on
readiness events in the reactor, within ``header_timeout`` of the accept
either way. :func:`wrap` makes the server-side socket; :func:`close_notify`
sends the TLS close alert without waiting for the peer's.
"""

from __future__ import annotations

import socket
import ssl
from typing import Any

__all__ = ["server_context", "wrap", "close_notify", "HANDSHAKE_ERRORS"]

# What a failed handshake (or a peer gone before it) raises.
HANDSHAKE_ERRORS = (OSError, ValueError)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        reason = getattr(exc, "reason", None)
        if reason == "PEM_LIB" or (exc.args and "PEM lib" in str(exc.args[-1])):
            return "no valid PEM data found (PEM lib)"
        if reason:
            return str(reason)
        return str(exc.args[-1] if exc.args else exc)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


def _readable(key: str, path: str) -> None:
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise ValueError(f"{key}: cannot load {path!r}: {_reason(exc)}") from None


class _EncryptedKey(Exception):
    pass


def _no_passphrase() -> str:
    # Never let OpenSSL prompt on the terminal for a passphrase.
    raise _EncryptedKey


def server_context(ssl_cfg: Any) -> ssl.SSLContext | None:
    """The server-side context for the config's ``ssl`` section; None without a certfile.

    Raises ValueError with a message naming the key and the file on any problem.
    """
    certfile = ssl_cfg.certfile
    keyfile = ssl_cfg.keyfile
    ca_certs = ssl_cfg.ca_certs
    ciphers = ssl_cfg.ciphers
    if not certfile:
        for key, value in (("ssl.keyfile", keyfile), ("ssl.ca_certs", ca_certs),
                           ("ssl.ciphers", ciphers)):
            if value:
                raise ValueError(f"{key}: expected ssl.certfile to be set too")
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= (ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
                        | ssl.OP_SINGLE_DH_USE | ssl.OP_SINGLE_ECDH_USE
                        | getattr(ssl, "OP_NO_RENEGOTIATION", 0))
    _readable("ssl.certfile", certfile)
    if keyfile:
        _readable("ssl.keyfile", keyfile)
    try:
        context.load_cert_chain(certfile, keyfile or None, password=_no_passphrase)
    except _EncryptedKey:
        key, path = ("ssl.keyfile", keyfile) if keyfile else ("ssl.certfile", certfile)
        raise ValueError(f"{key}: cannot load {path!r}: the private key is encrypted "
                         f"(passphrases are not supported)") from None
    except (OSError, ValueError) as exc:
        reason = _reason(exc)
        if keyfile:
            if "KEY_VALUES_MISMATCH" in str(exc) or "values mismatch" in reason.lower():
                raise ValueError(f"ssl.keyfile: {keyfile!r} is not the private key of "
                                 f"the certificate in {certfile!r}") from None
            raise ValueError(f"ssl.certfile: cannot load {certfile!r} with ssl.keyfile "
                             f"{keyfile!r}: {reason}") from None
        raise ValueError(f"ssl.certfile: cannot load {certfile!r}: {reason} "
                         f"(without ssl.keyfile the private key must be in certfile)") from None
    if ca_certs:
        _readable("ssl.ca_certs", ca_certs)
        try:
            context.load_verify_locations(cafile=ca_certs)
        except (OSError, ValueError) as exc:
            raise ValueError(f"ssl.ca_certs: cannot load {ca_certs!r}: {_reason(exc)}") from None
        context.verify_mode = ssl.CERT_REQUIRED
    if ciphers:
        try:
            context.set_ciphers(ciphers)
        except ssl.SSLError as exc:
            raise ValueError(f"ssl.ciphers: {ciphers!r}: {_reason(exc)}") from None
    try:
        context.set_alpn_protocols(["http/1.1"])
    except (NotImplementedError, AttributeError):  # pragma: no cover - OpenSSL without ALPN
        pass
    return context


def wrap(context: ssl.SSLContext, sock: socket.socket) -> ssl.SSLSocket:
    """The accepted socket as a non-blocking server-side SSLSocket, handshake not done."""
    sock.setblocking(False)
    return context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)


def close_notify(sock: ssl.SSLSocket) -> None:
    """Best effort: send the TLS close alert on a non-blocking SSLSocket, without
    waiting for the peer's (so a response delimited by the close is not seen as
    truncated). Never raises."""
    try:
        sock.unwrap()  # non-blocking: sends close_notify, then wants to read the peer's
    except (OSError, ValueError):
        pass
