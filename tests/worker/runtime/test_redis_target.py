"""INBOXCHECK_REDIS_URL's forms: one server, or a master behind Redis Sentinel; what a bad one
says (the setting's name, never the password)."""

from __future__ import annotations

import pytest

from worker.runtime.redis_target import (
    DEFAULT_SENTINEL_PORT,
    MAX_SENTINELS,
    SentinelTarget,
    parse_sentinel_url,
    tls_options,
    where,
)
from worker.settings import Settings, SettingsError, get_settings

SECRET = "s3cret-Pa55word"
# A password with every character that separates a URL's parts; none of its pieces may show.
SPLIT_SECRET = "Xq7/Zk9:Wm3@Vb5?Tn1#Rp2"
SPLIT_PIECES = ("Xq7", "Zk9", "Wm3", "Vb5", "Tn1", "Rp2")


def test_a_sentinel_url_names_the_sentinels_the_master_and_the_database() -> None:
    target = parse_sentinel_url(
        f"redis+sentinel://app:{SECRET}@10.0.0.1:26380,sentinel-b,[::1]:26381/cache/3"
    )
    assert target == SentinelTarget(
        sentinels=(("10.0.0.1", 26380), ("sentinel-b", DEFAULT_SENTINEL_PORT), ("::1", 26381)),
        master="cache",
        db=3,
        tls=False,
        username="app",
        password=SECRET,
    )
    assert SECRET not in repr(target) and SECRET not in target.where()
    assert target.where() == "master 'cache' of the sentinels at 10.0.0.1:26380,sentinel-b:26379,[::1]:26381"


@pytest.mark.parametrize(
    "credentials",
    [f"app:{SPLIT_SECRET}", "app:" + "Xq7%2FZk9%3AWm3%40Vb5%3FTn1%23Rp2"],
    ids=["as-is", "percent-encoded"],
)
def test_a_password_may_hold_slashes_colons_and_at_signs(credentials: str) -> None:
    target = parse_sentinel_url(f"redis+sentinel://{credentials}@s1:26380,s2/cache/2")
    assert target is not None
    assert (target.username, target.password) == ("app", SPLIT_SECRET)
    assert (target.sentinels, target.master, target.db) == ((("s1", 26380), ("s2", 26379)), "cache", 2)


def test_the_database_defaults_to_0_and_rediss_means_tls() -> None:
    target = parse_sentinel_url(f"rediss+sentinel://:{SECRET}@s1/mymaster")
    assert target is not None
    assert (target.db, target.tls, target.username, target.password) == (0, True, None, SECRET)


def test_a_plain_url_is_not_a_sentinel_one() -> None:
    assert parse_sentinel_url("redis://127.0.0.1:6379/0") is None
    assert where(f"redis://:{SECRET}@10.1.2.3:6380/0") == "10.1.2.3:6380"


@pytest.mark.parametrize(
    ("url", "says"),
    [
        (f"redis+sentinel://:{SECRET}@s1:26379", "no master name"),
        (f"redis+sentinel://:{SECRET}@s1:26379/", "no master name"),
        (f"redis+sentinel://:{SECRET}@/mymaster", "no sentinel host"),
        (f"redis+sentinel://:{SECRET}@s1,,s2/mymaster", "an empty one between commas"),
        (f"redis+sentinel://:{SECRET}@s1:port/mymaster", "'s1:port': the port must be a number"),
        (f"redis+sentinel://:{SECRET}@s1:70000/mymaster", "from 1 to 65535"),
        (f"redis+sentinel://:{SECRET}@s1/mymaster/zero", "only a database number"),
        (f"redis+sentinel://:{SECRET}@s1/mymaster/0/1", "only a database number"),
        (f"redis+sentinel://:{SECRET}@s1/mymaster?db=1", "no query"),
        (f"redis+sentinel://:{SECRET}@[::1:26379/mymaster", "[address]:port"),
        ("redis+sentinel://" + ",".join(["s"] * (MAX_SENTINELS + 1)) + "/m", f"at most {MAX_SENTINELS}"),
        (f"http://:{SECRET}@s1/0", "must start with one of"),
        (f"redis+sentinel://app:{SPLIT_SECRET}@s1:26379", "no master name"),
        (f"redis+sentinel://:{SPLIT_SECRET}@/mymaster", "no sentinel host"),
        (f"redis+sentinel://app:{SPLIT_SECRET}@s1:port/mymaster", "'s1:port': the port must be a number"),
        (f"redis+sentinel://:{SPLIT_SECRET}@s1/mymaster/zero", "only a database number"),
        (f"redis+sentinel://:{SPLIT_SECRET}@s1/mymaster?db=1", "no query"),
    ],
)
def test_a_bad_url_names_the_setting_and_what_is_wrong_never_the_password(
    monkeypatch: pytest.MonkeyPatch, url: str, says: str
) -> None:
    monkeypatch.setenv("INBOXCHECK_REDIS_URL", url)
    get_settings.cache_clear()
    try:
        with pytest.raises(SettingsError) as raised:
            get_settings()
    finally:
        get_settings.cache_clear()
    message = str(raised.value)
    assert message.startswith("invalid settings: INBOXCHECK_REDIS_URL: ")
    assert says in message
    assert SECRET not in message
    assert not [piece for piece in SPLIT_PIECES if piece in message]


def test_tls_options_apply_to_a_tls_sentinel_url_only() -> None:
    assert tls_options(Settings(redis_url="redis+sentinel://s1/m")) == {}
    assert tls_options(Settings(redis_url="rediss+sentinel://s1/m"))["ssl_check_hostname"] is True


def test_the_sentinel_password_stays_out_of_the_settings_repr() -> None:
    settings = Settings(redis_url="redis+sentinel://s1/m", redis_sentinel_password=SECRET)
    assert SECRET not in repr(settings)
