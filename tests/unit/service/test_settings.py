"""Settings from LAWM_* variables: lists as commas or JSON, "latest", and refusals naming the field."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from service.settings import Settings
from service.startup import settings_from
from training.config import ConfigError

KEY_A, KEY_B = "a" * 20, "b" * 20


def test_defaults_serve_the_demo_model_locally() -> None:
    s = Settings()
    assert (s.host, s.port, s.model, s.version, s.runtime) == ("127.0.0.1", 8000, "demo", 1, "onnxruntime")
    assert s.api_keys == [] and s.auth_exempt == ["/livez", "/readyz", "/metrics"]


@pytest.mark.parametrize("raw", [f"{KEY_A},{KEY_B}", f" {KEY_A} , {KEY_B} ", f'["{KEY_A}", "{KEY_B}"]'])
def test_api_keys_from_the_environment(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv("LAWM_API_KEYS", raw)
    assert Settings().api_keys == [KEY_A, KEY_B]


def test_latest_version_and_limits_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAWM_VERSION", "latest")
    monkeypatch.setenv("LAWM_MAX_FRAMES", "12")
    s = Settings()
    assert s.version is None and s.max_frames == 12


def test_short_keys_and_relative_exempt_paths_are_refused() -> None:
    with pytest.raises(ValidationError, match="at least 16"):
        Settings(api_keys=["short"])
    with pytest.raises(ValidationError, match="starting with '/'"):
        Settings(auth_exempt=["livez"])


def test_cli_flags_win_and_bad_values_name_the_flag_and_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAWM_PORT", "9000")
    assert settings_from({"port": 9100, "host": None}).port == 9100
    with pytest.raises(ConfigError, match=r"max_batch_size \(--max-batch-size or LAWM_MAX_BATCH_SIZE\)"):
        settings_from({"max_batch_size": 0})


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_option_help_shows_the_settings_own_defaults(command: str) -> None:
    """The defaults a `lawm serve|worker --help` names are read from `Settings`, never copied."""
    import re

    import typer

    from service.cli import app

    fields = {"port": "worker_port" if command == "worker" else "port", "concurrency": "worker_concurrency"}
    shown = {}
    for param in typer.main.get_command(app).commands[command].params:  # type: ignore[attr-defined]
        found = re.search(r"\(default: ([^)]*)\)", getattr(param, "help", None) or "")
        if found:
            shown[fields.get(param.name, param.name)] = found.group(1)
    assert {"repo", "model", "runtime", "device", "host"} <= set(shown)
    for field, text in shown.items():
        default = Settings.model_fields[field].default
        assert text.startswith(str(default)), (field, text, default)
