"""Settings against any environment value (hypothesis): settings, or a SettingsError naming the
variable, never another exception; the secret key and the Redis URL (which may hold a password)
never appear in it."""

from __future__ import annotations

import os
from unittest import mock

from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from tests.strategies import ODD_CHARACTERS, SECRET_MARK
from worker.settings import ENV_PREFIX, Settings, SettingsError, describe

VARIABLES = sorted(ENV_PREFIX + name.upper() for name in Settings.model_fields)
SECRET_VARIABLES = {f"{ENV_PREFIX}SECRET_KEY", f"{ENV_PREFIX}REDIS_URL"}
# What an environment variable can hold: any text but NUL (and no lone surrogates).
ENV_CHARACTERS = st.sampled_from(ODD_CHARACTERS.replace("\x00", "")) | st.characters(
    blacklist_categories=("Cs",), blacklist_characters="\x00"
)
ENV_VALUES = st.one_of(
    st.text(ENV_CHARACTERS, max_size=60),
    st.sampled_from(
        ["-1", "0", "1e400", "nan", "inf", "1e-400", "9" * 5000, "10.0.0.0/33,::1/129", "{}", "[]"]
    ),
    st.integers(-(10**30), 10**30).map(str),
)


def settings_from(environment: dict[str, str]) -> Settings | SettingsError:
    with mock.patch.dict(os.environ, environment, clear=True):
        try:
            return Settings()
        except ValidationError as exc:
            return SettingsError(describe(exc))


@given(st.dictionaries(st.sampled_from(VARIABLES), ENV_VALUES, min_size=1, max_size=4))
def test_any_value_gives_settings_or_an_error_naming_the_variable(environment: dict[str, str]) -> None:
    found = settings_from(environment)
    if isinstance(found, SettingsError):
        named = [name for name in VARIABLES if name in str(found)]
        assert named and set(named) <= set(environment), str(found)
        return
    assert found.step_timeout > 0 and found.check_timeout > 0 and found.max_jobs >= 1


@given(
    st.sampled_from(sorted(SECRET_VARIABLES)),
    st.text(ENV_CHARACTERS, max_size=40),
    st.sampled_from(VARIABLES),
)
def test_a_secret_setting_is_never_echoed(variable: str, tail: str, other: str) -> None:
    # Another variable set to garbage too, so the error is raised and its message can be read.
    environment = {variable: SECRET_MARK + tail, other: "not-a-valid-\x01value"}
    found = settings_from(environment)
    shown = str(found) if isinstance(found, SettingsError) else repr(found)
    assert SECRET_MARK not in shown
