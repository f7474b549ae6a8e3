"""Several verification keys (``deploy.signing_key`` plus ``deploy.verify_keys``): a
signature verifies with any of them, the settings parse and mask them, and no refusal or
error message shows a key."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime.config.redaction import settings_to_dict
from runtime.config.schema import DeploySettings
from runtime.config.settings import load_settings
from runtime.deploy.bundle import (
    BundleFile,
    FunctionEntry,
    build_manifest,
    encode_manifest,
    sign,
    verify_manifest,
)
from runtime.errors import BundleRefused, ConfigError
from runtime.function import FunctionOptions

KEY_A = "a" * 40
KEY_B = "b" * 40
KEY_C = "c" * 40


def manifest_signed_with(key: str) -> tuple[bytes, str]:
    files = [BundleFile("hello.py", b"x = 1\n")]
    entry = FunctionEntry("hello", "async", FunctionOptions(), "functions/hello.py:1")
    manifest = encode_manifest(build_manifest(files, [entry], namespace="rt", version=3, now_ms=1))
    return manifest, sign(key, manifest)


def test_the_signing_key_comes_first_and_repeats_and_empties_are_dropped() -> None:
    deploy = DeploySettings(signing_key=KEY_A, verify_keys=(KEY_B, "", KEY_A, KEY_C))
    assert deploy.verification_keys() == (KEY_A, KEY_B, KEY_C)
    assert DeploySettings(verify_keys=(KEY_B,)).verification_keys() == (KEY_B,)
    assert DeploySettings().verification_keys() == ()


@pytest.mark.parametrize("signer", [KEY_A, KEY_B])
def test_a_signature_verifies_with_any_of_the_keys(signer: str) -> None:
    manifest, signature = manifest_signed_with(signer)
    verified = verify_manifest((KEY_A, KEY_B), manifest, signature, namespace="rt", version=3)
    assert verified.version == 3


def test_a_key_rotated_out_is_refused_and_no_key_is_shown() -> None:
    manifest, signature = manifest_signed_with(KEY_A)
    for keys, tried in [(KEY_B, "the key"), ((KEY_B, KEY_C), "any of the 2 keys")]:
        with pytest.raises(BundleRefused) as info:
            verify_manifest(keys, manifest, signature, namespace="rt", version=3)
        why = str(info.value)
        assert f"signature does not verify with {tried} this process holds" in why
        assert "rotated out of deploy.verify_keys" in why
        assert not any(k in why for k in (KEY_A, KEY_B, KEY_C, signature))


def test_no_key_at_all_verifies_nothing() -> None:
    manifest, signature = manifest_signed_with(KEY_A)
    with pytest.raises(BundleRefused):
        verify_manifest((), manifest, signature, namespace="rt", version=3)


def test_verify_keys_parse_from_the_environment_and_are_masked(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RUNTIME_DEPLOY__SIGNING_KEY", KEY_A)
    monkeypatch.setenv("RUNTIME_DEPLOY__VERIFY_KEYS", f'["{KEY_B}", "{KEY_C}"]')
    settings = load_settings()
    assert settings.deploy.verification_keys() == (KEY_A, KEY_B, KEY_C)
    assert settings_to_dict(settings)["deploy"]["verify_keys"] == ["**", "**"]


def test_a_short_verify_key_is_refused_without_showing_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RUNTIME_DEPLOY__VERIFY_KEYS", f'["{KEY_B}", "short-secret-value"]')
    with pytest.raises(ConfigError) as info:
        load_settings()
    text = str(info.value)
    assert "deploy.verify_keys = ['**', '**']" in text and "at least 32" in text
    assert "short-secret-value" not in text and KEY_B not in text


def test_a_settings_file_takes_a_toml_list(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / ".secrets.toml").write_text(
        f'[deploy]\nsigning_key = "{KEY_B}"\nverify_keys = ["{KEY_A}"]\n'
    )
    assert load_settings().deploy.verification_keys() == (KEY_B, KEY_A)
