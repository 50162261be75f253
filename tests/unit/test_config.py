"""Settings from the environment: development defaults, and production refusing to start unsafely."""

from __future__ import annotations

import pytest

from voucher_service.config import DEV_PASSPHRASE, ConfigurationError, Settings

PROD = {
    "VOUCHER_ENV": "production",
    "VOUCHER_REDIS_URL": "redis://127.0.0.1:6379/0",
    "VOUCHER_SECRET_KEY": "s" * 40,
    "VOUCHER_SIGNING_KEY_PASSPHRASE": "a real passphrase",
    "VOUCHER_DATABASE_URL": "postgresql+psycopg://db/voucher",
}


def test_development_defaults_to_sqlite_under_var_and_keeps_its_generated_secret(tmp_path):
    env = {"VOUCHER_VAR_DIR": str(tmp_path)}
    first, second = Settings.from_env(env), Settings.from_env(env)
    assert first.env == "development"
    assert first.database_url == f"sqlite:///{tmp_path / 'voucher.sqlite3'}"
    assert first.redis_url is None
    assert first.secret_key == second.secret_key and len(first.secret_key) >= 32
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0  # readable by its owner only
    assert first.signing_key_passphrase == DEV_PASSPHRASE


def test_production_starts_with_everything_set(tmp_path):
    settings = Settings.from_env({**PROD, "VOUCHER_VAR_DIR": str(tmp_path)})
    assert (settings.env, settings.redis_url) == ("production", PROD["VOUCHER_REDIS_URL"])


@pytest.mark.parametrize(
    "missing", ["VOUCHER_REDIS_URL", "VOUCHER_SECRET_KEY", "VOUCHER_SIGNING_KEY_PASSPHRASE"]
)
def test_production_refuses_to_start_without(missing, tmp_path):
    env = {k: v for k, v in PROD.items() if k != missing} | {"VOUCHER_VAR_DIR": str(tmp_path)}
    with pytest.raises(ConfigurationError, match=missing):
        Settings.from_env(env)


def test_production_refuses_the_development_passphrase_and_a_short_secret(tmp_path):
    with pytest.raises(ConfigurationError, match="passphrase"):
        Settings.from_env(
            {**PROD, "VOUCHER_SIGNING_KEY_PASSPHRASE": DEV_PASSPHRASE, "VOUCHER_VAR_DIR": str(tmp_path)}
        )
    with pytest.raises(ConfigurationError, match="32"):
        Settings.from_env({**PROD, "VOUCHER_SECRET_KEY": "short", "VOUCHER_VAR_DIR": str(tmp_path)})


def test_an_unknown_environment_is_refused(tmp_path):
    with pytest.raises(ConfigurationError):
        Settings.from_env({"VOUCHER_ENV": "staging", "VOUCHER_VAR_DIR": str(tmp_path)})


@pytest.mark.parametrize("passphrase", ["short", "fifteen-chars!!", " " * 3])
def test_production_refuses_a_signing_passphrase_under_16_characters(passphrase, tmp_path):
    with pytest.raises(ConfigurationError, match="at least 16"):
        Settings.from_env(
            {**PROD, "VOUCHER_SIGNING_KEY_PASSPHRASE": passphrase, "VOUCHER_VAR_DIR": str(tmp_path)}
        )


def test_production_accepts_a_16_character_passphrase_and_keeps_the_full_scrypt_cost(tmp_path):
    settings = Settings.from_env(
        {**PROD, "VOUCHER_SIGNING_KEY_PASSPHRASE": "p" * 16, "VOUCHER_VAR_DIR": str(tmp_path)}
    )
    assert settings.signing_key_passphrase == "p" * 16
    assert settings.signing_key_scrypt_n >= 2**15


def test_production_hashes_staff_passwords_with_rfc_9106s_second_setting_and_the_strong_scrypt(tmp_path):
    """Tests lower these costs for speed (tests/conftest.py); production never runs with them lowered."""
    from voucher_service.services.staff import password_hasher

    settings = Settings.from_env({**PROD, "VOUCHER_VAR_DIR": str(tmp_path)})
    hasher = password_hasher(settings)
    assert (hasher.time_cost, hasher.memory_cost, hasher.parallelism) == (3, 64 * 1024, 4)
    assert hasher.hash("correct horse battery").startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert settings.signing_key_scrypt_n == 2**15


@pytest.mark.parametrize(
    "weaker",
    [{"staff_password_time_cost": 1}, {"staff_password_memory_kib": 1024}, {"signing_key_scrypt_n": 2**10}],
)
def test_production_refuses_weaker_password_or_key_hashing(weaker, tmp_path):
    with pytest.raises(ConfigurationError, match="production"):
        Settings.from_env({**PROD, "VOUCHER_VAR_DIR": str(tmp_path)}, **weaker)
    Settings.from_env({"VOUCHER_VAR_DIR": str(tmp_path)}, **weaker)  # tests and development may


def test_cheap_hashing_is_for_the_test_environment_only(tmp_path):
    env = {"VOUCHER_VAR_DIR": str(tmp_path), "VOUCHER_TEST_CHEAP_HASHING": "1"}
    assert Settings.from_env({**env, "VOUCHER_ENV": "test"}).staff_password_memory_kib == 8
    assert Settings.from_env({**env, "VOUCHER_ENV": "development"}).staff_password_memory_kib == 64 * 1024
    production = Settings.from_env({**PROD, **env})
    assert (production.staff_password_memory_kib, production.signing_key_scrypt_n) == (64 * 1024, 2**15)
