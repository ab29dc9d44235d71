"""Unit tests for arbiter.logs: access-log atoms, file targets, reopen, the error log."""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from arbiter import logs
from arbiter.logs import (
    DEFAULT_ACCESS_FORMAT,
    ERROR_LOGGER_NAME,
    AccessLog,
    reopen_log_files,
    setup_error_log,
)

ENVIRON = {
    "REMOTE_ADDR": "10.1.2.3",
    "REMOTE_USER": "alice",
    "REQUEST_METHOD": "POST",
    "PATH_INFO": "/p/a th",
    "QUERY_STRING": "x=1&y=2",
    "RAW_URI": "/p/a%20th?x=1&y=2",
    "SERVER_PROTOCOL": "HTTP/1.1",
    "HTTP_REFERER": "http://ref.example/",
    "HTTP_USER_AGENT": "curl/8.0",
    "HTTP_X_REQUEST_ID": "abc-123",
    "CONTENT_TYPE": "text/plain",
    "wsgi.url_scheme": "http",
}
RESP_HEADERS = [("Content-Type", "text/html"), ("X-Served-By", "w1"), ("Set-Cookie", "a=1"),
                ("Set-Cookie", "b=2")]
MISSING_ENVIRON = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "SERVER_PROTOCOL": "HTTP/1.0"}


def render(fmt: str, environ: dict | None = None, status: str = "201 Created",
           headers: list | None = None, body: int = 1234, dur: int = 2_345_678) -> str:
    return AccessLog(None, fmt).format(
        ENVIRON if environ is None else environ, status,
        RESP_HEADERS if headers is None else headers, body, dur,
    )


@pytest.fixture(autouse=True)
def _reset_error_logger() -> Iterator[None]:
    yield
    logger = logging.getLogger(ERROR_LOGGER_NAME)
    for h in list(logger.handlers):
        logger.removeHandler(h)
        h.close()


# --------------------------------------------------------------------------- atoms


@pytest.mark.parametrize(
    ("atom", "expected"),
    [
        ("h", "10.1.2.3"),
        ("l", "-"),
        ("u", "alice"),
        ("r", "POST /p/a%20th?x=1&y=2 HTTP/1.1"),
        ("m", "POST"),
        ("U", "/p/a th"),
        ("q", "x=1&y=2"),
        ("H", "HTTP/1.1"),
        ("s", "201"),
        ("B", "1234"),
        ("b", "1234"),
        ("f", "http://ref.example/"),
        ("a", "curl/8.0"),
        ("T", "2"),
        ("M", "2345"),
        ("D", "2345678"),
        ("L", "2.345678"),
        ("p", str(os.getpid())),
        ("{x-request-id}i", "abc-123"),
        ("{X-Request-Id}i", "abc-123"),
        ("{content-type}i", "text/plain"),
        ("{x-served-by}o", "w1"),
        ("{content-type}o", "text/html"),
        ("{set-cookie}o", "a=1, b=2"),
        ("{wsgi.url_scheme}e", "http"),
        ("{REMOTE_ADDR}e", "10.1.2.3"),
    ],
)
def test_each_atom_renders(atom: str, expected: str) -> None:
    assert render(f"<%({atom})s>") == f"<{expected}>"


def test_time_atom() -> None:
    out = render("%(t)s", dur=0)
    assert re.fullmatch(r"\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}", out), out


@pytest.mark.parametrize(
    "atom",
    ["h", "u", "f", "a", "q", "{x-request-id}i", "{x-nope}o", "{nope}e", "b", "unknown", "zz"],
)
def test_missing_values_render_dash(atom: str) -> None:
    assert render(f"<%({atom})s>", environ=MISSING_ENVIRON, headers=[], body=0) == "<->"


def test_request_line_without_raw_uri() -> None:
    env = dict(ENVIRON)
    del env["RAW_URI"]
    assert render("%(r)s", environ=env) == "POST /p/a th?x=1&y=2 HTTP/1.1"
    env["QUERY_STRING"] = ""
    assert render("%(r)s", environ=env) == "POST /p/a th HTTP/1.1"


def test_b_vs_B_on_empty_body() -> None:
    assert render("%(b)s %(B)s", body=0) == "- 0"


def test_literal_percent_and_numeric_conversions() -> None:
    assert render("100%% %(D)d %(s)d %(B)06d") == "100% 2345678 201 001234"
    assert render("50% done %(s)s") == "50% done 201"


def test_default_format_fast_path_matches_generic() -> None:
    fast = AccessLog(None, DEFAULT_ACCESS_FORMAT)
    assert fast._fast
    generic = AccessLog(None, DEFAULT_ACCESS_FORMAT)
    generic._fast = False
    for env in (ENVIRON, MISSING_ENVIRON, {}):
        for body in (0, 13):
            args = (env, "200 OK", [], body, 1500)
            assert fast.format(*args) == generic.format(*args)


def test_default_format_line() -> None:
    line = render(DEFAULT_ACCESS_FORMAT)
    assert re.fullmatch(
        r'10\.1\.2\.3 - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\] '
        r'"POST /p/a%20th\?x=1&y=2 HTTP/1\.1" 201 1234 "http://ref\.example/" "curl/8\.0" 2345678us',
        line,
    ), line


# --------------------------------------------------------------------------- access log targets


def test_disabled_access_log_writes_nothing(capfd: pytest.CaptureFixture[str]) -> None:
    log = AccessLog(None, DEFAULT_ACCESS_FORMAT)
    assert not log.enabled
    log.log(ENVIRON, "200 OK", [], 1, 1)
    assert capfd.readouterr().out == ""


def test_stdout_target(capfd: pytest.CaptureFixture[str]) -> None:
    log = AccessLog("-", "%(m)s %(U)s %(s)s")
    assert log.enabled
    log.log(ENVIRON, "404 Not Found", [], 0, 1)
    assert capfd.readouterr().out == "POST /p/a th 404\n"


def test_file_target_written_and_flushed(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    path.write_text("old line\n")
    log = AccessLog(str(path), "%(m)s %(s)s")
    log.log(ENVIRON, "200 OK", [], 1, 1)
    # no flush / close: the line must already be in the file
    assert path.read_text() == "old line\nPOST 200\n"
    log.log(ENVIRON, "500 Internal Server Error", [], 1, 1)
    assert path.read_text().splitlines() == ["old line", "POST 200", "POST 500"]
    log.close()
    assert not log.enabled
    log.log(ENVIRON, "200 OK", [], 1, 1)  # after close: ignored, no error
    assert len(path.read_text().splitlines()) == 3


def test_file_target_survives_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    code = (
        "import os, signal\n"
        "from arbiter.logs import AccessLog\n"
        f"log = AccessLog({str(path)!r}, '%(U)s')\n"
        "for i in range(3):\n"
        "    log.log({'PATH_INFO': f'/{i}'}, '200 OK', [], 0, 0)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=False, timeout=30)
    assert path.read_text() == "/0\n/1\n/2\n"


def test_access_log_missing_dir_raises(tmp_path: Path) -> None:
    with pytest.raises(OSError, match="does not exist"):
        AccessLog(str(tmp_path / "nope" / "access.log"), DEFAULT_ACCESS_FORMAT)


def test_access_log_reopen_after_rename(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    log = AccessLog(str(path), "%(U)s")
    log.log({"PATH_INFO": "/before"}, "200 OK", [], 0, 0)
    rotated = tmp_path / "access.log.1"
    path.rename(rotated)
    log.log({"PATH_INFO": "/still-old"}, "200 OK", [], 0, 0)  # goes to the renamed file
    reopen_log_files()
    assert path.exists()
    log.log({"PATH_INFO": "/after"}, "200 OK", [], 0, 0)
    assert rotated.read_text() == "/before\n/still-old\n"
    assert path.read_text() == "/after\n"
    log.close()


def test_access_log_reopen_method(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    log = AccessLog(str(path), "%(U)s")
    path.rename(tmp_path / "old.log")
    log.reopen()
    log.log({"PATH_INFO": "/new"}, "200 OK", [], 0, 0)
    assert path.read_text() == "/new\n"
    log.close()
    assert log not in logs._access_logs


def test_access_log_reopen_failure_keeps_old_file(tmp_path: Path) -> None:
    sub = tmp_path / "d"
    sub.mkdir()
    path = sub / "access.log"
    log = AccessLog(str(path), "%(U)s")
    moved = tmp_path / "moved"
    sub.rename(moved)  # the configured directory is gone: reopen must not break logging
    reopen_log_files()
    log.log({"PATH_INFO": "/x"}, "200 OK", [], 0, 0)
    assert (moved / "access.log").read_text() == "/x\n"
    log.close()


# --------------------------------------------------------------------------- error log

ERROR_LINE = re.compile(
    r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4}\] \[(?P<pid>\d+)\] \[(?P<level>[A-Z]+)\] (?P<msg>.*)"
)


def test_error_log_stderr_format(capfd: pytest.CaptureFixture[str]) -> None:
    logger = setup_error_log("info")
    assert logger.name == ERROR_LOGGER_NAME
    logger.info("hello %s", "world")
    err = capfd.readouterr().err.strip()
    m = ERROR_LINE.fullmatch(err)
    assert m, err
    assert m["pid"] == str(os.getpid())
    assert m["level"] == "INFO"
    assert m["msg"] == "hello world"


def test_error_log_pid_is_emitting_process(tmp_path: Path) -> None:
    path = tmp_path / "error.log"
    logger = setup_error_log("info", str(path))
    logger.info("parent")
    pid = os.fork()
    if pid == 0:  # child: log and leave without running pytest's cleanup
        try:
            logger.info("child")
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    lines = [ERROR_LINE.fullmatch(x) for x in path.read_text().splitlines()]
    assert [(m["pid"], m["msg"]) for m in lines if m] == [
        (str(os.getpid()), "parent"), (str(pid), "child"),
    ]


@pytest.mark.parametrize("level", ["debug", "INFO", "Warning", "error", "critical"])
def test_error_log_level_filtering(level: str, capfd: pytest.CaptureFixture[str]) -> None:
    logger = setup_error_log(level)
    names = ["debug", "info", "warning", "error", "critical"]
    for name in names:
        getattr(logger, name)(f"msg-{name}")
    err = capfd.readouterr().err
    threshold = names.index(level.lower())
    for i, name in enumerate(names):
        assert (f"msg-{name}" in err) == (i >= threshold), (level, name, err)


def test_error_log_bad_level() -> None:
    with pytest.raises(ValueError, match="loud"):
        setup_error_log("loud")


def test_error_log_reconfigure_replaces_handlers(tmp_path: Path,
                                                  capfd: pytest.CaptureFixture[str]) -> None:
    setup_error_log("info")
    path = tmp_path / "error.log"
    logger = setup_error_log("warning", str(path))
    assert len(logger.handlers) == 1
    logger.warning("to file")
    logger.info("filtered")
    assert capfd.readouterr().err == ""
    assert "to file" in path.read_text()
    assert "filtered" not in path.read_text()
    assert not logger.propagate


def test_error_log_file_flushed_and_reopened(tmp_path: Path) -> None:
    path = tmp_path / "error.log"
    logger = setup_error_log("info", str(path))
    logger.info("one")
    assert "[INFO] one" in path.read_text()  # flushed per record
    rotated = tmp_path / "error.log.1"
    path.rename(rotated)
    reopen_log_files()
    logger.error("two")
    assert path.exists()
    assert "two" in path.read_text()
    assert "two" not in rotated.read_text()
    assert "one" in rotated.read_text()


def test_error_log_missing_dir_raises(tmp_path: Path) -> None:
    target = str(tmp_path / "missing" / "error.log")
    with pytest.raises(OSError, match="does not exist") as info:
        setup_error_log("info", target)
    assert target in str(info.value)


def test_error_log_exception_traceback(capfd: pytest.CaptureFixture[str]) -> None:
    logger = setup_error_log("info")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logger.exception("app failed")
    err = capfd.readouterr().err
    assert "[ERROR] app failed" in err
    assert "RuntimeError: boom" in err


def test_error_log_syslog_target() -> None:
    logger = setup_error_log("info", "syslog", proc_name="myapp")
    (handler,) = logger.handlers
    assert isinstance(handler, logging.handlers.SysLogHandler)
    record = logger.makeRecord(logger.name, logging.WARNING, __file__, 1, "hi", (), None)
    assert handler.format(record) == f"myapp[{os.getpid()}]: [WARNING] hi"


def test_access_log_lines_do_not_interleave(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    log = AccessLog(str(path), "%({x-id}i)s %(U)s")
    long_path = "/" + "x" * 3000

    def worker(n: int) -> None:
        for i in range(300):
            log.log({"HTTP_X_ID": f"{n}-{i}", "PATH_INFO": long_path}, "200 OK", [], 0, 0)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = path.read_text().splitlines()
    assert len(lines) == 1200
    assert all(line.endswith(" " + long_path) for line in lines)
    assert {line.split()[0] for line in lines} == {f"{n}-{i}" for n in range(4) for i in range(300)}
    log.close()


def test_time_atom_is_request_start() -> None:
    now = AccessLog(None, "%(t)s").format({}, "200 OK", [], 0, 0)
    earlier = AccessLog(None, "%(t)s").format({}, "200 OK", [], 0, 3_600_000_000)
    fmt = "%d/%b/%Y:%H:%M:%S %z"
    delta = time.mktime(time.strptime(now, fmt)) - time.mktime(time.strptime(earlier, fmt))
    assert 3599 <= delta <= 3601


# --------------------------------------------------------------------------- log.json

ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d")
ACCESS_FIELDS = {
    "timestamp", "level", "logger", "pid", "method", "path", "query", "status", "bytes",
    "duration_us", "queue_us", "remote_addr", "user_agent", "referer", "request_id",
    "protocol",
}


@pytest.fixture
def no_worker() -> Iterator[None]:
    logs.set_worker(None)
    yield
    logs.set_worker(None)


def json_line(environ: dict, status: str = "201 Created", body: int = 1234,
              dur: int = 2_345_678, **kw: object) -> dict:
    line = AccessLog(None, json=True, **kw).format(environ, status, [], body, dur)  # type: ignore[arg-type]
    assert "\n" not in line
    return json.loads(line)


def test_json_access_every_field(no_worker: None) -> None:
    before = time.time()
    doc = json_line({**ENVIRON, "SCRIPT_NAME": "/app", "arbiter.queue_time": 0.0123456})
    assert set(doc) == ACCESS_FIELDS  # no worker number outside a worker
    assert ISO.fullmatch(doc["timestamp"]), doc["timestamp"]
    stamp = datetime.fromisoformat(doc["timestamp"]).timestamp()
    assert before - 0.01 <= stamp <= time.time() + 0.01
    assert doc == {
        "timestamp": doc["timestamp"], "level": "info", "logger": "arbiter.access",
        "pid": os.getpid(), "method": "POST", "path": "/app/p/a th", "query": "x=1&y=2",
        "status": 201, "bytes": 1234, "duration_us": 2_345_678, "queue_us": 12345,
        "remote_addr": "10.1.2.3",
        "user_agent": "curl/8.0", "referer": "http://ref.example/", "request_id": "abc-123",
        "protocol": "HTTP/1.1",
    }


def test_json_access_worker_number_and_error_log(no_worker: None,
                                                 capfd: pytest.CaptureFixture[str]) -> None:
    doc = json_line(ENVIRON, worker=7)
    assert doc["worker"] == 7
    setup_error_log("info", json=True).info("in a worker")
    assert json.loads(capfd.readouterr().err)["worker"] == 7


def test_json_access_missing_values_are_null(no_worker: None) -> None:
    doc = json_line({}, status="404 Not Found", body=0, dur=0)
    assert doc["status"] == 404 and doc["bytes"] == 0 and doc["duration_us"] == 0
    for key in ("method", "path", "query", "remote_addr", "user_agent", "referer",
                "request_id", "protocol", "queue_us"):
        assert doc[key] is None, key


def test_json_access_escapes_and_unicode(no_worker: None) -> None:
    nasty = 'a"b\\c\n\td\x00\x7f é ☃ 😀 \udcff'
    env = {**ENVIRON, "PATH_INFO": nasty, "HTTP_USER_AGENT": nasty, "HTTP_REFERER": "ü"}
    line = AccessLog(None, json=True).format(env, "200 OK", [], 1, 1)
    assert line.isascii()  # non-ASCII is escaped: no encoding can break a line
    doc = json.loads(line)
    assert doc["path"] == nasty and doc["user_agent"] == nasty and doc["referer"] == "ü"


def test_json_access_ignores_format_and_odd_values_take_the_slow_path(no_worker: None) -> None:
    doc = json_line({**ENVIRON, "REMOTE_ADDR": b"1.2.3.4"}, status="599 Whatever",
                    fmt="%(h)s")  # type: ignore[arg-type]
    assert doc["remote_addr"] == "b'1.2.3.4'"
    assert doc["status"] == 599 and doc["path"] == "/p/a th"


def test_json_access_fast_path_matches_dict(no_worker: None) -> None:
    log = AccessLog(None, json=True, worker=2)
    fast = json.loads(log.format(ENVIRON, "200 OK", [], 10, 20))
    slow = log.json_fields(ENVIRON, "200 OK", 10, 20)
    assert list(fast) == list(slow)
    fast.pop("timestamp"), slow.pop("timestamp")
    assert fast == slow


def test_json_access_file_reopen(tmp_path: Path, no_worker: None) -> None:
    path = tmp_path / "access.log"
    log = AccessLog(str(path), json=True)
    log.log({**ENVIRON, "PATH_INFO": "/before"}, "200 OK", [], 0, 0)
    path.rename(tmp_path / "access.log.1")
    reopen_log_files()
    log.log({**ENVIRON, "PATH_INFO": "/after"}, "200 OK", [], 0, 0)
    log.close()
    assert [json.loads(x)["path"] for x in path.read_text().splitlines()] == ["/after"]
    old = (tmp_path / "access.log.1").read_text().splitlines()
    assert [json.loads(x)["path"] for x in old] == ["/before"]


def test_json_access_pid_follows_fork(tmp_path: Path, no_worker: None) -> None:
    path = tmp_path / "access.log"
    log = AccessLog(str(path), json=True)
    log.log(ENVIRON, "200 OK", [], 0, 0)
    pid = os.fork()
    if pid == 0:
        try:
            log.log(ENVIRON, "200 OK", [], 0, 0)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    log.close()
    assert [json.loads(x)["pid"] for x in path.read_text().splitlines()] == [os.getpid(), pid]


def test_json_error_log_fields(capfd: pytest.CaptureFixture[str], no_worker: None) -> None:
    logger = setup_error_log("info", json=True)
    logger.info("hello %s ☃\nsecond line", "wörld")
    logger.debug("filtered")
    (line,) = capfd.readouterr().err.splitlines()
    assert line.isascii()
    doc = json.loads(line)
    assert ISO.fullmatch(doc["timestamp"])
    assert doc == {"timestamp": doc["timestamp"], "level": "info", "pid": os.getpid(),
                   "logger": "arbiter.error", "message": "hello wörld ☃\nsecond line"}


def test_json_error_log_exception(capfd: pytest.CaptureFixture[str], no_worker: None) -> None:
    logger = setup_error_log("info", json=True)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logger.exception("app failed")
    (line,) = capfd.readouterr().err.splitlines()
    doc = json.loads(line)
    assert doc["level"] == "error" and doc["message"] == "app failed"
    assert doc["exc_info"].startswith("Traceback (most recent call last):")
    assert doc["exc_info"].endswith("RuntimeError: boom")


def test_json_error_log_bad_format_args(capfd: pytest.CaptureFixture[str],
                                        no_worker: None) -> None:
    setup_error_log("info", json=True).warning("%d items", "many")
    doc = json.loads(capfd.readouterr().err)
    assert doc["level"] == "warning" and "%d items" in doc["message"]


def test_json_error_log_file_reopen(tmp_path: Path, no_worker: None) -> None:
    path = tmp_path / "error.log"
    logger = setup_error_log("info", str(path), json=True)
    logger.info("one")
    path.rename(tmp_path / "error.log.1")
    reopen_log_files()
    logger.warning("two")
    assert [json.loads(x)["message"] for x in path.read_text().splitlines()] == ["two"]
    old = (tmp_path / "error.log.1").read_text().splitlines()
    assert [json.loads(x)["message"] for x in old] == ["one"]


def test_json_error_log_syslog(no_worker: None) -> None:
    logger = setup_error_log("info", "syslog", proc_name="myapp", json=True)
    (handler,) = logger.handlers
    record = logger.makeRecord(logger.name, logging.WARNING, __file__, 1, "hi", (), None)
    prefix, _, body = handler.format(record).partition(": ")
    assert prefix == f"myapp[{os.getpid()}]"
    assert json.loads(body)["message"] == "hi"


def test_json_off_by_default_keeps_text(capfd: pytest.CaptureFixture[str]) -> None:
    setup_error_log("info").info("plain")
    assert ERROR_LINE.fullmatch(capfd.readouterr().err.strip())


def test_iso_time_cache_and_offset() -> None:
    t = 1_800_000_000.25
    text = logs._iso_time(t)
    assert abs(datetime.fromisoformat(text).timestamp() - t) < 0.001
    assert logs._iso_time(t + 0.5).endswith(text[-6:])
    assert logs._iso_time(t + 0.5)[:19] == text[:19] and logs._iso_time(t + 0.5)[19:23] == ".750"


# --------------------------------------------------------------------------- X-Request-ID


def request_environ(raw: bytes) -> dict:
    from arbiter.http import EMPTY_INPUT, HTTPConnection, HTTPSettings, WSGIHandler

    conn = HTTPConnection(HTTPSettings())
    conn.receive_data(raw)
    request = conn.next_event()
    handler = WSGIHandler(lambda e, s: [], HTTPSettings(), logging.getLogger("t"))
    info = handler.connection_info(("127.0.0.1", 1), ("127.0.0.1", 80))
    return handler.build_environ(request, info, EMPTY_INPUT)


def with_rid(value: bytes | None) -> str:
    header = b"X-Request-ID: " + value + b"\r\n" if value is not None else b""
    return request_environ(b"GET / HTTP/1.1\r\nHost: a\r\n" + header + b"\r\n")["HTTP_X_REQUEST_ID"]


GENERATED = re.compile(r"[0-9a-f]{32}")


def test_request_id_passed_through() -> None:
    assert with_rid(b"abc-123") == "abc-123"
    assert with_rid(b"x" * 200) == "x" * 200
    assert with_rid(b"a b/c=d:e") == "a b/c=d:e"


@pytest.mark.parametrize("bad", [b"x" * 201, "caf\u00e9".encode("latin-1"), b""])
def test_request_id_unfit_is_replaced(bad: bytes) -> None:
    assert GENERATED.fullmatch(with_rid(bad))


def test_request_id_generated_unique_and_per_process() -> None:
    ids = [with_rid(None) for _ in range(1000)]
    assert all(GENERATED.fullmatch(x) for x in ids)
    assert len(set(ids)) == 1000
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.write(w, with_rid(None).encode())
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    os.close(w)
    child = os.read(r, 100).decode()
    os.close(r)
    assert GENERATED.fullmatch(child)
    assert child[:16] != ids[0][:16]  # a fresh random prefix in the forked child
    assert child not in ids


def test_request_id_in_text_and_json_access_log(no_worker: None) -> None:
    env = request_environ(b"GET /p?q=1 HTTP/1.1\r\nHost: a\r\nX-Request-ID: rid-9\r\n\r\n")
    assert AccessLog(None, "%({x-request-id}i)s").format(env, "200 OK", [], 0, 0) == "rid-9"
    assert json.loads(AccessLog(None, json=True).format(env, "200 OK", [], 0, 0))[
        "request_id"] == "rid-9"


# --------------------------------------------------------------------------- wsgi.errors


def wsgi_errors(logger: logging.Logger):
    from arbiter.http import HTTPSettings, WSGIHandler

    return WSGIHandler(lambda e, s: [], HTTPSettings(), logger).base_environ["wsgi.errors"]


def test_wsgi_errors_text_is_the_line_as_written(capfd: pytest.CaptureFixture[str]) -> None:
    errors = wsgi_errors(setup_error_log("critical"))  # written whatever log.level
    errors.write("[2026-01-01 00:00:00,000] WARNING in app: hello\n")
    errors.write("two\nlines\n")
    errors.write("part")
    errors.write("ial ")
    assert capfd.readouterr().err == (
        "[2026-01-01 00:00:00,000] WARNING in app: hello\ntwo\nlines\n")
    errors.write("line\nrest")
    errors.flush()
    errors.flush()
    errors.writelines(["a\n", "b\n"])
    assert capfd.readouterr().err == "partial line\nrest\na\nb\n"
    with pytest.raises(TypeError):
        errors.write(b"bytes\n")


def test_wsgi_errors_json(capfd: pytest.CaptureFixture[str], no_worker: None) -> None:
    errors = wsgi_errors(setup_error_log("error", json=True))
    errors.write('WARNING in app: h\u00e9llo "q"\n')
    logs.set_worker(3)
    errors.write("second\n")
    first, second = capfd.readouterr().err.splitlines()
    assert first.isascii()
    doc = json.loads(first)
    assert ISO.fullmatch(doc["timestamp"])
    assert list(doc) == ["timestamp", "pid", "logger", "message"]  # no level of ours
    assert doc == {"timestamp": doc["timestamp"], "pid": os.getpid(), "logger": "wsgi.errors",
                   "message": 'WARNING in app: h\u00e9llo "q"'}
    assert json.loads(second)["worker"] == 3 and json.loads(second)["message"] == "second"


def test_wsgi_errors_file_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "error.log"
    errors = wsgi_errors(setup_error_log("info", str(path)))
    errors.write("before\n")
    path.rename(tmp_path / "error.log.1")
    reopen_log_files()
    errors.write("after\n")
    assert path.read_text() == "after\n"
    assert (tmp_path / "error.log.1").read_text() == "before\n"


@pytest.mark.parametrize("json_mode", [False, True])
def test_wsgi_errors_syslog_at_info(json_mode: bool, no_worker: None) -> None:
    logger = setup_error_log("critical", "syslog", proc_name="myapp", json=json_mode)
    (handler,) = logger.handlers
    records: list[logging.LogRecord] = []
    handler.emit = records.append  # type: ignore[method-assign]
    wsgi_errors(logger).write("WARNING in app: hello\n")
    (record,) = records
    assert handler.mapPriority(record.levelname) == "info"
    prefix, _, body = handler.format(record).partition(": ")
    assert prefix == f"myapp[{os.getpid()}]"
    if json_mode:
        assert json.loads(body)["message"] == "WARNING in app: hello"
        assert "level" not in json.loads(body)
    else:
        assert body == "WARNING in app: hello"


def test_wsgi_errors_foreign_handler_gets_an_info_record(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        wsgi_errors(logging.getLogger("test.logs.foreign")).write("hi\n")
    assert [(r.name, r.levelno, r.getMessage()) for r in caplog.records] == [
        ("wsgi.errors", logging.INFO, "hi")]


def test_wsgi_errors_threads_never_interleave_mid_line(tmp_path: Path) -> None:
    path = tmp_path / "error.log"
    errors = wsgi_errors(setup_error_log("info", str(path)))
    barrier = threading.Barrier(4)

    def worker(n: int) -> None:
        barrier.wait()
        for i in range(200):
            errors.write(f"t{n} {i} ")  # a line in three writes, the others in between
            errors.write("x" * 500)
            errors.write(f" end{n}\n")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = path.read_text().splitlines()
    assert len(lines) == 800
    line = re.compile(r"t(\d) \d+ x{500} end(\d)")
    for text in lines:
        m = line.fullmatch(text)
        assert m and m[1] == m[2], text[:80]


def test_wsgi_errors_unterminated_line_is_bounded(capfd: pytest.CaptureFixture[str]) -> None:
    errors = wsgi_errors(setup_error_log("info"))
    for _ in range(70):
        errors.write("y" * 1024)
    err = capfd.readouterr().err
    assert err.endswith("\n") and len(err.splitlines()[0]) >= 65536
