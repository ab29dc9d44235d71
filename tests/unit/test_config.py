"""Unit tests for arbiter.config: the settings table, loading, layering, errors."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import pytest

from arbiter.config import (
    SECTIONS,
    SETTINGS,
    SETTINGS_BY_NAME,
    WORKER_TYPES,
    Config,
    ConfigError,
    add_cli_options,
    cli_overrides,
    gunicorn_worker_class,
    ineffective_settings,
    load_config,
    render_effective_yaml,
    render_reference_yaml,
    render_settings_table,
)

pytestmark = pytest.mark.timeout(10)

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str, name: str = "server.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def error_of(path: str | None = None, env: dict | None = None, cli: dict | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, env={} if env is None else env, cli=cli)
    return str(info.value)


def defaults() -> Config:
    return load_config(env={})


# ---------------------------------------------------------------- the table


def test_table_covers_every_contract_key_in_order() -> None:
    names = [s.name for s in SETTINGS]
    assert names[:3] == ["app", "chdir", "pythonpath"]
    assert names.index("limits.body") < names.index("forwarded_allow_ips")
    assert names[-1] == "hooks.on_exit"
    assert len(names) == len(set(names))


def test_env_names_are_unique() -> None:
    envs = [s.env for s in SETTINGS]
    assert len(envs) == len(set(envs))
    assert SETTINGS_BY_NAME["log.level"].env == "ARBITER_LOG_LEVEL"
    assert SETTINGS_BY_NAME["limits.body"].env == "ARBITER_LIMITS_BODY"


def test_every_setting_has_a_one_line_doc() -> None:
    for s in SETTINGS:
        assert s.doc and "\n" not in s.doc, s.name
        assert s.section is None or s.section in SECTIONS


def test_defaults_match_contract() -> None:
    cfg = defaults()
    assert cfg.app == "arbiter.demo:app"
    assert cfg.bind == ("127.0.0.1:8000",)
    assert cfg.workers == 2
    assert cfg.worker_type == "preforked"
    assert cfg.limits.request_line == 8190
    assert cfg.limits.body is None
    assert cfg.forwarded_allow_ips == ("127.0.0.1", "::1")
    assert cfg.umask == 0o022
    assert cfg.log.level == "info"
    assert cfg.log.error_log == "-"
    assert cfg.ssl.certfile is None
    assert cfg.hooks.on_starting is None
    assert cfg.source is None


def test_config_is_read_only() -> None:
    cfg = defaults()
    with pytest.raises(AttributeError):
        cfg.workers = 3
    with pytest.raises(AttributeError):
        cfg.log.level = "debug"


def test_get_and_as_dict() -> None:
    cfg = defaults()
    assert cfg.get("log.level") == "info"
    assert cfg.get("workers") == 2
    assert cfg.get("limits").body is None
    with pytest.raises(KeyError, match="did you mean 'workers'"):
        cfg.get("wokers")
    d = cfg.as_dict()
    assert d["log"]["level"] == "info"
    assert d["bind"] == ["127.0.0.1:8000"]
    json.dumps(d)


def test_config_pickles_and_copies(tmp_path: Path) -> None:
    import copy
    import pickle

    cfg = load_config(write(tmp_path, "workers: 3\n"), env={})
    for clone in (pickle.loads(pickle.dumps(cfg)), copy.deepcopy(cfg), copy.copy(cfg)):
        assert clone == cfg
        assert clone.source == cfg.source
        assert clone.origin("workers") == cfg.origin("workers")
        assert clone.log.level == "info"


def test_equality_ignores_source(tmp_path: Path) -> None:
    path = write(tmp_path, "workers: 2\n")
    cfg = load_config(path, env={})
    assert cfg == defaults()
    assert cfg.source == path
    assert hash(cfg) == hash(defaults())


# ---------------------------------------------------------------- reference file


def test_server_yaml_is_the_rendered_reference() -> None:
    assert (REPO / "config" / "server.yaml").read_text() == render_reference_yaml()


def test_server_yaml_loads_to_defaults() -> None:
    cfg = load_config(str(REPO / "config" / "server.yaml"), env={})
    assert cfg == defaults()


def test_reference_mentions_every_key_and_header() -> None:
    text = render_reference_yaml()
    assert "arbiter check -c config/server.yaml" in text
    assert "ARBITER_<KEY>" in text
    for s in SETTINGS:
        assert f"{s.key}:" in text, s.name
    assert "(later release)" in text


def test_settings_table_lists_every_setting() -> None:
    table = render_settings_table()
    for s in SETTINGS:
        assert f"`{s.name}`" in table


# ---------------------------------------------------------------- file-level errors


def test_missing_file() -> None:
    assert error_of("/nonexistent/server.yaml") == "/nonexistent/server.yaml: config file not found"


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, ""), env={}) == defaults()
    assert load_config(write(tmp_path, "# only comments\n"), env={}) == defaults()


def test_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "workers: 2\nbind: [a\ntimeout: 3\n")
    msg = error_of(path)
    assert msg.startswith(f"{path}:")
    assert "invalid YAML" in msg


def test_syntax_error_line_number(tmp_path: Path) -> None:
    path = write(tmp_path, "workers: 2\n  timeout: 3\n")
    assert error_of(path).startswith(f"{path}:2: invalid YAML")


def test_multiple_documents(tmp_path: Path) -> None:
    path = write(tmp_path, "workers: 2\n---\ntimeout: 3\n")
    assert error_of(path) == (
        f"{path}:2: invalid YAML: expected a single document in the stream, "
        "but found another document"
    )


def test_unsafe_tag_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "workers: 1\napp: !!python/object:os.system x\n")
    assert error_of(path).startswith(f"{path}:2: app: invalid value: could not determine")


def test_top_level_not_a_mapping(tmp_path: Path) -> None:
    path = write(tmp_path, "- workers\n")
    assert error_of(path) == (
        f"{path}:1: expected a mapping of settings (key: value) at the top level, got a list"
    )


def test_section_not_a_mapping(tmp_path: Path) -> None:
    path = write(tmp_path, "workers: 2\nlog: debug\n")
    assert error_of(path) == f"{path}:2: log: expected a mapping of log.* settings, got 'debug'"


def test_empty_section_is_allowed(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "hooks:\nssl:\n"), env={}) == defaults()


def test_duplicate_key(tmp_path: Path) -> None:
    path = write(tmp_path, "workers: 2\ntimeout: 3\nworkers: 4\n")
    assert error_of(path) == f"{path}:3: duplicate key 'workers' (first set on line 1)"


def test_duplicate_nested_key(tmp_path: Path) -> None:
    path = write(tmp_path, "log:\n  level: info\n  level: debug\n")
    assert error_of(path) == f"{path}:3: duplicate key 'log.level' (first set on line 2)"


def test_unknown_key_with_suggestion(tmp_path: Path) -> None:
    path = write(tmp_path, "app: a:b\nbind: ['127.0.0.1:1']\nwokers: 4\n")
    assert error_of(path) == f"{path}:3: unknown key 'wokers' (did you mean 'workers'?)"


def test_unknown_nested_key_with_suggestion(tmp_path: Path) -> None:
    path = write(tmp_path, "log:\n  levle: debug\n")
    assert error_of(path) == f"{path}:2: unknown key 'log.levle' (did you mean 'log.level'?)"


def test_unknown_key_without_suggestion(tmp_path: Path) -> None:
    path = write(tmp_path, "zzzzzz: 1\n")
    assert error_of(path) == f"{path}:1: unknown key 'zzzzzz'"


def test_dotted_key_at_top_level_is_unknown(tmp_path: Path) -> None:
    path = write(tmp_path, "log.level: debug\n")
    assert error_of(path).startswith(f"{path}:1: unknown key 'log.level'")


def test_path_is_reported_as_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, "\n\n\n\n\n\nworkers: four\n")
    monkeypatch.chdir(tmp_path)
    assert error_of("server.yaml") == (
        "server.yaml:7: workers: expected an integer >= 1 or \"auto\", got 'four'"
    )


def test_all_errors_are_reported(tmp_path: Path) -> None:
    path = write(tmp_path, "workers: 0\ntimeout: -1\nbogus: 1\n")
    lines = error_of(path).splitlines()
    assert len(lines) == 3
    assert lines[0].startswith(f"{path}:1: workers:")
    assert lines[1] == f"{path}:2: timeout: expected a number >= 0, got -1"
    assert lines[2].startswith(f"{path}:3: unknown key 'bogus'")


def test_config_error_exposes_lines() -> None:
    err = ConfigError(["a", "b"])
    assert err.errors == ("a", "b")
    assert str(err) == "a\nb"


# ---------------------------------------------------------------- types and ranges


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("workers: 0", 'workers: expected an integer >= 1 or "auto", got 0'),
        ("workers: true", 'workers: expected an integer >= 1 or "auto", got true'),
        ("workers: 2.5", 'workers: expected an integer >= 1 or "auto", got 2.5'),
        ("workers: '4'", "workers: expected an integer >= 1 or \"auto\", got '4'"),
        ("threads: 0", "threads: expected an integer >= 1, got 0"),
        ("backlog: false", "backlog: expected an integer >= 1, got false"),
        ("max_requests: -1", "max_requests: expected an integer >= 0, got -1"),
        ("timeout: yes", "timeout: expected a number >= 0, got true"),
        ("timeout: .inf", "timeout: expected a number >= 0, got inf"),
        ("boot_timeout: 0", "boot_timeout: expected a number > 0, got 0"),
        ("keepalive: fast", "keepalive: expected a number >= 0, got 'fast'"),
        ("preload_app: 1", "preload_app: expected true or false, got 1"),
        ("preload_app: 'yes'", "preload_app: expected true or false, got 'yes'"),
        (
            "worker_type: gevent",
            "worker_type: expected one of forked | preforked | threaded | pooled | evented | asgi,"
            " got 'gevent'",
        ),
        ("http_parser: fast", "http_parser: expected one of auto | httptools | h11, got 'fast'"),
        ("proc_name: ''", "proc_name: expected a non-empty string, got ''"),
        ("pidfile: 3", "pidfile: expected a non-empty string or null, got 3"),
        (
            "umask: 0o1000",
            "umask: expected an octal mode 0..0o777, e.g. 0o022 or \"022\", got '0o1000'",
        ),
        (
            "umask: '089'",
            "umask: expected an octal mode 0..0o777, e.g. 0o022 or \"022\", got '089'",
        ),
        ("user: -1", "user: expected a name or a numeric id or null, got -1"),
        ("admin_bind: 9100", 'admin_bind: expected "host:port" or "[v6]:port" or null, got 9100'),
        ("pythonpath: 5", "pythonpath: expected a list of directory paths, got 5"),
        ("chdir: ['a']", "chdir: expected a non-empty string or null, got ['a']"),
    ],
)
def test_wrong_type_or_range(tmp_path: Path, yaml_text: str, message: str) -> None:
    path = write(tmp_path, "# line 1\n" + yaml_text + "\n")
    assert error_of(path) == f"{path}:2: {message}"


@pytest.mark.parametrize(
    ("yaml_text", "line", "message"),
    [
        (
            "limits:\n  request_line: 70000",
            2,
            "limits.request_line: expected an integer 0..65536, got 70000",
        ),
        (
            "limits:\n  header_fields: -1",
            2,
            "limits.header_fields: expected an integer 0..32768, got -1",
        ),
        ("limits:\n  body: -5", 2, "limits.body: expected an integer >= 0 or null, got -5"),
        (
            "log:\n  level: loud",
            2,
            "log.level: expected one of debug | info | warning | error | critical, got 'loud'",
        ),
        ("log:\n  json: 'no'", 2, "log.json: expected true or false, got 'no'"),
        ("log:\n  error_log: null", 2, "log.error_log: expected a non-empty string, got null"),
        (
            "hooks:\n  on_starting: mymod",
            2,
            "hooks.on_starting: expected a hook \"module:function\" or null, got 'mymod'",
        ),
        (
            "hooks:\n  post_fork: 'mod:fn()'",
            2,
            "hooks.post_fork: expected a hook \"module:function\" or null, got 'mod:fn()'",
        ),
    ],
)
def test_nested_wrong_values(tmp_path: Path, yaml_text: str, line: int, message: str) -> None:
    path = write(tmp_path, yaml_text + "\n")
    assert error_of(path) == f"{path}:{line}: {message}"


def test_nested_values_load(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "limits:\n  body: 1048576\n  request_line: 0\n"
        "log:\n  level: DEBUG\n  access_log: '-'\n  json: true\n"
        "hooks:\n  on_starting: pkg.hooks:starting\n"
        "ssl:\n  certfile: /etc/cert.pem\n  keyfile: /etc/key.pem\n",
    )
    cfg = load_config(path, env={})
    assert cfg.limits.body == 1048576
    assert cfg.limits.request_line == 0
    assert cfg.log.level == "debug"
    assert cfg.log.access_log == "-"
    assert cfg.log.json is True
    assert cfg.hooks.on_starting == "pkg.hooks:starting"
    assert cfg.ssl.keyfile == "/etc/key.pem"
    assert cfg.origin("log.level") == f"{path}:5"


def test_keyfile_without_certfile(tmp_path: Path) -> None:
    path = write(tmp_path, "ssl:\n  keyfile: /etc/key.pem\n")
    assert error_of(path) == (
        f"{path}:2: ssl.keyfile: expected ssl.certfile to be set too, "
        "got a keyfile without a certfile"
    )


def test_keyfile_without_certfile_from_env() -> None:
    msg = error_of(env={"ARBITER_SSL_KEYFILE": "/k.pem"})
    assert msg.startswith("ARBITER_SSL_KEYFILE: ssl.keyfile: expected ssl.certfile")


# ---------------------------------------------------------------- app / bind forms


@pytest.mark.parametrize(
    "app", ["mod:app", "pkg.sub.mod:app", "mod:create()", "mod:obj.attr", "_m:_a"]
)
def test_good_app_forms(tmp_path: Path, app: str) -> None:
    assert load_config(write(tmp_path, f"app: '{app}'\n"), env={}).app == app


@pytest.mark.parametrize(
    "app", ["mod", "mod:", ":app", "mod:app(", "mod:app(1)", "mod:1app", "my-mod:app", "a..b:c"]
)
def test_bad_app_forms(tmp_path: Path, app: str) -> None:
    path = write(tmp_path, f"app: '{app}'\n")
    assert error_of(path) == (
        f'{path}:1: app: expected a WSGI app "module:attr" or a factory "module:create()", '
        f"got {app!r}"
    )


GOOD_BINDS = [
    "127.0.0.1:8000",
    "0.0.0.0:0",
    "localhost:65535",
    "example.com:80",
    "[::1]:8000",
    "[::]:80",
    "unix:/tmp/a.sock",
    "unix:/tmp/a.sock:0660",
    "unix:relative.sock",
    "fd://0",
    "fd://3",
]


@pytest.mark.parametrize("address", GOOD_BINDS)
def test_good_bind_forms(tmp_path: Path, address: str) -> None:
    cfg = load_config(write(tmp_path, f"bind: ['{address}']\n"), env={})
    assert cfg.bind == (address,)


BAD_BINDS = [
    "8000",
    ":8000",
    "127.0.0.1",
    "127.0.0.1:65536",
    "127.0.0.1:http",
    "256.1.1.1:80",
    "::1:80",
    "[::1]",
    "[::zz]:80",
    "[127.0.0.1]:80",
    "unix:",
    "unix:/tmp/a.sock:0999",
    "fd://",
    "fd://-1",
    "fd://x",
    "bad_host:80",
    "-host:80",
]


@pytest.mark.parametrize("address", BAD_BINDS)
def test_bad_bind_forms(tmp_path: Path, address: str) -> None:
    path = write(tmp_path, f"bind:\n  - '127.0.0.1:8000'\n  - '{address}'\n")
    assert error_of(path) == (
        f'{path}:3: bind[1]: expected "host:port", "[v6]:port", "unix:/path[:mode]" or '
        f'"fd://N", got {address!r}'
    )


def test_bind_single_string_is_a_list(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "bind: unix:/tmp/x.sock\n"), env={})
    assert cfg.bind == ("unix:/tmp/x.sock",)


def test_bind_wrong_type(tmp_path: Path) -> None:
    path = write(tmp_path, "bind: 8000\n")
    assert error_of(path).startswith(f"{path}:1: bind: expected a list of addresses")


def test_admin_bind(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "admin_bind: '127.0.0.1:9100'\n"), env={})
    assert cfg.admin_bind == "127.0.0.1:9100"
    path = write(tmp_path, "admin_bind: 'unix:/tmp/a'\n")
    assert error_of(path).startswith(f'{path}:1: admin_bind: expected "host:port"')


def test_forwarded_allow_ips_forms(tmp_path: Path) -> None:
    load = lambda text: load_config(write(tmp_path, text), env={}).forwarded_allow_ips  # noqa: E731
    assert load("forwarded_allow_ips: '*'\n") == ("*",)
    assert load("forwarded_allow_ips: '10.0.0.1, 10.0.0.2'\n") == ("10.0.0.1", "10.0.0.2")
    assert load("forwarded_allow_ips: ['10.0.0.0/8', '::1']\n") == ("10.0.0.0/8", "::1")
    path = write(tmp_path, "forwarded_allow_ips: ['10.0.0.1', 'nope']\n")
    assert error_of(path) == (
        f'{path}:1: forwarded_allow_ips[1]: expected an IP address, a CIDR network or "*",'
        " got 'nope'"
    )


def test_proxy_protocol_settings_follow_forwarded_headers_and_take_effect() -> None:
    names = [s.name for s in SETTINGS]
    i = names.index("forwarded_headers")
    assert names[i + 1 : i + 3] == ["proxy_protocol", "proxy_allow_ips"]
    for name in ("proxy_protocol", "proxy_allow_ips"):
        assert not SETTINGS_BY_NAME[name].later, name
    cfg = defaults()
    assert cfg.proxy_protocol is False
    assert cfg.proxy_allow_ips == ("127.0.0.1", "::1")


@pytest.mark.parametrize(
    ("yaml_value", "mode"),
    [("false", False), ("off", False), ("no", False), ("'off'", False), ("'false'", False),
     ("'OFF'", False), ("v1", "v1"), ("v2", "v2"), ("auto", "auto"), ("V2", "v2"),
     ("' auto '", "auto")],
)  # fmt: skip
def test_proxy_protocol_values(tmp_path: Path, yaml_value: str, mode: object) -> None:
    cfg = load_config(write(tmp_path, f"proxy_protocol: {yaml_value}\n"), env={})
    assert cfg.proxy_protocol == mode and type(cfg.proxy_protocol) is type(mode)


@pytest.mark.parametrize(
    ("yaml_value", "shown"),
    [("v3", "'v3'"), ("true", "true"), ("on", "true"), ("null", "null"), ("1", "1"),
     ("[v1]", "['v1']"), ("'v1,v2'", "'v1,v2'")],
)  # fmt: skip
def test_proxy_protocol_bad_values(tmp_path: Path, yaml_value: str, shown: str) -> None:
    path = write(tmp_path, f"workers: 2\nproxy_protocol: {yaml_value}\n")
    assert error_of(path) == (
        f"{path}:2: proxy_protocol: expected one of false | v1 | v2 | auto, got {shown}"
    )


def test_proxy_protocol_from_env() -> None:
    cfg = load_config(env={"ARBITER_PROXY_PROTOCOL": "v2"})
    assert cfg.proxy_protocol == "v2"
    assert cfg.origin("proxy_protocol") == "ARBITER_PROXY_PROTOCOL"
    for word in ("off", "false", "OFF", " False "):
        assert load_config(env={"ARBITER_PROXY_PROTOCOL": word}).proxy_protocol is False
    assert error_of(env={"ARBITER_PROXY_PROTOCOL": "yes"}) == (
        "ARBITER_PROXY_PROTOCOL: proxy_protocol: expected one of false | v1 | v2 | auto, "
        "got 'yes'"
    )


def test_proxy_protocol_file_env_layering(tmp_path: Path) -> None:
    path = write(tmp_path, "proxy_protocol: v1\n")
    assert load_config(path, env={}).proxy_protocol == "v1"
    assert load_config(path, env={"ARBITER_PROXY_PROTOCOL": "off"}).proxy_protocol is False


def test_proxy_allow_ips_forms(tmp_path: Path) -> None:
    load = lambda text: load_config(write(tmp_path, text), env={}).proxy_allow_ips  # noqa: E731
    assert load("proxy_allow_ips: '*'\n") == ("*",)
    assert load("proxy_allow_ips: '10.0.0.1, 10.0.0.2'\n") == ("10.0.0.1", "10.0.0.2")
    assert load("proxy_allow_ips: ['10.0.0.0/8', '::1']\n") == ("10.0.0.0/8", "::1")
    assert load("proxy_allow_ips: []\n") == ()
    path = write(tmp_path, "proxy_allow_ips:\n  - 10.0.0.1\n  - nope\n")
    assert error_of(path) == (
        f'{path}:3: proxy_allow_ips[1]: expected an IP address, a CIDR network or "*",'
        " got 'nope'"
    )
    cfg = load_config(env={"ARBITER_PROXY_ALLOW_IPS": "10.0.0.0/8,fd00::/8"})
    assert cfg.proxy_allow_ips == ("10.0.0.0/8", "fd00::/8")
    assert cfg.forwarded_allow_ips == ("127.0.0.1", "::1")  # separate lists
    assert error_of(env={"ARBITER_PROXY_ALLOW_IPS": "10.0.0.1,*.example.com"}) == (
        'ARBITER_PROXY_ALLOW_IPS: proxy_allow_ips[1]: expected an IP address, a CIDR network'
        " or \"*\", got '*.example.com'"
    )


def test_proxy_protocol_print_config_round_trips(tmp_path: Path) -> None:
    for env in ({}, {"ARBITER_PROXY_PROTOCOL": "v2", "ARBITER_PROXY_ALLOW_IPS": "10.0.0.0/8"}):
        cfg = load_config(env=env)
        again = load_config(write(tmp_path, render_effective_yaml(cfg)), env={})
        assert again == cfg
        assert (again.proxy_protocol, again.proxy_allow_ips) == (
            cfg.proxy_protocol, cfg.proxy_allow_ips)


def test_pythonpath_forms(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "pythonpath: /srv/app\n"), env={}).pythonpath == (
        "/srv/app",
    )
    assert load_config(write(tmp_path, "pythonpath: [a, b]\n"), env={}).pythonpath == ("a", "b")


# ---------------------------------------------------------------- numbers, bools, umask


def test_int_accepts_integral_float_and_auto(tmp_path: Path, monkeypatch) -> None:
    assert load_config(write(tmp_path, "workers: 4.0\n"), env={}).workers == 4
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    assert load_config(write(tmp_path, "workers: auto\n"), env={}).workers == 3


def test_numbers_accept_floats(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "timeout: 2.5\nkeepalive: 0\n"), env={})
    assert cfg.timeout == 2.5
    assert cfg.keepalive == 0


@pytest.mark.parametrize(
    ("word", "value"),
    [("true", True), ("1", True), ("yes", True), ("ON", True),
     ("false", False), ("0", False), ("no", False), ("off", False)],
)  # fmt: skip
def test_bool_words_from_env(word: str, value: bool) -> None:
    assert load_config(env={"ARBITER_PRELOAD_APP": word}).preload_app is value


def test_bool_from_env_rejects_other_words() -> None:
    assert error_of(env={"ARBITER_DAEMON": "maybe"}) == (
        "ARBITER_DAEMON: daemon: expected true or false, got 'maybe'"
    )


@pytest.mark.parametrize(
    ("yaml_value", "mask"),
    [("0o022", 0o022), ("022", 0o022), ("'022'", 0o022), ("0o077", 0o077), ("18", 18), ("0", 0)],
)
def test_umask_forms_in_yaml(tmp_path: Path, yaml_value: str, mask: int) -> None:
    assert load_config(write(tmp_path, f"umask: {yaml_value}\n"), env={}).umask == mask


def test_umask_from_env_and_cli() -> None:
    assert load_config(env={"ARBITER_UMASK": "027"}).umask == 0o027
    assert load_config(env={}, cli={"umask": "0o007"}).umask == 0o007


def test_user_group_forms(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "user: www-data\ngroup: 33\n"), env={})
    assert (cfg.user, cfg.group) == ("www-data", 33)
    assert load_config(env={"ARBITER_USER": "1000"}).user == 1000


# ---------------------------------------------------------------- env


def test_env_scalars_and_null() -> None:
    cfg = load_config(
        env={
            "ARBITER_WORKERS": "8",
            "ARBITER_LIMITS_BODY": "1024",
            "ARBITER_LOG_LEVEL": "warning",
            "ARBITER_WORKER_TYPE": "threaded",
            "ARBITER_TIMEOUT": "2.5",
        }
    )
    assert cfg.workers == 8
    assert cfg.limits.body == 1024
    assert cfg.log.level == "warning"
    assert cfg.worker_type == "threaded"
    assert cfg.timeout == 2.5
    assert cfg.origin("workers") == "ARBITER_WORKERS"


def test_env_null_resets_a_file_value(tmp_path: Path) -> None:
    path = write(tmp_path, "limits:\n  body: 10\n")
    assert load_config(path, env={"ARBITER_LIMITS_BODY": "null"}).limits.body is None


def test_env_bind_comma_and_flow_list() -> None:
    cfg = load_config(env={"ARBITER_BIND": "0.0.0.0:80,unix:/tmp/a.sock"})
    assert cfg.bind == ("0.0.0.0:80", "unix:/tmp/a.sock")
    cfg = load_config(env={"ARBITER_BIND": "['[::1]:80', '127.0.0.1:81']"})
    assert cfg.bind == ("[::1]:80", "127.0.0.1:81")


def test_env_errors_name_the_variable() -> None:
    assert error_of(env={"ARBITER_WORKERS": "x"}) == (
        "ARBITER_WORKERS: workers: expected an integer >= 1 or \"auto\", got 'x'"
    )
    assert error_of(env={"ARBITER_BIND": "0.0.0.0:80,nope"}) == (
        'ARBITER_BIND: bind[1]: expected "host:port", "[v6]:port", "unix:/path[:mode]" or '
        "\"fd://N\", got 'nope'"
    )


def test_unknown_and_empty_env_vars_are_ignored() -> None:
    cfg = load_config(env={"ARBITER_LISTEN_FDS": "3", "ARBITER_WOKERS": "9", "ARBITER_WORKERS": ""})
    assert cfg == defaults()


def test_env_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARBITER_WORKERS", "5")
    assert load_config().workers == 5


# ---------------------------------------------------------------- layering


def test_layering_default_file_env_cli(tmp_path: Path) -> None:
    path = write(tmp_path, "workers: 3\ntimeout: 10\nkeepalive: 1\nlog:\n  level: error\n")
    env = {"ARBITER_TIMEOUT": "20", "ARBITER_KEEPALIVE": "2", "ARBITER_LOG_LEVEL": "debug"}
    cfg = load_config(path, env=env, cli={"keepalive": "3"})
    assert cfg.threads == 4  # default
    assert cfg.workers == 3  # file
    assert cfg.timeout == 20  # env over file
    assert cfg.keepalive == 3  # cli over env over file
    assert cfg.log.level == "debug"
    assert cfg.origin("threads") == "default"
    assert cfg.origin("workers") == f"{path}:1"
    assert cfg.origin("keepalive") == "--keepalive"


def test_cli_values_are_validated_and_named_by_flag() -> None:
    assert error_of(cli={"workers": "0"}) == (
        "--workers: workers: expected an integer >= 1 or \"auto\", got '0'"
    )
    assert error_of(cli={"app": "nope"}).startswith("command line: app: expected")
    assert (
        error_of(cli={"wokers": 1})
        == "command line: unknown key 'wokers' (did you mean 'workers'?)"
    )


def test_cli_accepts_native_values() -> None:
    cfg = load_config(env={}, cli={"workers": 6, "preload_app": True, "bind": ["[::1]:9"]})
    assert (cfg.workers, cfg.preload_app, cfg.bind) == (6, True, ("[::1]:9",))


# ---------------------------------------------------------------- WEB_CONCURRENCY and PORT


def test_web_concurrency_is_the_default_for_workers() -> None:
    cfg = load_config(env={"WEB_CONCURRENCY": "7"})
    assert cfg.workers == 7
    assert cfg.origin("workers") == "WEB_CONCURRENCY"


def test_web_concurrency_loses_to_file_env_and_cli(tmp_path: Path) -> None:
    path = write(tmp_path, "workers: 3\n")
    assert load_config(path, env={"WEB_CONCURRENCY": "7"}).workers == 3
    assert load_config(env={"WEB_CONCURRENCY": "7", "ARBITER_WORKERS": "4"}).workers == 4
    assert load_config(env={"WEB_CONCURRENCY": "7"}, cli={"workers": "5"}).workers == 5


def test_invalid_web_concurrency() -> None:
    assert error_of(env={"WEB_CONCURRENCY": "lots"}) == (
        "WEB_CONCURRENCY: workers: expected an integer >= 1 or \"auto\", got 'lots'"
    )


def test_port_sets_default_bind() -> None:
    cfg = load_config(env={"PORT": "5000"})
    assert cfg.bind == ("0.0.0.0:5000",)
    assert cfg.origin("bind") == "PORT"


def test_port_loses_to_any_bind(tmp_path: Path) -> None:
    path = write(tmp_path, "bind: ['127.0.0.1:1']\n")
    assert load_config(path, env={"PORT": "5000"}).bind == ("127.0.0.1:1",)
    assert load_config(env={"PORT": "5000", "ARBITER_BIND": "[::1]:2"}).bind == ("[::1]:2",)
    assert load_config(env={"PORT": "5000"}, cli={"bind": ["127.0.0.1:3"]}).bind == ("127.0.0.1:3",)


@pytest.mark.parametrize("port", ["http", "0", "70000", "-1"])
def test_invalid_port(port: str) -> None:
    assert error_of(env={"PORT": port}) == (
        f"PORT: bind: expected a port number 1..65535, got {port!r}"
    )


def test_invalid_port_ignored_when_bind_is_set() -> None:
    assert load_config(env={"PORT": "x"}, cli={"bind": ["127.0.0.1:3"]}).bind == ("127.0.0.1:3",)


# ---------------------------------------------------------------- argparse


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="arbiter")
    parser.add_argument("-c", "--config")
    add_cli_options(parser)
    return parser


def test_unset_flags_do_not_override() -> None:
    assert cli_overrides(make_parser().parse_args([])) == {}


def test_flags_map_to_dotted_names() -> None:
    ns = make_parser().parse_args(
        ["-b", "127.0.0.1:1", "--bind", "unix:/tmp/s", "-w", "3", "-k", "pooled", "-t", "8",
         "--log-level", "debug", "--access-log", "-", "--preload", "--daemon", "--reuse-port",
         "--name", "web", "--timeout", "9", "--user", "nobody"]
    )  # fmt: skip
    assert cli_overrides(ns) == {
        "bind": ["127.0.0.1:1", "unix:/tmp/s"],
        "workers": "3",
        "worker_type": "pooled",
        "threads": "8",
        "log.level": "debug",
        "log.access_log": "-",
        "preload_app": True,
        "daemon": True,
        "reuse_port": True,
        "proc_name": "web",
        "timeout": "9",
        "user": "nobody",
    }
    cfg = load_config(env={}, cli=cli_overrides(ns))
    assert cfg.bind == ("127.0.0.1:1", "unix:/tmp/s")
    assert (cfg.workers, cfg.threads, cfg.log.level, cfg.proc_name) == (3, 8, "debug", "web")


def test_contract_flags_exist() -> None:
    flags = {f for s in SETTINGS for f in s.flags}
    for flag in ["-b", "--bind", "-w", "--workers", "-k", "--worker-type", "-t", "--threads",
                 "--timeout", "--graceful-timeout", "--keepalive", "--max-requests", "--pidfile",
                 "--log-level", "--access-log", "--error-log", "--preload", "--daemon",
                 "--reuse-port", "--user", "--group", "--chdir", "--name"]:  # fmt: skip
        assert flag in flags, flag


def test_help_renders() -> None:
    assert "--worker-type" in make_parser().format_help()


# ---------------------------------------------------------------- gunicorn habits


def test_option_strings_are_unique_and_every_applies_to_names_a_worker_type() -> None:
    spellings = [flag for s in SETTINGS for flag in s.option_strings]
    assert len(spellings) == len(set(spellings))
    for s in SETTINGS:
        for worker_type in s.applies_to or ():
            assert worker_type in WORKER_TYPES, s.name


def test_gunicorn_worker_classes() -> None:
    assert gunicorn_worker_class("sync")[0] == "preforked"
    assert gunicorn_worker_class("gthread")[0] == "pooled"
    assert gunicorn_worker_class("evented") == ("evented", "")
    for name in ("gevent", "eventlet", "tornado", "gevent_pywsgi", "myproject.MyWorker"):
        with pytest.raises(ValueError, match="preforked, threaded, pooled, evented, asgi"):
            gunicorn_worker_class(name)
    assert gunicorn_worker_class("uvicorn.workers.UvicornWorker")[0] == "asgi"
    assert gunicorn_worker_class("asgi") == ("asgi", "")
    # Only from the command line: the file and the environment keep arbiter's names.
    assert error_of(env={"ARBITER_WORKER_TYPE": "sync"}).startswith(
        "ARBITER_WORKER_TYPE: worker_type: expected one of")
    cfg = load_config(env={}, cli={"worker_type": "sync"}, cli_labels={"worker_type": "-k"})
    assert cfg.worker_type == "preforked"
    assert cfg.notes == ("-k sync: gunicorn's 'sync' worker class is arbiter's 'preforked' "
                         "worker type; serving with preforked",)
    assert error_of(cli={"worker_type": "gevent"}).startswith(
        "--worker-type: worker_type: gunicorn's 'gevent' worker class has no arbiter equivalent")


def test_notes_survive_pickling() -> None:
    import pickle

    cfg = load_config(env={}, cli={"worker_type": "gthread"})
    assert pickle.loads(pickle.dumps(cfg)).notes == cfg.notes


def test_a_python_config_file_is_refused_as_such(tmp_path: Path) -> None:
    path = write(tmp_path, "workers = 4\n", name="gunicorn.conf.py")
    assert error_of(path).startswith(f"{path}: is a Python file; arbiter's -c takes a YAML")


def test_repeated_flags_split_on_commas_like_gunicorn() -> None:
    cfg = load_config(env={}, cli={"forwarded_allow_ips": ["10.0.0.1, 10.0.0.2", "::1"],
                                   "pythonpath": ["a,b", "c"], "bind": ["127.0.0.1:1"]})
    assert cfg.forwarded_allow_ips == ("10.0.0.1", "10.0.0.2", "::1")
    assert cfg.pythonpath == ("a", "b", "c")


def test_a_pythonpath_with_a_comma_in_the_file_is_still_one_path(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "pythonpath: 'a,b'\n"), env={})
    assert cfg.pythonpath == ("a,b",)


def test_ineffective_settings_only_what_the_user_set() -> None:
    assert ineffective_settings(defaults()) == []
    assert ineffective_settings(load_config(env={}, cli={"worker_type": "pooled",
                                                         "threads": "30"})) == []
    [warning] = ineffective_settings(load_config(
        env={}, cli={"threads": "30"}, cli_labels={"threads": "-t"}))
    assert warning.startswith("threads: 30 (set by -t) has no effect with worker_type "
                              "preforked: it applies to pooled only")
    assert warning.endswith("-t is --threads in arbiter; gunicorn's -t is --timeout")
    [warning] = ineffective_settings(load_config(
        env={"ARBITER_THREADS": "8", "ARBITER_WORKER_TYPE": "evented"}))
    assert warning.startswith("threads: 8 (set by ARBITER_THREADS) has no effect with "
                              "worker_type evented")
    assert "gunicorn" not in warning


def test_max_connections_on_preforked_and_jitter_without_max_requests(tmp_path: Path) -> None:
    path = write(tmp_path, "max_connections: 10\nmax_requests_jitter: 50\n")
    cfg = load_config(path, env={})
    # worker_type unset, the app not imported: it may turn out ASGI, and max_connections
    # applies to asgi; once the app is known to be WSGI (arbiter check), it is reported.
    assert ineffective_settings(cfg) == [ineffective_settings(cfg, "preforked")[1]]
    warnings = ineffective_settings(cfg, "preforked")
    assert warnings == [
        f"max_connections: 10 (set by {path}:1) has no effect with worker_type preforked: "
        f"it applies to forked, threaded, pooled, evented and asgi only; a preforked worker "
        f"serves "
        f"one connection at a time",
        f"max_requests_jitter: 50 (set by {path}:2) has no effect while max_requests is 0 "
        f"(workers are never recycled)",
    ]
    for worker_type in ("forked", "threaded", "pooled", "evented"):
        cfg = load_config(path, env={}, cli={"worker_type": worker_type, "max_requests": 9})
        assert ineffective_settings(cfg) == [], worker_type


def test_effective_yaml_round_trips_with_origins(tmp_path: Path) -> None:
    import yaml

    path = write(tmp_path, "workers: 3\nlog:\n  access_format: '%(h)s \"%(r)s\" it''s'\n")
    cfg = load_config(path, env={"ARBITER_UMASK": "027", "PORT": "5000"},
                      cli={"proc_name": "123", "user": "0", "chdir": "a #b"},
                      cli_labels={"proc_name": "-n"})
    text = render_effective_yaml(cfg, ["a comment"])
    assert "# a comment\n" in text
    lines = {line.split(":", 1)[0].strip(): line for line in text.splitlines()
             if not line.startswith("#")}
    assert lines["workers"].endswith(f"# {path}:1")
    assert lines["umask"].endswith("# ARBITER_UMASK")
    assert lines["bind"].endswith("# PORT")
    assert lines["proc_name"].endswith("# -n")
    assert lines["threads"].endswith("# default")
    assert isinstance(yaml.safe_load(text), dict)
    again = load_config(write(tmp_path, text, name="printed.yaml"), env={})
    assert again == cfg
    assert (again.umask, again.proc_name, again.user, again.chdir) == (0o027, "123", 0, "a #b")


def test_lifespan_takes_yaml_s_bare_on_and_off(tmp_path: Path) -> None:
    for text, mode in (("lifespan: off", "off"), ("lifespan: on", "on"),
                       ("lifespan: auto", "auto"), ("lifespan: 'OFF'", "off")):
        assert load_config(write(tmp_path, text + "\n"), env={}).lifespan == mode
    assert load_config(env={"ARBITER_LIFESPAN": "off"}).lifespan == "off"
    path = write(tmp_path, "lifespan: sometimes\n")
    assert error_of(path) == (f"{path}:1: lifespan: expected one of auto | on | off, "
                              f"got 'sometimes'")
    assert load_config(env={}).reactor_block_warning == 0.5


def test_asgi_settings_with_worker_type_unset_warn_only_once_the_app_is_known(tmp_path: Path
                                                                             ) -> None:
    cfg = load_config(write(tmp_path, "lifespan: on\n"), env={})
    assert ineffective_settings(cfg) == []
    assert ineffective_settings(cfg, "asgi") == []
    [warning] = ineffective_settings(cfg, "preforked")
    assert warning.startswith('lifespan: "on" (set by ')
    assert "has no effect with worker_type preforked: it applies to asgi only" in warning


def test_refork_after_is_a_list_of_request_counts(tmp_path: Path) -> None:
    path = write(tmp_path, "refork_after: [1000, 5000]\n")
    assert load_config(path, env={}).refork_after == (1000, 5000)
    assert load_config(env={}).refork_after == ()
    assert load_config(env={"ARBITER_REFORK_AFTER": "50,200"}).refork_after == (50, 200)
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, "refork_after: [100, 0]\n", "bad.yaml"), env={})
    assert "refork_after[1]: expected an integer >= 1, got 0" in str(err.value)
    # on a type that cannot be a mold yet, a warning that says so, with the counts as numbers
    cfg = load_config(path, env={}, cli={"worker_type": "forked"})
    [warning] = ineffective_settings(cfg)
    assert warning.startswith(f"refork_after: [1000, 5000] (set by {path}:1) has no effect "
                              f"with worker_type forked: it applies to preforked, threaded, "
                              f"pooled, evented and asgi only")
    for worker_type in ("preforked", "threaded", "pooled", "evented", "asgi"):
        cfg = load_config(path, env={}, cli={"worker_type": worker_type})
        assert ineffective_settings(cfg) == [], worker_type
