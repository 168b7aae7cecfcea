"""One URL redaction for logs and errors: passwords, and NATS tokens, never shown."""

from __future__ import annotations

import pytest

from serendib.urls import redact_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "postgresql://app:s3cret@db:5432/tasks?schema=x",
            "postgresql://app:***@db:5432/tasks?schema=x",
        ),
        ("postgresql://app@db/tasks", "postgresql://app@db/tasks"),
        ("sqlite:///tasks.db", "sqlite:///tasks.db"),
        ("not a url [", "not a url ["),
    ],
)
def test_passwords_are_hidden_and_users_kept(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_a_user_alone_is_hidden_when_it_is_a_token() -> None:
    assert (
        redact_url("nats://tok@a:1,nats://b:2", user_is_secret=True) == "nats://***@a:1,nats://b:2"
    )
    assert redact_url("nats://u:p@a:1", user_is_secret=True) == "nats://***@a:1"
