"""Bundles without Redis: collecting files, signing, verifying, limits, extraction, state."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import msgspec
import pytest

from runtime.config.redaction import settings_to_dict
from runtime.config.registry import LiveRegistry, Registry, forget_folder, load_registry
from runtime.config.settings import load_settings
from runtime.deploy.bundle import (
    BundleFile,
    BundleLimits,
    FunctionEntry,
    Manifest,
    build_manifest,
    collect_files,
    content_digest,
    encode_files,
    encode_manifest,
    file_entries,
    open_bundle,
    sign,
    verify_manifest,
    write_files,
)
from runtime.deploy.store import extract, prune_local
from runtime.deploy.watcher import SwapState
from runtime.errors import BundleRefused, ConfigError, RegistryError
from runtime.function import FunctionOptions

KEY = "k" * 40
OTHER_KEY = "o" * 40
LIMITS = BundleLimits(max_bundle_bytes=10_000, max_files=5)
HELLO = (
    b"from runtime import function\n\n@function\nasync def hello(x: int) -> int:\n    return x\n"
)


def entry(name: str = "hello") -> FunctionEntry:
    return FunctionEntry(name, "async", FunctionOptions(concurrency=3), f"functions/{name}.py:4")


def signed(
    files: list[BundleFile], *, version: int = 7, key: str = KEY
) -> tuple[Manifest, bytes, str, bytes]:
    manifest = build_manifest(files, [entry()], namespace="rt", version=version, now_ms=1)
    manifest_json = encode_manifest(manifest)
    return manifest, manifest_json, sign(key, manifest_json), encode_files(files)


def open_(manifest_json: bytes, sig: str, blob: bytes, **kw: object) -> object:
    args: dict[str, object] = {"namespace": "rt", "version": 7, "limits": LIMITS} | kw
    return open_bundle(KEY, manifest_json, sig, blob, **args)  # type: ignore[arg-type]


FILES = [BundleFile("_util.py", b"X = 1\n"), BundleFile("hello.py", HELLO)]


# -- signing and verifying ------------------------------------------------------------------


def test_a_signed_bundle_opens_with_the_same_key() -> None:
    manifest, manifest_json, sig, blob = signed(FILES)
    bundle = open_bundle(KEY, manifest_json, sig, blob, namespace="rt", version=7, limits=LIMITS)
    assert bundle.manifest == manifest
    assert [f.name for f in bundle.files] == ["_util.py", "hello.py"]
    assert manifest.function_names == ["hello"]
    assert manifest.overrides["hello"]["concurrency"] == 3
    assert manifest.created_by.count("@") == 1


def test_another_key_is_refused() -> None:
    _, manifest_json, sig, blob = signed(FILES, key=OTHER_KEY)
    with pytest.raises(BundleRefused, match="signature does not verify"):
        open_(manifest_json, sig, blob)


@pytest.mark.parametrize("where", ["manifest", "signature"])
def test_one_changed_byte_of_manifest_or_signature_is_refused(where: str) -> None:
    _, manifest_json, sig, blob = signed(FILES)
    if where == "manifest":
        manifest_json = manifest_json.replace(b'"concurrency":3', b'"concurrency":4')
    else:
        sig = ("0" if sig[0] != "0" else "1") + sig[1:]
    with pytest.raises(BundleRefused, match="signature does not verify"):
        open_(manifest_json, sig, blob)


def test_changed_file_bytes_are_refused() -> None:
    _, manifest_json, sig, _ = signed(FILES)
    evil = encode_files([FILES[0], BundleFile("hello.py", HELLO.replace(b"return x", b"return 0"))])
    with pytest.raises(BundleRefused, match=r"hello\.py: content does not match its signed sha256"):
        open_(manifest_json, sig, evil)


@pytest.mark.parametrize(
    "files",
    [
        [BundleFile("hello.py", HELLO)],  # a file dropped
        [*FILES, BundleFile("evil.py", b"import os\n")],  # a file added
        [FILES[1], BundleFile("_other.py", b"X = 1\n")],  # a file renamed
    ],
)
def test_a_file_list_other_than_the_signed_one_is_refused(files: list[BundleFile]) -> None:
    _, manifest_json, sig, _ = signed(FILES)
    with pytest.raises(BundleRefused, match=r"not the signed list"):
        open_(manifest_json, sig, encode_files(files))


def test_a_signed_bundle_copied_to_another_version_or_namespace_is_refused() -> None:
    _, manifest_json, sig, blob = signed(FILES)
    with pytest.raises(BundleRefused, match="copied to another place"):
        open_(manifest_json, sig, blob, version=8)
    with pytest.raises(BundleRefused, match="copied to another place"):
        open_(manifest_json, sig, blob, namespace="prod")


def test_the_key_never_appears_in_a_refusal() -> None:
    _, manifest_json, sig, blob = signed(FILES, key=OTHER_KEY)
    with pytest.raises(BundleRefused) as info:
        open_(manifest_json, sig, blob)
    assert KEY not in str(info.value) and OTHER_KEY not in str(info.value)


def test_path_names_are_refused_even_when_signed() -> None:
    """A key holder's bug (or a hand-made manifest) must still not write outside the folder."""
    evil = [BundleFile("../escape.py", b"x = 1\n")]
    entries = file_entries(evil)
    manifest = Manifest(1, "rt", 7, content_digest(entries), 6, entries, [entry()], "me@h", 1)
    manifest_json = encode_manifest(manifest)
    with pytest.raises(BundleRefused, match="bad or repeated file names"):
        open_(manifest_json, sign(KEY, manifest_json), encode_files(evil))
    with pytest.raises(BundleRefused, match="not a plain name"):
        write_files(evil, Path("/nonexistent"))


def test_a_runtime_applies_its_own_size_limits_before_decoding_files() -> None:
    big = [BundleFile("hello.py", HELLO + b"#" * 20_000)]
    _, manifest_json, sig, blob = signed(big)
    with pytest.raises(BundleRefused, match=r"over this runtime's deploy.max_bundle_bytes = 10000"):
        open_(manifest_json, sig, blob)
    # The signed manifest is small but the stored blob has grown: refused before decoding.
    _, manifest_json, sig, _ = signed(FILES)
    padded = encode_files(FILES) + b"\x00" * 5_000
    with pytest.raises(BundleRefused, match="stored files are"):
        open_(manifest_json, sig, padded)


def test_verify_manifest_refuses_another_format() -> None:
    manifest, _, _, _ = signed(FILES)
    other = encode_manifest(msgspec.structs.replace(manifest, format=2))
    with pytest.raises(BundleRefused, match="format 2"):
        verify_manifest(KEY, other, sign(KEY, other), namespace="rt", version=7)


def test_sign_needs_a_key() -> None:
    with pytest.raises(ValueError, match="no signing key"):
        sign("", b"{}")


# -- collecting a folder --------------------------------------------------------------------


def test_collect_takes_py_files_and_helpers_only(tmp_path: Path) -> None:
    (tmp_path / "hello.py").write_bytes(HELLO)
    (tmp_path / "_util.py").write_text("X = 1\n")
    (tmp_path / "notes.txt").write_text("not code")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "deep.py").write_text("x = 1\n")
    files = collect_files(tmp_path, LIMITS)
    assert [f.name for f in files] == ["_util.py", "hello.py"]


def test_content_digest_is_sha256sum_of_sha256sum(tmp_path: Path) -> None:
    (tmp_path / "hello.py").write_bytes(HELLO)
    (tmp_path / "_util.py").write_text("X = 1\n")
    files = collect_files(tmp_path, LIMITS)
    listing = "".join(
        f"{hashlib.sha256((tmp_path / n).read_bytes()).hexdigest()}  {n}\n"
        for n in ("_util.py", "hello.py")
    )
    assert content_digest(file_entries(files)) == hashlib.sha256(listing.encode()).hexdigest()


@pytest.mark.parametrize("name", [".hidden.py", "two.dots.py", "sp ace.py"])
def test_names_that_are_not_plain_are_refused(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_text("x = 1\n")
    with pytest.raises(RegistryError, match="must be letters, digits"):
        collect_files(tmp_path, LIMITS)


def test_a_link_out_of_the_folder_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "functions"
    folder.mkdir()
    (tmp_path / "secret.py").write_text("x = 1\n")
    (folder / "link.py").symlink_to(tmp_path / "secret.py")
    with pytest.raises(RegistryError, match="outside the folder"):
        collect_files(folder, LIMITS)


def test_size_limits_name_the_setting(tmp_path: Path) -> None:
    (tmp_path / "big.py").write_bytes(b"#" * 10_001)
    with pytest.raises(RegistryError) as info:
        collect_files(tmp_path, LIMITS)
    assert "the bundle would be 10001 bytes, over deploy.max_bundle_bytes = 10000" in str(
        info.value
    )
    assert "big.py (10001 bytes)" in str(info.value)
    for i in range(6):
        (tmp_path / f"f{i}.py").write_text("x = 1\n")
    (tmp_path / "big.py").unlink()
    with pytest.raises(RegistryError, match=r"6 files, over deploy\.max_files = 5"):
        collect_files(tmp_path, LIMITS)


def test_a_missing_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="nope: functions folder not found"):
        collect_files(tmp_path / "nope", LIMITS)


# -- extracting -----------------------------------------------------------------------------


def test_extract_writes_exactly_the_files_once(tmp_path: Path) -> None:
    _, manifest_json, sig, blob = signed(FILES)
    bundle = open_bundle(KEY, manifest_json, sig, blob, namespace="rt", version=7, limits=LIMITS)
    root = tmp_path / "deployments"
    folder = extract(bundle, root)
    assert folder == root / "7"
    assert sorted(p.name for p in folder.iterdir()) == ["_util.py", "hello.py"]
    assert (folder / "hello.py").read_bytes() == HELLO
    assert oct(folder.stat().st_mode & 0o777) == "0o700"
    assert extract(bundle, root) == folder  # reused as it is
    assert not [p for p in root.iterdir() if p.name.startswith(".")]  # no temp left over


def test_extract_replaces_a_local_copy_that_was_changed(tmp_path: Path) -> None:
    _, manifest_json, sig, blob = signed(FILES)
    bundle = open_bundle(KEY, manifest_json, sig, blob, namespace="rt", version=7, limits=LIMITS)
    folder = extract(bundle, tmp_path)
    (folder / "extra.py").write_text("import evil\n")  # any .py there would be loaded
    assert extract(bundle, tmp_path) == folder
    assert sorted(p.name for p in folder.iterdir()) == ["_util.py", "hello.py"]


def test_prune_local_keeps_the_newest_and_those_in_use(tmp_path: Path) -> None:
    for version in range(1, 10):
        (tmp_path / str(version)).mkdir()
    prune_local(tmp_path, in_use={2})
    assert sorted(int(p.name) for p in tmp_path.iterdir()) == [2, 5, 6, 7, 8, 9]


# -- loading versions in one interpreter ----------------------------------------------------


def test_forget_folder_lets_the_next_version_import_its_own_helper(tmp_path: Path) -> None:
    code = (
        "from runtime import function\nfrom _dep_helper import TAG\n\n"
        "@function\nasync def tagged(x: int) -> str:\n    return TAG\n"
    )
    first, second = tmp_path / "1", tmp_path / "2"
    for folder, tag in ((first, "one"), (second, "two")):
        folder.mkdir()
        (folder / "tagged.py").write_text(code)
        (folder / "_dep_helper.py").write_text(f"TAG = {tag!r}\n")
    try:
        old = load_registry(first)
        forget_folder(first)
        assert "_dep_helper" not in sys.modules and str(first) not in sys.path
        new = load_registry(second)
        assert old.get("tagged").handler.__globals__["TAG"] == "one"  # old code keeps its own
        assert new.get("tagged").handler.__globals__["TAG"] == "two"
    finally:
        forget_folder(first)
        forget_folder(second)


def test_live_registry_swaps_all_at_once(tmp_path: Path) -> None:
    (tmp_path / "hello.py").write_bytes(HELLO)
    live = LiveRegistry(Registry(Path("a"), {}))
    assert len(live) == 0
    try:
        reg = load_registry(tmp_path)
        live.swap(reg)
        assert live.names == ["hello"] and live.folder == reg.folder and "hello" in live
        assert live.get("hello") is reg.get("hello")
    finally:
        forget_folder(tmp_path)


def test_swap_state_is_unready_only_when_nothing_runs_that_should() -> None:
    state = SwapState("deploy")
    assert not state.is_ok  # Redis not read yet
    state.is_checked = True
    assert state.is_ok  # no deployment yet: nothing should run
    state.active = 3
    state.refuse(3, "bad")
    assert not state.is_ok  # something should run and nothing does
    state.loaded = 2
    assert state.is_ok  # 3 refused, 2 serves: reported, still ready
    assert state.body()["refused"] == {"3": "bad"}
    for version in range(20):
        state.refuse(100 + version, "x")
    assert len(state.refused) == 10


# -- settings -------------------------------------------------------------------------------


def test_the_signing_key_is_a_masked_secret(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RUNTIME_DEPLOY__SIGNING_KEY", KEY)
    settings = load_settings()
    assert settings.deploy.signing_key == KEY
    assert settings_to_dict(settings)["deploy"]["signing_key"] == "**"
    monkeypatch.setenv("RUNTIME_DEPLOY__SIGNING_KEY", "short-secret-value")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "short-secret-value" not in str(info.value)
    assert "deploy.signing_key = '**'" in str(info.value) and "at least 32" in str(info.value)
