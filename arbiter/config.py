"""The settings table and everything driven by it.

This module owns arbiter's configuration: the one table of settings
(``SETTINGS``: name, default, validator, CLI flags, env var, doc line) and the
code that turns that table into

* YAML loading with errors that name the file, the line and the key
  (``load_config``),
* ``ARBITER_<KEY>`` environment overrides and the ``WEB_CONCURRENCY`` /
  ``PORT`` platform conventions,
* command-line flags (``add_cli_options`` / ``cli_overrides`` /
  ``cli_labels``), with gunicorn's spellings as aliases (``Setting.aliases``)
  and its worker class names mapped (``gunicorn_worker_class``),
* the frozen, validated ``Config`` object the rest of arbiter reads,
* the warnings for settings that were set but do nothing with the chosen
  worker type (``Setting.applies_to``, ``ineffective_settings``), and
* the documented reference file ``config/server.yaml``
  (``render_reference_yaml``), the effective config that ``--print-config``
  prints (``render_effective_yaml``) and a Markdown table of every setting
  (``render_settings_table``).

Layering: defaults < config file < ``ARBITER_*`` environment < command line.
A new setting is one row in ``SETTINGS``; nothing else needs editing.

Nothing here imports the application or touches sockets: ``app`` and the
hooks are syntax-checked only, the import happens elsewhere.
"""

from __future__ import annotations

import argparse
import difflib
import ipaddress
import json
import math
import os
import re
import textwrap
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import yaml

__all__ = [
    "SECTIONS",
    "SETTINGS",
    "SETTINGS_BY_NAME",
    "Config",
    "ConfigError",
    "ConfigSection",
    "Setting",
    "add_cli_options",
    "cli_labels",
    "cli_overrides",
    "ineffective_settings",
    "load_config",
    "render_effective_yaml",
    "render_reference_yaml",
    "render_settings_table",
]


class ConfigError(Exception):
    """A configuration problem; ``str(err)`` is the complete user-facing message.

    One line per problem, each shaped ``WHERE: KEY: expected WHAT, got VALUE``
    where WHERE is ``path:line`` (the path as the user gave it), an
    environment variable name (``ARBITER_WORKERS``, ``WEB_CONCURRENCY``,
    ``PORT``) or a command-line flag (``--workers``). ``errors`` holds the
    lines as a tuple.
    """

    def __init__(self, errors: str | list[str] | tuple[str, ...]) -> None:
        self.errors: tuple[str, ...] = (errors,) if isinstance(errors, str) else tuple(errors)
        super().__init__("\n".join(self.errors))


# --------------------------------------------------------------------------
# Validators / converters
#
# A converter takes the raw value and ``text`` (True when the value came from
# an environment variable or the command line, so strings such as "8",
# "true" or "a,b" are to be parsed) and returns the converted value, or raises
# _Invalid describing what was expected.
# --------------------------------------------------------------------------

Converter = Callable[[Any, bool], Any]


class _Invalid(Exception):
    """A value failed validation; carries what was expected and what was found."""

    def __init__(self, expected: str, got: Any, index: int | None = None) -> None:
        super().__init__(expected)
        self.expected = expected
        self.got = got
        self.index = index


_TRUE_WORDS = frozenset({"true", "1", "yes", "on"})
_FALSE_WORDS = frozenset({"false", "0", "no", "off"})
_NULL_WORDS = frozenset({"", "null", "~", "none"})


def _show(value: Any) -> str:
    """Render a found value for an error message, YAML-flavoured."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def _as_int(value: Any, text: bool) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if math.isfinite(value) and value.is_integer() else None
    if text and isinstance(value, str):
        s = value.strip()
        try:
            return int(s, 10)
        except ValueError:
            pass
        try:
            f = float(s)
        except ValueError:
            return None
        return int(f) if math.isfinite(f) and f.is_integer() else None
    return None


def _as_number(value: Any, text: bool) -> int | float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if text and isinstance(value, str):
        s = value.strip()
        try:
            return int(s, 10)
        except ValueError:
            pass
        try:
            f = float(s)
        except ValueError:
            return None
        return f if math.isfinite(f) else None
    return None


def integer(minimum: int, maximum: int | None = None) -> Converter:
    """An int in [minimum, maximum]; bools and fractional floats are rejected."""
    expected = f"an integer >= {minimum}" if maximum is None else f"an integer {minimum}..{maximum}"

    def convert(value: Any, text: bool) -> int:
        n = _as_int(value, text)
        if n is None or n < minimum or (maximum is not None and n > maximum):
            raise _Invalid(expected, value)
        return n

    return convert


def number(minimum: float, *, exclusive: bool = False) -> Converter:
    """An int or float (not bool, finite) >= minimum (> minimum when exclusive)."""
    expected = f"a number {'>' if exclusive else '>='} {minimum:g}"

    def convert(value: Any, text: bool) -> int | float:
        n = _as_number(value, text)
        if n is None or n < minimum or (exclusive and n == minimum):
            raise _Invalid(expected, value)
        return n

    return convert


def boolean(value: Any, text: bool) -> bool:
    """YAML true/false; from env/CLI also 1/0, yes/no, on/off."""
    if isinstance(value, bool):
        return value
    if text and isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE_WORDS:
            return True
        if word in _FALSE_WORDS:
            return False
    raise _Invalid("true or false", value)


def choice(*options: str) -> Converter:
    """One of the given words, case-insensitive; returned lower-case."""
    expected = "one of " + " | ".join(options)

    def convert(value: Any, text: bool) -> str:
        if isinstance(value, str) and value.strip().lower() in options:
            return value.strip().lower()
        raise _Invalid(expected, value)

    return convert


def lifespan_mode(value: Any, text: bool) -> str:
    """auto | on | off -- YAML reads a bare on/off as a boolean, which means the same."""
    if value is True or value is False:
        return "on" if value else "off"
    return choice("auto", "on", "off")(value, text)


def string(value: Any, text: bool) -> str:
    """A non-empty string."""
    if isinstance(value, str) and value.strip():
        return value
    raise _Invalid("a non-empty string", value)


def optional(inner: Converter) -> Converter:
    """``inner`` or null (YAML null; from env/CLI also "", "null", "~", "none")."""

    def convert(value: Any, text: bool) -> Any:
        if value is None:
            return None
        if text and isinstance(value, str) and value.strip().lower() in _NULL_WORDS:
            return None
        try:
            return inner(value, text)
        except _Invalid as err:
            raise _Invalid(err.expected + " or null", err.got, err.index) from None

    return convert


def list_of(item: Converter, what: str, *, split_commas_in_file: bool = False,
            split_cli_items: bool = False) -> Converter:
    """A list of items, returned as a tuple.

    A single string is a one-element list. From env/CLI a string is either a
    YAML flow list ("[a, b]") or comma-separated ("a,b"); in a file, commas
    split only when ``split_commas_in_file``. ``split_cli_items`` (implied by
    ``split_commas_in_file``) also splits each value of a repeated flag, as
    gunicorn's comma-separated ``--forwarded-allow-ips a,b`` and
    ``--pythonpath a,b`` are.
    """
    split_items = split_commas_in_file or split_cli_items
    expected = f"a list of {what}"

    def convert(value: Any, text: bool) -> tuple[Any, ...]:
        if isinstance(value, str):
            s = value.strip()
            parsed: Any = None
            if text and s.startswith("["):
                # A YAML flow list "[a, b]"; "[::1]:80" is not one and falls through.
                try:
                    parsed = yaml.safe_load(s)
                except yaml.YAMLError:
                    parsed = None
            if isinstance(parsed, list):
                value = parsed
            elif text or split_commas_in_file:
                value = [part.strip() for part in s.split(",") if part.strip()]
            else:
                value = [value]
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise _Invalid(expected, value)
        if text and split_items:
            value = [part.strip() for element in value
                     for part in (element.split(",") if isinstance(element, str) else [element])
                     if not isinstance(part, str) or part.strip()]
        out = []
        for index, element in enumerate(value):
            try:
                out.append(item(element, text))
            except _Invalid as err:
                raise _Invalid(err.expected, err.got, index) from None
        return tuple(out)

    return convert


def _is_dotted_name(s: str) -> bool:
    return bool(s) and all(part.isidentifier() for part in s.split("."))


_APP_EXPECTED = 'a WSGI app "module:attr" or a factory "module:create()"'


def app_spec(value: Any, text: bool) -> str:
    """ "module:attr" or "module:factory()" (syntax only; nothing is imported)."""
    if isinstance(value, str):
        s = value.strip()
        module, sep, attr = s.partition(":")
        if attr.endswith("()"):
            attr = attr[:-2]
        if sep and _is_dotted_name(module) and _is_dotted_name(attr):
            return s
    raise _Invalid(_APP_EXPECTED, value)


def hook_spec(value: Any, text: bool) -> str:
    """ "module:function" (syntax only)."""
    if isinstance(value, str):
        module, sep, attr = value.strip().partition(":")
        if sep and _is_dotted_name(module) and _is_dotted_name(attr):
            return value.strip()
    raise _Invalid('a hook "module:function"', value)


_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def _is_host(host: str) -> bool:
    """A hostname (RFC 1123) or a dotted-quad IPv4 address."""
    if not host or len(host) > 253:
        return False
    labels = host.rstrip(".").split(".")
    if all(label.isdigit() for label in labels):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return False
        return True
    return all(_HOST_LABEL.fullmatch(label) for label in labels)


def _is_port(s: str, minimum: int = 0) -> bool:
    return s.isdigit() and len(s) <= 5 and minimum <= int(s) <= 65535


def _is_host_port(s: str) -> bool:
    if s.startswith("["):
        m = re.fullmatch(r"\[([^\]]+)\]:(\d+)", s)
        if not m or not _is_port(m.group(2)):
            return False
        try:
            ipaddress.IPv6Address(m.group(1))
        except ValueError:
            return False
        return True
    host, sep, port = s.rpartition(":")
    return bool(sep) and ":" not in host and _is_host(host) and _is_port(port)


_BIND_EXPECTED = '"host:port", "[v6]:port", "unix:/path[:mode]" or "fd://N"'


def bind_address(value: Any, text: bool) -> str:
    """One listener: "host:port", "[v6]:port", "unix:/path[:mode]" (octal mode), "fd://N"."""
    if isinstance(value, str):
        s = value.strip()
        if s.startswith("unix:"):
            path = s[len("unix:") :]
            m = re.fullmatch(r"(.*):(\d+)", path)
            if m:  # a trailing ":digits" is the socket file's mode, in octal
                path, mode = m.groups()
                if not re.fullmatch(r"[0-7]{3,4}", mode) or int(mode, 8) > 0o777:
                    raise _Invalid(_BIND_EXPECTED, value)
            if path:
                return s
        elif s.startswith("fd://"):
            if s[len("fd://") :].isdigit():
                return s
        elif _is_host_port(s):
            return s
    raise _Invalid(_BIND_EXPECTED, value)


def host_port(value: Any, text: bool) -> str:
    """ "host:port" or "[v6]:port"."""
    if isinstance(value, str) and _is_host_port(value.strip()):
        return value.strip()
    raise _Invalid('"host:port" or "[v6]:port"', value)


def trusted_ip(value: Any, text: bool) -> str:
    """An IP address, a CIDR network, or "*" (trust everyone)."""
    if isinstance(value, str):
        s = value.strip()
        if s == "*":
            return s
        try:
            ipaddress.ip_network(s, strict=False)
        except ValueError:
            pass
        else:
            return s
    raise _Invalid('an IP address, a CIDR network or "*"', value)


_trusted_ips = list_of(trusted_ip, 'IP addresses, CIDR networks or "*"', split_commas_in_file=True)

_PROXY_PROTOCOL_MODES: tuple[str, ...] = ("v1", "v2", "auto")


def proxy_protocol_mode(value: Any, text: bool) -> bool | str:
    """``false`` (off) or the PROXY protocol version expected: "v1", "v2" or "auto".

    Off is returned as False: YAML ``false`` (and so ``off``/``no``, which YAML
    reads as false), or the words "off"/"false" in any case. ``true`` is not
    accepted: it does not say which version.
    """
    if value is False:
        return False
    if isinstance(value, str):
        word = value.strip().lower()
        if word in ("off", "false"):
            return False
        if word in _PROXY_PROTOCOL_MODES:
            return word
    raise _Invalid("one of false | v1 | v2 | auto", value)


def workers_count(value: Any, text: bool) -> int | str:
    """An int >= 1 or "auto" (resolved to the CPU count when the Config is built)."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    n = _as_int(value, text)
    if n is None or n < 1:
        raise _Invalid('an integer >= 1 or "auto"', value)
    return n


def file_mode(value: Any, text: bool) -> int:
    """A permission mask 0..0o777: an int, or an octal string "0o022" / "022".

    PyYAML reads ``022`` as the int 18 (octal) and ``0o022`` as a string; both
    mean the same mask here. A bare decimal int is taken as the number it is.
    """
    n: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        n = value
    elif isinstance(value, str):
        s = value.strip().lower()
        s = s[2:] if s.startswith("0o") else s
        if s and all(c in "01234567" for c in s):
            n = int(s, 8)
    if n is None or not 0 <= n <= 0o777:
        raise _Invalid('an octal mode 0..0o777, e.g. 0o022 or "022"', value)
    return n


def user_or_group(value: Any, text: bool) -> int | str:
    """A name (non-empty string) or a numeric id (int >= 0; digits from env/CLI)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and value.strip():
        s = value.strip()
        return int(s) if s.isdigit() else s
    raise _Invalid("a name or a numeric id", value)


# --------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    """One row of the settings table.

    ``default`` is the raw default as it is written in YAML (it goes through
    ``convert`` like any other value). The CLI action follows from the
    default: a bool is a ``store_true`` switch, a tuple is a repeatable
    ``append`` option, anything else takes one value.
    """

    name: str  # dotted for nested keys: "limits.body", "log.level"
    default: Any
    convert: Converter
    doc: str  # one line
    flags: tuple[str, ...] = ()
    metavar: str | None = None
    later: bool = False  # accepted and validated now; takes effect in a later release
    # Gunicorn's spellings of the same option, accepted too (same meaning, same value).
    aliases: tuple[str, ...] = ()
    # The worker types on which the setting has an effect (None: every type); set
    # elsewhere, it is a warning at start and in `arbiter check`, never silence.
    applies_to: tuple[str, ...] | None = None
    # Command-line values that another server's users type, mapped to ours:
    # returns (our value, a note to tell the user) or raises ValueError (no equivalent).
    translate_cli: Callable[[str], tuple[str, str]] | None = None

    @property
    def env(self) -> str:
        """The environment variable: ARBITER_ + dotted name upper-cased, dots as underscores."""
        return "ARBITER_" + self.name.upper().replace(".", "_")

    @property
    def dest(self) -> str:
        """The argparse dest of the CLI flags: the dotted name with dots as underscores."""
        return self.name.replace(".", "_")

    @property
    def section(self) -> str | None:
        return self.name.split(".", 1)[0] if "." in self.name else None

    @property
    def key(self) -> str:
        """The key within its section (the name itself for top-level settings)."""
        return self.name.rsplit(".", 1)[-1]

    @property
    def help(self) -> str:
        """The doc line with the "(later release)" mark when it applies."""
        return self.doc + (" (later release)" if self.later else "")

    @property
    def option_strings(self) -> tuple[str, ...]:
        """Every command-line spelling: arbiter's flags, then gunicorn's aliases."""
        return self.flags + self.aliases

    @property
    def cli_label(self) -> str:
        """How errors name a command-line value when the flag typed is not known."""
        long_flags = [f for f in self.option_strings if f.startswith("--")]
        return long_flags[0] if long_flags else "command line"


# Nested sections, in the order they appear, with their one-line docs.
SECTIONS: Mapping[str, str] = MappingProxyType(
    {
        "limits": "request size limits (0 = no limit; for body, null = no limit)",
        "ssl": "TLS on every listener when certfile is set (TLS >= 1.2)",
        "log": "logging",
        "hooks": 'each "module:function"; arguments in arbiter/hooks.py and the README',
    }
)

_opt_str = optional(string)
_opt_hook = optional(hook_spec)

WORKER_TYPES: tuple[str, ...] = ("forked", "preforked", "threaded", "pooled", "evented", "asgi")
WSGI_WORKER_TYPES: tuple[str, ...] = WORKER_TYPES[:-1]

# Gunicorn's worker classes (its -k/--worker-class) that have an arbiter worker type.
GUNICORN_WORKER_CLASSES: Mapping[str, str] = MappingProxyType({
    "sync": "preforked",  # one connection at a time per process
    "gthread": "pooled",  # a thread pool per process, idle connections in a selector
})

# Gunicorn's worker classes without an equivalent, and what to use instead.
_GUNICORN_WITHOUT_EQUIVALENT: Mapping[str, str] = MappingProxyType({
    "gevent": "arbiter does not monkey-patch; for many idle or slow clients use evented "
              "(the app must never block) or pooled (threads for blocking I/O)",
    "eventlet": "arbiter does not monkey-patch; for many idle or slow clients use evented "
                "(the app must never block) or pooled (threads for blocking I/O)",
    "tornado": "arbiter serves WSGI and ASGI apps only",
})
_GUNICORN_WITHOUT_EQUIVALENT_ALIASES = {"gevent_wsgi": "gevent", "gevent_pywsgi": "gevent"}


def gunicorn_worker_class(value: str) -> tuple[str, str]:
    """A gunicorn worker class typed on the command line -> (arbiter's worker type, a note).

    ``sync`` is ``preforked`` and ``gthread`` is ``pooled``. The other gunicorn
    classes (gevent, eventlet, tornado, asgi, a class path such as
    ``uvicorn.workers.UvicornWorker``) raise ValueError saying what arbiter has
    instead. Anything else is returned unchanged for the setting's own check.
    """
    word = value.strip()
    ours = ", ".join(WORKER_TYPES)
    key = word.lower()
    if key == "asgi":
        return key, ""
    if key in GUNICORN_WORKER_CLASSES:
        mapped = GUNICORN_WORKER_CLASSES[key]
        return mapped, (f"gunicorn's {key!r} worker class is arbiter's {mapped!r} worker type; "
                        f"serving with {mapped}")
    key = _GUNICORN_WITHOUT_EQUIVALENT_ALIASES.get(key, key)
    if key in _GUNICORN_WITHOUT_EQUIVALENT:
        raise ValueError(f"gunicorn's {word!r} worker class has no arbiter equivalent: "
                         f"{_GUNICORN_WITHOUT_EQUIVALENT[key]}. arbiter's worker types: "
                         f"{ours} (gunicorn's sync = preforked, gthread = pooled)")
    if "." in word:
        if "uvicorn" in key or "asgi" in key:
            return "asgi", (f"{word!r} is an ASGI worker class: arbiter's own is worker_type "
                            f"asgi; serving with asgi")
        raise ValueError(f"{word!r} is a worker class path. arbiter has no pluggable worker "
                         f"classes; its worker types: {ours} (gunicorn's sync = preforked, "
                         f"gthread = pooled, uvicorn's worker = asgi)")
    return word, ""

SETTINGS: tuple[Setting, ...] = (
    Setting("app", "arbiter.demo:app", app_spec,
            'WSGI callable "module:attr"; factory "module:create()"'),
    Setting("chdir", None, _opt_str,
            "directory to change into before loading the app",
            ("--chdir",), "DIR"),
    Setting("pythonpath", (), list_of(string, "directory paths", split_cli_items=True),
            "extra import paths, prepended to sys.path",
            ("--pythonpath",), "DIR"),
    Setting("bind", ("127.0.0.1:8000",), list_of(bind_address, "addresses (" + _BIND_EXPECTED + ")"),
            '"host:port", "[::1]:8000", "unix:/path[:mode]", "fd://N"',
            ("-b", "--bind"), "ADDRESS"),
    Setting("backlog", 2048, integer(1),
            "listen() queue length per listener",
            ("--backlog",), "N"),
    Setting("reuse_port", False, boolean,
            "SO_REUSEPORT on each listener, so another server (a blue/green twin) may bind "
            "the same port; arbiter's own workers share one socket and deal out connections "
            "by load",
            ("--reuse-port",)),
    Setting("workers", 2, workers_count,
            'integer >= 1, or "auto" (= CPU count)',
            ("-w", "--workers"), "N"),
    Setting("worker_type", "preforked", choice(*WORKER_TYPES),
            "forked | preforked | threaded | pooled | evented | asgi; unset, an ASGI app"
            " gets asgi",
            ("-k", "--worker-type"), "TYPE", aliases=("--worker-class",),
            translate_cli=gunicorn_worker_class),
    Setting("lifespan", "auto", lifespan_mode,
            "auto | on | off (asgi): the app's lifespan startup runs before a worker serves,"
            " its shutdown on stop; auto: skipped when the app does not support it",
            ("--lifespan",), "MODE", applies_to=("asgi",)),
    Setting("reactor_block_warning", 0.5, number(0),
            "seconds (evented, asgi): an event loop blocked this long logs the stack of"
            " what blocks it and the request it serves, and counts the stall (0 = off)",
            ("--reactor-block-warning",), "SECONDS", applies_to=("evented", "asgi")),
    Setting("threads", 4, integer(1),
            "pooled: threads per worker",
            ("-t", "--threads"), "N", applies_to=("pooled",)),
    Setting("max_connections", 1000, integer(1),
            "forked/threaded/pooled/evented/asgi: open connections per worker",
            ("--max-connections",), "N", aliases=("--worker-connections",),
            applies_to=("forked", "threaded", "pooled", "evented", "asgi")),
    Setting("timeout", 30, number(0),
            "a worker stuck this long is killed (threaded/pooled: recycled; forked: the stuck"
            " child; asgi: the request is cancelled, 504), with its traceback (0 = off)",
            ("--timeout",), "SECONDS"),
    Setting("max_queue_time", 0, number(0),
            "seconds a request may have waited before a worker starts it (X-Request-Start"
            " from a trusted proxy, else the kernel's receive time of its first bytes):"
            " one that waited longer is answered 503 with Retry-After, the app not called"
            " (0 = off)",
            ("--max-queue-time",), "SECONDS"),
    Setting("graceful_timeout", 30, number(0),
            "seconds to finish in-flight requests on stop/reload/scale-down",
            ("--graceful-timeout",), "SECONDS"),
    Setting("keepalive", 5, number(0),
            "seconds an idle keep-alive connection is held (0 = close)",
            ("--keepalive",), "SECONDS", aliases=("--keep-alive",)),
    Setting("header_timeout", 10, number(0, exclusive=True),
            "seconds a client has to send a whole request head, else 408 (cuts slowloris)",
            ("--header-timeout",), "SECONDS"),
    Setting("min_transfer_rate", 1024, number(0),
            "bytes/s: a request body or a response keeping us waiting for the client must"
            " average this once header_timeout of waiting has passed, else the client is cut"
            " (0 = only the per-wait limit, timeout)",
            ("--min-transfer-rate",), "BYTES"),
    Setting("max_requests", 0, integer(0),
            "recycle a worker after N requests (0 = never)",
            ("--max-requests",), "N"),
    Setting("max_requests_jitter", 0, integer(0),
            "+ random 0..N so workers don't recycle together (needs max_requests)",
            ("--max-requests-jitter",), "N"),
    Setting("refork_after", (), list_of(integer(1), "request counts"),
            "e.g. [1000, 5000] (Linux): once a worker has served the first count it becomes"
            " the mold the next workers are forked from, warm (memory shared); the old ones are"
            " replaced one at a time; after the next count, a worker of that generation"
            " becomes the mold, and so on ([] = off)",
            applies_to=("preforked", "threaded", "pooled", "evented", "asgi")),
    Setting("max_worker_memory", 0, number(0),
            "MiB of the worker's private memory (USS, not RSS: pages shared with the master"
            " don't count); recycle it gracefully above (0 = off)"),
    Setting("boot_timeout", 30, number(0, exclusive=True),
            "a new worker must be ready (app loaded) within this, or it failed",
            ("--boot-timeout",), "SECONDS"),
    Setting("preload_app", False, boolean,
            "import the app in the master, before forking",
            ("--preload",)),
    Setting("http_parser", "auto", choice("auto", "httptools", "h11"),
            "auto | httptools | h11 -- auto: httptools (C, llhttp) when it imports, else h11"
            " (pure Python); both give identical behaviour",
            ("--http-parser",), "PARSER"),
    Setting("limits.request_line", 8190, integer(0, 65536),
            "bytes; longer -> 414 (0 = no limit)",
            ("--limit-request-line",), "BYTES"),
    Setting("limits.header_fields", 100, integer(0, 32768),
            "count; more -> 431 (0 = no limit)",
            ("--limit-request-fields",), "N"),
    Setting("limits.header_field_size", 8190, integer(0, 65536),
            "bytes; longer -> 431 (0 = no limit)",
            ("--limit-request-field-size",), "BYTES", aliases=("--limit-request-field_size",)),
    Setting("limits.body", None, optional(integer(0)),
            "bytes; larger -> 413 (null = unlimited)"),
    Setting("limits.websocket_message", 1048576, integer(1, 2**31),
            "bytes; a larger WebSocket message (asgi) -> close 1009"),
    Setting("forwarded_allow_ips", ("127.0.0.1", "::1"), _trusted_ips,
            'IPs/CIDRs trusted to set X-Forwarded-* / Forwarded, or "*"',
            ("--forwarded-allow-ips",), "IPS"),
    Setting("forwarded_headers", "x-forwarded", choice("x-forwarded", "forwarded"),
            "x-forwarded | forwarded: the one header family trusted from forwarded_allow_ips"
            " (the other is ignored); the client is the rightmost untrusted hop"),
    Setting("proxy_protocol", False, proxy_protocol_mode,
            "false | v1 | v2 | auto: each connection from proxy_allow_ips starts with a PROXY"
            " protocol header (HAProxy, AWS NLB) naming the client, else it is closed; auto:"
            " either version"),
    Setting("proxy_allow_ips", ("127.0.0.1", "::1"), _trusted_ips,
            'IPs/CIDRs that send a PROXY protocol header (the others speak plain HTTP), or "*"'),
    Setting("pidfile", None, _opt_str,
            "write the master's pid here",
            ("--pidfile",), "FILE", aliases=("-p", "--pid")),
    Setting("reload", False, boolean,
            "development: watch the project's *.py files and the config file (watchfiles"
            " when installed, else a scan each second); a change runs the reload"
            " transaction, as a HUP -- a release that does not import keeps the old"
            " workers serving, its error in the log",
            ("--reload",)),
    Setting("daemon", False, boolean,
            "detach (python-daemon); set pidfile to find the master again",
            ("--daemon",), aliases=("-D",)),
    Setting("user", None, optional(user_or_group),
            "after binding, the workers drop privileges to this user (name or uid);"
            " the master keeps its own",
            ("--user",), "USER", aliases=("-u",)),
    Setting("group", None, optional(user_or_group),
            "after binding, the workers drop privileges to this group (name or gid)",
            ("--group",), "GROUP", aliases=("-g",)),
    Setting("umask", "0o022", file_mode,
            'file mode creation mask, octal: 0o022 or "022"',
            ("--umask",), "MODE"),
    Setting("proc_name", "arbiter", string,
            'process titles: "arbiter: master [NAME]", "arbiter: worker [NAME] #3"',
            ("--name",), "NAME", aliases=("-n",)),
    Setting("control_socket", None, _opt_str,
            "unix socket for `arbiter ctl` (default: next to the pidfile, or off)"),
    Setting("admin_bind", None, optional(host_port),
            '"host:port" for /metrics, /livez, /readyz, /status (null = off)'),
    Setting("drain_delay", 0, number(0),
            "on TERM: seconds /readyz answers 503 while still serving, so a load balancer"
            " stops sending before we stop accepting"),
    Setting("ssl.certfile", None, _opt_str, "PEM certificate (chain)",
            ("--certfile",), "FILE"),
    Setting("ssl.keyfile", None, _opt_str,
            "PEM private key (null: the key is in certfile); needs certfile",
            ("--keyfile",), "FILE"),
    Setting("ssl.ca_certs", None, _opt_str, "set to require client certificates"),
    Setting("ssl.ciphers", None, _opt_str, "OpenSSL cipher string (null = Python's default)",
            ("--ciphers",), "CIPHERS"),
    Setting("log.level", "info", choice("debug", "info", "warning", "error", "critical"),
            "debug | info | warning | error | critical",
            ("--log-level",), "LEVEL"),
    Setting("log.error_log", "-", string,
            '"-" = stderr; a path; "syslog"',
            ("--error-log",), "FILE", aliases=("--error-logfile", "--log-file")),
    Setting("log.access_log", None, _opt_str,
            'null = off; "-" = stdout; a path',
            ("--access-log",), "FILE", aliases=("--access-logfile",)),
    Setting("log.access_format",
            '%(h)s - - [%(t)s] "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %(D)sus', string,
            "access log line; h=client t=time r=request line s=status b=bytes f=referer"
            " a=user agent D=microseconds Q=microseconds waited before the app started",
            ("--access-format",), "FORMAT", aliases=("--access-logformat",)),
    Setting("log.json", False, boolean,
            "one JSON object per line instead of text, for both logs"
            " (access_format is then ignored)"),
    Setting("hooks.on_starting", None, _opt_hook, "in the master, before anything starts"),
    Setting("hooks.when_ready", None, _opt_hook, "in the master, once workers serve"),
    Setting("hooks.pre_fork", None, _opt_hook, "in the master, before forking a worker"),
    Setting("hooks.post_fork", None, _opt_hook, "in the worker, right after the fork"),
    Setting("hooks.worker_exit", None, _opt_hook, "in the master, after a worker exited"),
    Setting("hooks.on_reload", None, _opt_hook, "in the master, on HUP / ctl reload"),
    Setting("hooks.on_exit", None, _opt_hook, "in the master, just before it exits"),
)  # fmt: skip

SETTINGS_BY_NAME: Mapping[str, Setting] = MappingProxyType({s.name: s for s in SETTINGS})

_TOP_LEVEL_KEYS: tuple[str, ...] = tuple(s.name for s in SETTINGS if "." not in s.name) + tuple(
    SECTIONS
)


def _cpu_count() -> int:
    """CPUs this process may run on (affinity-aware where the OS supports it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


# --------------------------------------------------------------------------
# The Config object
# --------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


class ConfigSection:
    """A read-only view of one nested section: ``cfg.log.level``."""

    __slots__ = ("_name", "_values")

    def __init__(self, name: str, values: Mapping[str, Any]) -> None:
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_values", MappingProxyType(dict(values)))

    def __getattr__(self, key: str) -> Any:
        if key.startswith("_"):
            raise AttributeError(key)  # slots not set yet (copy/unpickle): no recursion
        try:
            return self._values[key]
        except KeyError:
            raise AttributeError(f"no setting {self._name}.{key}") from None

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError("Config is read-only")

    def __reduce__(self) -> tuple[Any, ...]:
        return (ConfigSection, (self._name, dict(self._values)))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ConfigSection):
            return NotImplemented
        return self._name == other._name and dict(self._values) == dict(other._values)

    def __hash__(self) -> int:
        return hash((self._name, tuple(self._values.items())))

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self._values.items())
        return f"ConfigSection({self._name}: {inner})"

    def as_dict(self) -> dict[str, Any]:
        return {k: _plain(v) for k, v in self._values.items()}


class Config:
    """The validated, read-only configuration.

    Attribute access mirrors the YAML: ``cfg.workers`` (an int; "auto" is
    already resolved to the CPU count), ``cfg.bind`` (a tuple of str),
    ``cfg.limits.body``, ``cfg.log.level``, ``cfg.umask`` (an int). Lists are
    tuples. ``source`` is the config file path as given (None without a file).
    ``notes`` are things the user should be told about how their input was
    read (a gunicorn worker class mapped to an arbiter worker type).
    Two Configs are equal when their values are; ``source``, origins and notes
    are metadata and do not take part.
    """

    __slots__ = ("_values", "_origins", "_sections", "source", "notes")

    def __init__(
        self,
        values: Mapping[str, Any],
        origins: Mapping[str, str] | None = None,
        source: str | None = None,
        notes: tuple[str, ...] = (),
    ) -> None:
        sections: dict[str, ConfigSection] = {}
        for section in SECTIONS:
            prefix = section + "."
            members = {k[len(prefix) :]: v for k, v in values.items() if k.startswith(prefix)}
            sections[section] = ConfigSection(section, members)
        object.__setattr__(self, "_values", MappingProxyType(dict(values)))
        object.__setattr__(self, "_origins", MappingProxyType(dict(origins or {})))
        object.__setattr__(self, "_sections", MappingProxyType(sections))
        object.__setattr__(self, "source", source)
        object.__setattr__(self, "notes", tuple(notes))

    def __getattr__(self, name: str) -> Any:
        # Only called when normal lookup fails, i.e. for setting names.
        if name.startswith("_"):
            raise AttributeError(name)  # slots not set yet (copy/unpickle): no recursion
        if name in self._values:
            return self._values[name]
        if name in self._sections:
            return self._sections[name]
        raise AttributeError(f"no setting {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Config is read-only")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("Config is read-only")

    def __reduce__(self) -> tuple[Any, ...]:
        return (Config, (dict(self._values), dict(self._origins), self.source, self.notes))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Config):
            return NotImplemented
        return dict(self._values) == dict(other._values)

    def __hash__(self) -> int:
        return hash(tuple(sorted(self._values.items(), key=lambda kv: kv[0])))

    def __repr__(self) -> str:
        return f"Config(source={self.source!r}, workers={self.workers!r}, bind={self.bind!r})"

    def get(self, dotted_name: str) -> Any:
        """The value of a dotted setting name ("log.level"), or a section ("log")."""
        if dotted_name in self._values:
            return self._values[dotted_name]
        if dotted_name in self._sections:
            return self._sections[dotted_name]
        raise KeyError(_unknown_key_message(dotted_name, list(self._values) + list(SECTIONS)))

    def origin(self, dotted_name: str) -> str:
        """Where a value came from: "default", "path:line", "ARBITER_X", "--flag",
        "WEB_CONCURRENCY" or "PORT"."""
        if dotted_name not in self._values:
            raise KeyError(_unknown_key_message(dotted_name, list(self._values)))
        return self._origins.get(dotted_name, "default")

    def as_dict(self) -> dict[str, Any]:
        """Nested plain dict (lists, not tuples), JSON-serialisable."""
        out: dict[str, Any] = {}
        for name, value in self._values.items():
            section, _, key = name.rpartition(".")
            target = out.setdefault(section, {}) if section else out
            target[key] = _plain(value)
        return out


# --------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------


def _unknown_key_message(key: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(key, candidates, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown key {key!r}{hint}"


def _describe_node(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    return repr(node.value)


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


@dataclass
class _FileValue:
    """One setting's raw value as read from the YAML file."""

    name: str
    value: Any
    line: int
    item_lines: tuple[int, ...] | None  # per element, when the value is a YAML list


def _read_yaml(path: str, errors: list[str]) -> list[_FileValue]:
    """Parse the file into raw setting values, recording the line of each.

    Structural problems (syntax, top-level not a mapping, a section that is
    not a mapping, duplicate or unknown keys) are appended to ``errors``.
    """
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        errors.append(f"{path}: config file not found")
        return []
    except IsADirectoryError:
        errors.append(f"{path}: is a directory, expected a YAML config file")
        return []
    except OSError as err:
        errors.append(f"{path}: cannot read config file: {err.strerror or err}")
        return []
    except UnicodeDecodeError as err:
        errors.append(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})")
        return []

    if path.endswith(".py"):
        errors.append(f"{path}: is a Python file; arbiter's -c takes a YAML config file "
                      f"(gunicorn's -c takes Python): write its settings as YAML "
                      f"('arbiter --print-config' prints every key)")
        return []
    loader = yaml.SafeLoader(text)
    try:
        try:
            root = loader.get_single_node()
        except yaml.MarkedYAMLError as err:
            mark = err.problem_mark or err.context_mark
            where = f"{path}:{mark.line + 1}" if mark else path
            problem = err.problem or err.context or "syntax error"
            if err.context and problem.startswith("but "):
                problem = f"{err.context}, {problem}"  # "expected a single document ..., but ..."
            errors.append(f"{where}: invalid YAML: {problem}")
            return []
        except yaml.YAMLError as err:
            errors.append(f"{path}: invalid YAML: {err}")
            return []
        if root is None:
            return []
        if not isinstance(root, yaml.MappingNode):
            if root.tag == "tag:yaml.org,2002:null":
                return []
            errors.append(
                f"{path}:{_line(root)}: expected a mapping of settings (key: value) "
                f"at the top level, got {_describe_node(root)}"
            )
            return []
        return list(_walk_mapping(loader, path, root, None, errors))
    finally:
        loader.dispose()


def _walk_mapping(
    loader: yaml.SafeLoader,
    path: str,
    node: yaml.MappingNode,
    section: str | None,
    errors: list[str],
) -> Iterator[_FileValue]:
    if section is None:
        candidates = list(_TOP_LEVEL_KEYS)
    else:
        candidates = [s.name for s in SETTINGS if s.section == section]
    seen: dict[str, int] = {}
    for key_node, value_node in node.value:
        line = _line(key_node)
        if not isinstance(key_node, yaml.ScalarNode):
            errors.append(
                f"{path}:{line}: expected a setting name as key, got {_describe_node(key_node)}"
            )
            continue
        key = key_node.value
        full = f"{section}.{key}" if section else key
        if full in seen:
            errors.append(f"{path}:{line}: duplicate key {full!r} (first set on line {seen[full]})")
            continue
        seen[full] = line

        if section is None and key in SECTIONS:
            if value_node.tag == "tag:yaml.org,2002:null":
                continue  # "log:" with everything under it commented out
            if not isinstance(value_node, yaml.MappingNode):
                errors.append(
                    f"{path}:{_line(value_node)}: {key}: expected a mapping of {key}.* "
                    f"settings, got {_describe_node(value_node)}"
                )
                continue
            yield from _walk_mapping(loader, path, value_node, key, errors)
            continue
        if full not in candidates:
            errors.append(f"{path}:{line}: {_unknown_key_message(full, candidates)}")
            continue
        try:
            value = loader.construct_object(value_node, deep=True)
        except yaml.YAMLError as err:
            problem = getattr(err, "problem", None) or str(err)
            errors.append(f"{path}:{_line(value_node)}: {full}: invalid value: {problem}")
            continue
        item_lines = None
        if isinstance(value_node, yaml.SequenceNode):
            item_lines = tuple(_line(item) for item in value_node.value)
        yield _FileValue(full, value, _line(value_node), item_lines)


def _line_of(message: str, path: str) -> int:
    """The line number in a "path:line: ..." message (0 when there is none), for sorting."""
    line = message[len(path) + 1 :].split(":", 1)[0]
    return int(line) if line.isdigit() else 0


def _invalid_message(where: str, name: str, err: _Invalid) -> str:
    key = name if err.index is None else f"{name}[{err.index}]"
    return f"{where}: {key}: expected {err.expected}, got {_show(err.got)}"


def load_config(
    path: str | None = None,
    env: Mapping[str, str] | None = None,
    cli: Mapping[str, Any] | None = None,
    cli_labels: Mapping[str, str] | None = None,
) -> Config:
    """Build the validated Config: defaults < file < ARBITER_* env < cli.

    ``env`` defaults to ``os.environ``; only variables named after a setting
    (``Setting.env``) are read, other ``ARBITER_*`` variables are ignored, and
    so are empty ones. ``cli`` maps dotted setting names to raw values (as
    ``cli_overrides`` produces them; strings are parsed like env values).
    ``cli_labels`` maps them to the flag the user typed (``cli_labels()``), which
    errors and origins then name; without it a setting's first long flag is named.
    A command-line string first goes through the setting's ``translate_cli``
    (gunicorn's ``-k sync`` is ``preforked``), whose notes land in ``Config.notes``.
    ``WEB_CONCURRENCY`` is the default for ``workers`` and ``PORT`` makes the
    default bind ``0.0.0.0:$PORT``, when nothing else sets them.

    Raises ConfigError carrying every problem found, one per line.
    """
    env = os.environ if env is None else env
    errors: list[str] = []
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}

    for s in SETTINGS:
        values[s.name] = s.convert(s.default, False)

    if path is not None:
        file_errors: list[str] = []
        for fv in _read_yaml(path, file_errors):
            s = SETTINGS_BY_NAME[fv.name]
            try:
                values[s.name] = s.convert(fv.value, False)
                origins[s.name] = f"{path}:{fv.line}"
            except _Invalid as err:
                line = fv.line
                if err.index is not None and fv.item_lines and err.index < len(fv.item_lines):
                    line = fv.item_lines[err.index]
                file_errors.append(_invalid_message(f"{path}:{line}", s.name, err))
        errors.extend(sorted(file_errors, key=lambda msg: _line_of(msg, path)))

    for s in SETTINGS:
        raw = env.get(s.env)
        if raw is None or raw.strip() == "":
            continue
        try:
            values[s.name] = s.convert(raw, True)
            origins[s.name] = s.env
        except _Invalid as err:
            errors.append(_invalid_message(s.env, s.name, err))

    notes: list[str] = []
    for name, raw in (cli or {}).items():
        s = SETTINGS_BY_NAME.get(name)
        if s is None:
            errors.append(f"command line: {_unknown_key_message(name, list(SETTINGS_BY_NAME))}")
            continue
        label = (cli_labels or {}).get(name) or s.cli_label
        if s.translate_cli is not None and isinstance(raw, str):
            try:
                raw, note = s.translate_cli(raw)
            except ValueError as err:
                errors.append(f"{label}: {s.name}: {err}")
                continue
            if note:
                notes.append(f"{label} {(cli or {})[name]}: {note}")
        try:
            values[s.name] = s.convert(raw, True)
            origins[s.name] = label
        except _Invalid as err:
            errors.append(_invalid_message(label, s.name, err))

    _apply_platform_conventions(env, values, origins, errors)
    errors.extend(_cross_check(values, origins))
    if errors:
        raise ConfigError(errors)

    if values["workers"] == "auto":
        values["workers"] = _cpu_count()
    return Config(values, origins, path, tuple(notes))


def _apply_platform_conventions(
    env: Mapping[str, str], values: dict[str, Any], origins: dict[str, str], errors: list[str]
) -> None:
    """WEB_CONCURRENCY and PORT, as Gunicorn honours them."""
    concurrency = env.get("WEB_CONCURRENCY", "").strip()
    if concurrency and "workers" not in origins:
        try:
            values["workers"] = workers_count(concurrency, True)
            origins["workers"] = "WEB_CONCURRENCY"
        except _Invalid as err:
            errors.append(_invalid_message("WEB_CONCURRENCY", "workers", err))
    port = env.get("PORT", "").strip()
    if port and "bind" not in origins:
        if _is_port(port, minimum=1):
            values["bind"] = (f"0.0.0.0:{int(port)}",)
            origins["bind"] = "PORT"
        else:
            errors.append(f"PORT: bind: expected a port number 1..65535, got {port!r}")


def _cross_check(values: Mapping[str, Any], origins: Mapping[str, str]) -> list[str]:
    """Rules that involve more than one setting."""
    errors = []
    if values["ssl.keyfile"] is not None and values["ssl.certfile"] is None:
        where = origins.get("ssl.keyfile", "config")
        errors.append(
            f"{where}: ssl.keyfile: expected ssl.certfile to be set too, "
            f"got a keyfile without a certfile"
        )
    return errors


# --------------------------------------------------------------------------
# Settings that were set but do nothing
# --------------------------------------------------------------------------

# What a flag means elsewhere, said when the user typed it for a setting that has no effect.
_FLAG_HINTS: Mapping[str, str] = MappingProxyType({
    "-t": "-t is --threads in arbiter; gunicorn's -t is --timeout",
})

# Why a setting does nothing on one worker type, and what to do instead.
_TYPE_HINTS: Mapping[tuple[str, str], str] = MappingProxyType({
    ("threads", "preforked"): "for a thread pool use worker_type pooled (gunicorn turns sync "
                              "into gthread when threads > 1; arbiter does not)",
    ("threads", "threaded"): "threaded starts a thread per connection, up to max_connections",
    ("max_connections", "preforked"): "a preforked worker serves one connection at a time",
    ("refork_after", "forked"): "a forked worker forks a child per connection: its workers are "
                                "forked from the master",
})


def _and_list(words: tuple[str, ...]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def ineffective_settings(cfg: Config, serving: str | None = None) -> list[str]:
    """Warnings for the settings the user set that have no effect with this config.

    Only values that did not come from the defaults are reported: a setting
    whose ``applies_to`` does not include the worker type -- ``serving``, the
    type that serves the app once it was imported (``arbiter check``); else,
    with ``worker_type`` unset, either type it may become (preforked, or asgi
    for an ASGI app) -- and
    ``max_requests_jitter`` without ``max_requests``. Each line names the
    setting, its value and where it was set.
    """
    warnings = []
    worker_type = serving or cfg.worker_type
    # worker_type unset and the app not imported yet: it may be ASGI, and get asgi.
    types = {worker_type} if serving or cfg.origin("worker_type") != "default" else {
        worker_type, "asgi"}

    def where(name: str) -> str:
        return f"{name}: {_yaml_scalar(cfg.get(name))} (set by {cfg.origin(name)})"

    for s in SETTINGS:
        origin = cfg.origin(s.name)
        if origin == "default" or s.applies_to is None or types.intersection(s.applies_to):
            continue
        line = (f"{where(s.name)} has no effect with worker_type {worker_type}: it "
                f"applies to {_and_list(s.applies_to)} only")
        hint = _TYPE_HINTS.get((s.name, worker_type))
        if hint:
            line += f"; {hint}"
        if origin in _FLAG_HINTS:
            line += f". {_FLAG_HINTS[origin]}"
        warnings.append(line)
    if cfg.origin("max_requests_jitter") != "default" and cfg.max_requests_jitter \
            and not cfg.max_requests:
        warnings.append(f"{where('max_requests_jitter')} has no effect while max_requests "
                        f"is 0 (workers are never recycled)")
    return warnings


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------


_TYPED_FLAGS = "_arbiter_typed_flags"  # namespace attribute: dest -> the option string typed


class _SettingOption(argparse.Action):
    """Store a setting's raw value (a switch, one value, or appended) and remember
    which of its spellings the user typed, so errors and origins can name it."""

    def __init__(self, option_strings: list[str], dest: str, mode: str = "store",
                 **kwargs: Any) -> None:
        self.mode = mode
        super().__init__(option_strings, dest, nargs=0 if mode == "switch" else None, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        if self.mode == "switch":
            values = True
        elif self.mode == "append":
            values = [*(getattr(namespace, self.dest, None) or []), values]
        setattr(namespace, self.dest, values)
        typed = dict(getattr(namespace, _TYPED_FLAGS, {}))
        typed[self.dest] = option_string or self.option_strings[0]
        setattr(namespace, _TYPED_FLAGS, typed)


def add_cli_options(parser: argparse.ArgumentParser) -> None:
    """Add every setting's flags (and gunicorn's aliases) from the table, under a
    "settings" group.

    Dests are ``Setting.dest`` (dots as underscores: ``workers``,
    ``worker_type``, ``log_level``, ``preload_app``, ``proc_name``) with
    ``default=argparse.SUPPRESS``, so a flag the user didn't give is absent
    from the namespace. Values are kept raw; ``load_config`` validates them.
    Which spelling was typed is kept for ``cli_labels``.
    """
    group = parser.add_argument_group(
        "settings", "override the config file and ARBITER_* environment variables"
    )
    for s in SETTINGS:
        if not s.option_strings:
            continue
        help_text = f"{s.help} [{s.env}]".replace("%", "%%")
        if isinstance(s.default, bool):
            mode, metavar = "switch", None
        elif isinstance(s.default, tuple):
            mode, metavar = "append", s.metavar
            help_text += " (repeatable)"
        else:
            mode, metavar = "store", s.metavar
        group.add_argument(
            *s.option_strings,
            dest=s.dest,
            action=_SettingOption,
            mode=mode,
            default=argparse.SUPPRESS,
            metavar=metavar,
            help=help_text,
        )


def cli_overrides(namespace: argparse.Namespace) -> dict[str, Any]:
    """The setting flags the user actually gave, keyed by dotted setting name, raw."""
    return {
        s.name: getattr(namespace, s.dest)
        for s in SETTINGS
        if s.option_strings and hasattr(namespace, s.dest)
    }


def cli_labels(namespace: argparse.Namespace) -> dict[str, str]:
    """The flag the user typed for each setting given (``-t``, ``--keep-alive``), by name."""
    typed = getattr(namespace, _TYPED_FLAGS, {})
    return {s.name: typed[s.dest] for s in SETTINGS if s.dest in typed}


# --------------------------------------------------------------------------
# Documentation generated from the table
# --------------------------------------------------------------------------

_REFERENCE_HEADER = """\
# arbiter reference configuration.
#
# Generated from the settings table in arbiter/config.py
# (render_reference_yaml); a test keeps the two identical.
#
# Every key is optional and the value shown is its default: this file as it
# stands configures exactly what arbiter does with no file at all. Copy the
# keys you want to change into your own server.yaml.
#
# Check a file as the start would (the config, the TLS files, log paths,
# user/group, bind addresses, hooks, then an import of the app):
#     arbiter check -c config/server.yaml
# Print the effective config, with where each value came from:
#     arbiter -c config/server.yaml --print-config
#
# Precedence: defaults < this file < environment < command line.
# Every key can be set from the environment as ARBITER_<KEY>: the dotted name
# upper-cased with dots as underscores (workers -> ARBITER_WORKERS,
# log.level -> ARBITER_LOG_LEVEL, limits.body -> ARBITER_LIMITS_BODY); list
# values there are comma-separated or "[a, b]". When nothing sets them,
# WEB_CONCURRENCY gives workers and PORT gives bind 0.0.0.0:$PORT.
#
# Keys marked "(later release)" are accepted and validated now; they take
# effect in a later release.
"""

_COMMENT_COLUMN = 29
_LINE_WIDTH = 100


def _yaml_scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(repr(v) if isinstance(v, int) and not isinstance(v, bool)
                               else json.dumps(str(v)) for v in value) + "]"
    s = str(value)
    try:
        plain_ok = yaml.safe_load(s) == s and "#" not in s and s == s.strip()
    except yaml.YAMLError:
        plain_ok = False
    if plain_ok:
        return s
    if '"' in s and "\n" not in s:
        return "'" + s.replace("'", "''") + "'"
    return json.dumps(s)


def _commented(line: str, doc: str) -> list[str]:
    """``line`` with ``doc`` as an aligned trailing comment (wrapped), or above it."""
    if not doc:
        return [line]
    indent = line[: len(line) - len(line.lstrip())]
    if len(line) > 60:
        width = _LINE_WIDTH - len(indent) - 2
        return [f"{indent}# {part}" for part in textwrap.wrap(doc, width)] + [line]
    column = max(_COMMENT_COLUMN, len(line) + 2)
    # Keep "(later release)" in one piece: U+00A0 is not a wrap point for textwrap.
    doc = doc.replace("(later release)", "(later\u00a0release)")
    parts = [
        part.replace("\u00a0", " ")
        for part in textwrap.wrap(doc, _LINE_WIDTH - column - 2, subsequent_indent="  ")
    ]
    out = [line.ljust(column) + "# " + parts[0]]
    out += [" " * column + "# " + part for part in parts[1:]]
    return out


def render_reference_yaml() -> str:
    """The documented reference config (config/server.yaml), generated from SETTINGS."""
    lines = _REFERENCE_HEADER.splitlines()
    lines.append("")
    current_section: str | None = None
    for s in SETTINGS:
        if s.section != current_section and s.section is not None:
            lines.extend(_commented(f"{s.section}:", SECTIONS[s.section]))
        current_section = s.section
        indent = "  " if s.section else ""
        # Inside a section whose doc already says "(later release)", don't repeat it.
        doc = s.doc if (s.section and "(later release)" in SECTIONS[s.section]) else s.help
        lines.extend(_commented(f"{indent}{s.key}: {_yaml_scalar(s.default)}", doc))
    return "\n".join(lines) + "\n"


def render_effective_yaml(cfg: Config, comments: Iterable[str] = ()) -> str:
    """The effective configuration as YAML that ``arbiter -c`` reads back (``--print-config``).

    Every setting, in table order, with its value and, as a trailing comment,
    where the value came from: ``default``, ``server.yaml:7``,
    ``ARBITER_WORKERS``, the flag typed (``--workers``, ``-w``),
    ``WEB_CONCURRENCY`` or ``PORT``. ``comments`` are added as comment lines
    after the header (what is not a setting, such as ``-e`` variables).
    """
    lines = [
        "# arbiter: the effective configuration (--print-config).",
        "# After each value, where it came from; `arbiter -c FILE` reads this back.",
    ]
    lines += [f"# {comment}" for comment in comments]
    lines.append("")
    current_section: str | None = None
    for s in SETTINGS:
        if s.section != current_section and s.section is not None:
            lines.append(f"{s.section}:")
        current_section = s.section
        value = cfg.get(s.name)
        text = f'"0o{value:03o}"' if s.name == "umask" else _yaml_scalar(value)
        line = f"{'  ' if s.section else ''}{s.key}: {text}"
        lines.append(line.ljust(max(_COMMENT_COLUMN, len(line) + 2)) + f"# {cfg.origin(s.name)}")
    return "\n".join(lines) + "\n"


def render_settings_table() -> str:
    """A Markdown table of every setting (for the README)."""
    rows = [
        "| key | default | environment | flags | meaning |",
        "|---|---|---|---|---|",
    ]
    for s in SETTINGS:
        flags = ", ".join(f"`{f}`" for f in s.flags)
        default = _yaml_scalar(s.default).replace("|", "\\|")
        meaning = s.help.replace("|", "\\|")
        rows.append(f"| `{s.name}` | `{default}` | `{s.env}` | {flags} | {meaning} |")
    return "\n".join(rows) + "\n"
