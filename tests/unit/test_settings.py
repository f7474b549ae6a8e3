"""Settings: every source, the precedence between them, and each error message's four parts
(key, value, rule, source). No sockets: files live in tmp_path, the environment is patched."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from runtime.config.redaction import redact_url, settings_to_dict
from runtime.config.schema import Settings
from runtime.config.settings import load_settings
from runtime.errors import ConfigError

SECRET = "hunter2-s3cret"


@pytest.fixture
def cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A clean working directory and an environment with no runtime or dynaconf variables."""
    for name in list(os.environ):
        upper = name.upper()
        if upper.startswith(("RUNTIME_", "DYNACONF")) or upper.endswith("_FOR_DYNACONF"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def problems_of(**kwargs: object) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_settings(**kwargs)  # type: ignore[arg-type]
    return info.value.problems


def only(problems: list[str]) -> str:
    assert len(problems) == 1, problems
    return problems[0]


# -- defaults and sources ------------------------------------------------------------------


def test_no_files_no_env_gives_the_struct_defaults(cwd: Path) -> None:
    (cwd / "empty").mkdir()
    assert load_settings(config_dir=cwd / "empty") == Settings()


def test_repository_settings_toml_is_valid(cwd: Path) -> None:
    repo_config = Path(__file__).resolve().parents[2] / "config"
    settings = load_settings(config_dir=repo_config)
    assert settings.params["file_stats"] == {"root": "."}


def test_precedence_file_then_secrets_then_env_then_overrides(
    cwd: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each key is set by every layer up to the one that must win, and by none above it.
    config = cwd / "config"
    write(
        config / "settings.toml",
        """
        namespace = "file"
        functions_dir = "file"
        [http]
        host = "file"
        port = 1001
        [worker]
        claim_batch = 11
        shutdown_grace_s = 1.0
        """,
    )
    write(
        config / ".secrets.toml",
        """
        functions_dir = "config-secrets"
        [http]
        host = "config-secrets"
        port = 1002
        [worker]
        claim_batch = 12
        """,
    )
    write(
        cwd / ".secrets.toml",
        """
        [http]
        host = "cwd-secrets"
        port = 1003
        [worker]
        claim_batch = 13
        """,
    )
    monkeypatch.setenv("RUNTIME_WORKER__CLAIM_BATCH", "14")
    monkeypatch.setenv("RUNTIME_HTTP__PORT", "1004")

    settings = load_settings(config_dir=config, overrides={"http.port": 1005})

    assert settings.namespace == "file"
    assert settings.worker.shutdown_grace_s == 1.0  # a sibling of overridden keys survives
    assert settings.functions_dir == "config-secrets"
    assert settings.http.host == "cwd-secrets"
    assert settings.worker.claim_batch == 14
    assert settings.http.port == 1005


def test_override_none_means_flag_not_given(cwd: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNTIME_HTTP__PORT", "1234")
    settings = load_settings(config_dir=cwd, overrides={"http.port": None})
    assert settings.http.port == 1234


def test_env_double_underscore_nests_and_text_keys_stay_text(
    cwd: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNTIME_REDIS__URL", "redis://127.0.0.1:6399/2")
    monkeypatch.setenv("RUNTIME_REDIS__TIMEOUT_S", "0.75")
    monkeypatch.setenv("RUNTIME_NAMESPACE", "123")  # a str key: "123" must not become 123
    settings = load_settings(config_dir=cwd)
    assert settings.redis.url == "redis://127.0.0.1:6399/2"
    assert settings.redis.timeout_s == 0.75
    assert settings.namespace == "123"


def test_env_var_names_are_case_insensitive(cwd: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNTIME_Http__Port", "4321")
    assert load_settings(config_dir=cwd).http.port == 4321


def test_log_level_is_accepted_in_any_case(cwd: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNTIME_LOG__LEVEL", "debug")
    assert load_settings(config_dir=cwd).log.level == "DEBUG"


def test_config_dir_comes_from_runtime_config_dir(
    cwd: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(cwd / "elsewhere" / "settings.toml", 'namespace = "elsewhere"\n')
    monkeypatch.setenv("RUNTIME_CONFIG_DIR", str(cwd / "elsewhere"))
    assert load_settings().namespace == "elsewhere"


def test_function_overrides_merge_across_layers(cwd: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(
        cwd / "config" / "settings.toml",
        """
        [functions.hello]
        concurrency = 4
        [functions.hello.backoff]
        base_s = 0.5
        """,
    )
    monkeypatch.setenv("RUNTIME_FUNCTIONS__HELLO__TIMEOUT_S", "7.5")
    settings = load_settings(
        config_dir=cwd / "config", overrides={"functions.hello.max_attempts": 9}
    )
    assert settings.functions == {
        "hello": {"concurrency": 4, "backoff": {"base_s": 0.5}, "timeout_s": 7.5, "max_attempts": 9}
    }


def test_dynaconf_switches_in_the_environment_are_ignored(
    cwd: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # If any of these were honoured, the bogus file below would be read and fail validation.
    bogus = write(cwd / "bogus.toml", "nonsense_key = 1\n[worker]\nlease_s = -5\n")
    monkeypatch.setenv("RUNTIME_SETTINGS_FILE_FOR_DYNACONF", str(bogus))
    monkeypatch.setenv("RUNTIME_ENVIRONMENTS_FOR_DYNACONF", "true")
    monkeypatch.setenv("SETTINGS_FILE_FOR_DYNACONF", str(bogus))
    monkeypatch.setenv("INCLUDES_FOR_DYNACONF", str(bogus))
    monkeypatch.setenv("DYNACONF_NAMESPACE", "from-dynaconf")
    (cwd / "config").mkdir()
    settings = load_settings(config_dir=cwd / "config")
    assert settings == Settings()


# -- error messages: key, value, rule, source ----------------------------------------------


def test_unknown_top_level_key_suggests_the_right_one(cwd: Path) -> None:
    write(cwd / "config" / "settings.toml", 'nmespace = "x"\n')
    message = only(problems_of(config_dir=cwd / "config"))
    assert message == (
        "unknown key 'nmespace' (from config/settings.toml); did you mean 'namespace'?"
    )


def test_unknown_nested_key_suggests_the_key_with_its_unit(cwd: Path) -> None:
    write(cwd / "config" / "settings.toml", "[worker]\nlease = 3\n")
    message = only(problems_of(config_dir=cwd / "config"))
    assert message == (
        "unknown key 'worker.lease' (from config/settings.toml); did you mean 'worker.lease_s'?"
    )


def test_misspelt_section_suggests_the_section(cwd: Path) -> None:
    write(cwd / "config" / "settings.toml", "[wroker]\nlease_s = 40\n")
    message = only(problems_of(config_dir=cwd / "config"))
    assert "unknown key 'wroker.lease_s'" in message
    assert "did you mean 'worker.lease_s'?" in message


def test_unknown_key_from_env_names_the_variable(
    cwd: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNTIME_WORKER__LEASE", "3")
    message = only(problems_of(config_dir=cwd))
    assert message == (
        "unknown key 'worker.lease' (from environment RUNTIME_WORKER__LEASE); "
        "did you mean 'worker.lease_s'?"
    )


def test_unknown_key_far_from_everything_has_no_suggestion(cwd: Path) -> None:
    write(cwd / "config" / "settings.toml", "zzzzqqq = 1\n")
    message = only(problems_of(config_dir=cwd / "config"))
    assert message == "unknown key 'zzzzqqq' (from config/settings.toml)"


def test_wrong_type_in_file_names_key_value_rule_and_file(cwd: Path) -> None:
    write(cwd / "config" / "settings.toml", '[worker]\nlease_s = "abc"\n')
    message = only(problems_of(config_dir=cwd / "config"))
    assert message == (
        "worker.lease_s = 'abc' (from config/settings.toml): expected float, got str"
    )


def test_file_outside_cwd_is_named_by_its_path(
    cwd: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    other = tmp_path_factory.mktemp("other-config")
    path = write(other / "settings.toml", "[http]\nport = true\n")
    message = only(problems_of(config_dir=other))
    assert message == f"http.port = True (from {path}): expected int, got bool"


def test_wrong_type_from_env_names_the_variable(cwd: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNTIME_HTTP__PORT", "eighty")
    message = only(problems_of(config_dir=cwd))
    assert message == (
        "http.port = 'eighty' (from environment RUNTIME_HTTP__PORT): expected int, got str"
    )


def test_out_of_range_names_the_bound(cwd: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(cwd / "config" / "settings.toml", "[http]\nport = 70000\n")
    monkeypatch.setenv("RUNTIME_WORKER__CLAIM_BATCH", "0")
    problems = problems_of(config_dir=cwd / "config")
    assert sorted(problems) == [
        "http.port = 70000 (from config/settings.toml): must be <= 65535",
        "worker.claim_batch = 0 (from environment RUNTIME_WORKER__CLAIM_BATCH): must be >= 1",
    ]


def test_out_of_range_from_a_flag_names_the_command_line(cwd: Path) -> None:
    message = only(problems_of(config_dir=cwd, overrides={"http.port": -1}))
    assert message == "http.port = -1 (from command line): must be >= 0"


def test_bad_choice_lists_the_choices(cwd: Path) -> None:
    message = only(problems_of(config_dir=cwd, overrides={"log.format": "yaml"}))
    assert message.startswith("log.format = 'yaml' (from command line): must be one of ")
    assert "'text'" in message
    assert "'json'" in message


def test_bad_pattern_names_the_regex(cwd: Path) -> None:
    message = only(problems_of(config_dir=cwd, overrides={"namespace": "has space"}))
    assert message.startswith("namespace = 'has space' (from command line): must match regex")


def test_section_given_as_a_scalar_must_be_a_table(cwd: Path) -> None:
    write(cwd / "config" / "settings.toml", "worker = 5\n")
    message = only(problems_of(config_dir=cwd / "config"))
    assert message == "worker = 5 (from config/settings.toml): must be a table"


def test_every_problem_is_reported_at_once(cwd: Path) -> None:
    write(
        cwd / "config" / "settings.toml",
        """
        nmespace = "x"
        [http]
        port = "x"
        [worker]
        claim_batch = 0
        """,
    )
    problems = problems_of(config_dir=cwd / "config")
    assert len(problems) == 3
    assert [p.split(" ")[0] for p in problems] == ["unknown", "http.port", "worker.claim_batch"]


def test_unreadable_toml_names_the_file(cwd: Path) -> None:
    write(cwd / "config" / "settings.toml", "[worker\nlease_s = 1\n")
    message = only(problems_of(config_dir=cwd / "config"))
    assert message.startswith("config/settings.toml: cannot read: ")


def test_config_error_text_holds_every_problem(cwd: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(config_dir=cwd, overrides={"http.port": -1, "worker.claim_batch": 0})
    text = str(info.value)
    assert text.startswith("invalid configuration:\n  ")
    for problem in info.value.problems:
        assert problem in text


# -- per-function overrides ------------------------------------------------------------------


def test_function_override_unknown_knob_suggests_max_attempts(cwd: Path) -> None:
    write(cwd / "config" / "settings.toml", "[functions.hello]\nmax_retry = 3\n")
    message = only(problems_of(config_dir=cwd / "config"))
    assert message == (
        "functions.hello.max_retry: unknown option (from config/settings.toml); "
        "did you mean 'max_attempts'?"
    )


def test_function_override_typo_gets_difflib_suggestion(
    cwd: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNTIME_FUNCTIONS__HELLO__CONCURENCY", "3")
    message = only(problems_of(config_dir=cwd))
    assert message == (
        "functions.hello.concurency: unknown option "
        "(from environment RUNTIME_FUNCTIONS__HELLO__CONCURENCY); did you mean 'concurrency'?"
    )


def test_function_override_bad_values_name_the_full_key(cwd: Path) -> None:
    write(
        cwd / "config" / "settings.toml",
        """
        [functions.hello]
        concurrency = 0
        priority = "urgent"
        [functions.hello.backoff]
        base_s = -1
        """,
    )
    problems = sorted(problems_of(config_dir=cwd / "config"))
    assert problems[0] == (
        "functions.hello.backoff.base_s = -1 (from config/settings.toml): must be >= 0.0"
    )
    assert (
        problems[1] == "functions.hello.concurrency = 0 (from config/settings.toml): must be >= 1"
    )
    assert problems[2].startswith(
        "functions.hello.priority = 'urgent' (from config/settings.toml): must be one of "
    )
    assert "'high'" in problems[2]


def test_function_override_that_is_not_a_table_is_refused(cwd: Path) -> None:
    message = only(problems_of(config_dir=cwd, overrides={"functions.hello": 3}))
    assert message == "functions.hello = 3 (from command line): must be a table"


# -- the lease cross rule ------------------------------------------------------------------


def test_lease_must_outlive_heartbeat_plus_redis_timeout(
    cwd: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(cwd / "config" / "settings.toml", "[worker]\nlease_s = 2.0\n")
    monkeypatch.setenv("RUNTIME_WORKER__HEARTBEAT_S", "1.5")
    message = only(problems_of(config_dir=cwd / "config"))
    assert message.startswith(
        "worker.lease_s = 2.0 (from config/settings.toml): must be greater than "
        "worker.heartbeat_s + redis.timeout_s = 1.5 (from environment "
        "RUNTIME_WORKER__HEARTBEAT_S) + 5.0 (from defaults)"
    )
    assert "a healthy worker loses its job" in message


def test_lease_equal_to_the_sum_is_refused_and_just_above_is_accepted(cwd: Path) -> None:
    flags = {"worker.lease_s": 1.5, "worker.heartbeat_s": 1.0, "redis.timeout_s": 0.5}
    message = only(problems_of(config_dir=cwd, overrides=flags))
    assert message.startswith("worker.lease_s = 1.5 (from command line): must be greater than")
    settings = load_settings(config_dir=cwd, overrides={**flags, "worker.lease_s": 1.51})
    assert settings.worker.lease_s == 1.51


def test_lease_rule_is_not_reported_on_top_of_a_bad_value(cwd: Path) -> None:
    message = only(problems_of(config_dir=cwd, overrides={"worker.heartbeat_s": "soon"}))
    assert message.startswith("worker.heartbeat_s = 'soon' (from command line)")


# -- secrets ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        (f"redis://:{SECRET}@host", "redis://:**@host"),
        (f"redis://user:{SECRET}@host:6379/0", "redis://user:**@host:6379/0"),
        (f"rediss://u:pa:ss@w/rd{SECRET}@host/1", "rediss://u:**@host/1"),
        (f"redis://host:6379/0?password={SECRET}&db=1", "redis://host:6379/0?password=**&db=1"),
        ("redis://user@host:6379/0", "redis://user@host:6379/0"),
        ("redis://host:6379/0", "redis://host:6379/0"),
        ("", ""),
    ],
)
def test_redact_url(url: str, masked: str) -> None:
    assert redact_url(url) == masked


def test_settings_to_dict_masks_url_passwords_and_secret_params(
    cwd: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(
        cwd / "config" / ".secrets.toml",
        f"""
        [params.mailer]
        api_key = "{SECRET}"
        smtp_password = "{SECRET}"
        host = "mail.example"
        """,
    )
    monkeypatch.setenv("RUNTIME_REDIS__URL", f"redis://:{SECRET}@cache:6379/0")
    settings = load_settings(config_dir=cwd / "config")
    assert settings.redis.url == f"redis://:{SECRET}@cache:6379/0"  # the real value is kept
    shown = settings_to_dict(settings)
    assert shown["redis"]["url"] == "redis://:**@cache:6379/0"
    assert shown["params"]["mailer"] == {
        "api_key": "**",
        "smtp_password": "**",
        "host": "mail.example",
    }
    assert SECRET not in repr(shown)
    assert settings_to_dict(settings, masked=False)["redis"]["url"] == settings.redis.url


def test_settings_to_dict_masks_a_query_string_password(
    cwd: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNTIME_REDIS__URL", f"redis://cache:6379/0?password={SECRET}")
    shown = settings_to_dict(load_settings(config_dir=cwd))
    assert SECRET not in repr(shown)


def test_secrets_never_appear_in_error_messages(cwd: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(
        cwd / "config" / ".secrets.toml",
        f"""
        [redis]
        url = "http://admin:{SECRET}@cache:6379"
        pasword = "{SECRET}"
        """,
    )
    monkeypatch.setenv("RUNTIME_REDIS__TOKEN", SECRET)
    problems = problems_of(config_dir=cwd / "config")
    assert len(problems) == 3
    url_problem = next(p for p in problems if p.startswith("redis.url"))
    assert url_problem == (
        "redis.url = 'http://admin:**@cache:6379' (from config/.secrets.toml): must be empty "
        "(embedded redis-server) or a URL like redis://[[user]:password@]host[:port][/db], "
        "rediss://… (TLS), unix:///path/to/redis.sock, or "
        "redis+cluster://host:port[,host:port…] (Redis Cluster)"
    )
    assert any("unknown key 'redis.pasword'" in p for p in problems)
    assert any("unknown key 'redis.token'" in p for p in problems)
    assert SECRET not in "\n".join(problems)


def test_query_string_password_never_appears_in_error_messages(
    cwd: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNTIME_REDIS__URL", f"http://cache:6379/0?password={SECRET}")
    message = only(problems_of(config_dir=cwd))
    assert message.startswith("redis.url = ")
    assert SECRET not in message


def test_secrets_file_in_cwd_is_read(cwd: Path) -> None:
    write(cwd / ".secrets.toml", f'[redis]\nurl = "redis://:{SECRET}@h:1/0"\n')
    (cwd / "config").mkdir()
    assert load_settings(config_dir=cwd / "config").redis.url == f"redis://:{SECRET}@h:1/0"


def test_a_config_folder_that_does_not_exist_is_an_error(
    cwd: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ConfigError) as exc:
        load_settings(config_dir=cwd / "confg")
    assert str(exc.value).splitlines()[1:] == [
        f"  config folder '{cwd / 'confg'}' (from --config) not found; create it or fix the path"
    ]
    monkeypatch.setenv("RUNTIME_CONFIG_DIR", "nowhere")
    with pytest.raises(ConfigError, match="'nowhere' \\(from environment RUNTIME_CONFIG_DIR\\)"):
        load_settings()
    monkeypatch.delenv("RUNTIME_CONFIG_DIR")
    assert load_settings() == Settings()  # the default ./config may be absent


def test_a_secret_of_any_type_is_masked(cwd: Path) -> None:
    write(cwd / "config" / "settings.toml", "[http]\ntoken = 424242\n")
    with pytest.raises(ConfigError) as exc:
        load_settings(config_dir=cwd / "config")
    assert "424242" not in str(exc.value)


# -- the event loop ----------------------------------------------------------------------


def test_event_loop_from_environment_and_its_factory(
    cwd: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uvloop

    from runtime.server.app import _event_loop_factory

    (cwd / "empty").mkdir()
    monkeypatch.setenv("RUNTIME_EVENT_LOOP", "asyncio")
    settings = load_settings(config_dir=cwd / "empty")
    assert settings.event_loop == "asyncio"
    assert _event_loop_factory(settings.event_loop) is None  # asyncio's own loop
    assert _event_loop_factory("auto") is uvloop.new_event_loop
    monkeypatch.setenv("RUNTIME_EVENT_LOOP", "libuv")
    assert only(problems_of(config_dir=cwd / "empty")) == (
        "event_loop = 'libuv' (from environment RUNTIME_EVENT_LOOP): "
        "must be one of 'auto', 'uvloop', 'asyncio'"
    )
