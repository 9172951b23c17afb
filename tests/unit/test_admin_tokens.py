"""MAAS_ADMIN_TOKENS (API v1.1): named admin tokens, checked when the settings are read."""

from __future__ import annotations

import pytest

from serving.config import ConfigError, Settings


def test_named_tokens_and_the_single_token_as_admin() -> None:
    settings = Settings.from_env({"MAAS_ADMIN_TOKENS": "alice:tok1, ci:tok2", "MAAS_ADMIN_TOKEN": "tok3"})
    assert settings.admin_credentials == (("alice", "tok1"), ("ci", "tok2"), ("admin", "tok3"))
    assert Settings.from_env({"MAAS_ADMIN_TOKEN": "tok3"}).admin_credentials == (("admin", "tok3"),)
    assert Settings.from_env({}).admin_credentials == ()
    # A token may hold ':' (only the first one separates the label).
    assert Settings.from_env({"MAAS_ADMIN_TOKENS": "ops:a:b"}).admin_credentials == (("ops", "a:b"),)
    # Settings built in code (as the tests build them) name the single token admin too.
    assert Settings(admin_token="t").admin_credentials == (("admin", "t"),)


@pytest.mark.parametrize(
    "tokens, single, message",
    [
        ("alice", None, "entry 1 must be label:token"),
        ("alice:", None, "entry 1 must be label:token"),
        ("alice:t1,,ci:t2", None, "entry 2 is empty"),
        ("Alice:t1", None, "label 'Alice'"),
        (":t1", None, "label ''"),
        ("-x:t1", None, "label '-x'"),
        ("a" * 65 + ":t1", None, "must match"),
        ("alice:t1,alice:t2", None, "'alice' is given more than once"),
        ("admin:t1", "t2", "'admin' is given more than once (MAAS_ADMIN_TOKEN"),
        ("alice:same,ci:same", None, "the token of 'alice' is also another label's"),
        ("alice:same", "same", "the token of 'alice' is also another label's"),
    ],
)
def test_bad_admin_tokens_are_a_config_error_that_never_shows_a_token(
    tokens: str, single: str | None, message: str
) -> None:
    env = {"MAAS_ADMIN_TOKENS": tokens} | ({"MAAS_ADMIN_TOKEN": single} if single else {})
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")) as raised:
        Settings.from_env(env)
    for token in ("t1", "t2", "same"):
        assert f"{token}'" not in str(raised.value) and f":{token}" not in str(raised.value)
