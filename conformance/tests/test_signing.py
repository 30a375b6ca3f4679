"""Reports others can trust: a single-device profile run on CPU is CONFORMANT and names its profile;
an Ed25519-signed report verifies against the signer's public key, and any change to what it
binds (results, suite revision, plugin files, environment) or a different key makes it fail."""

from __future__ import annotations

import copy
import json
import os
import stat
from pathlib import Path

import pytest

from rlport.errors import ConfigError
from rlport_conformance import cli, signing
from rlport_conformance import report as report_mod
from rlport_conformance.plan import Profile, plan, profile_for


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return signing.keygen(tmp_path_factory.mktemp("keys") / "vendor.key")


@pytest.fixture(scope="module")
def signed_single(tmp_path_factory: pytest.TempPathFactory, keys: tuple[Path, Path]) -> tuple[Path, int]:
    """One real run: cpu, --world-size 1 (the single-device profile), signed."""
    out = tmp_path_factory.mktemp("single") / "cpu-single.json"
    code = cli.main(
        ["--plugin", "cpu", "--world-size", "1", "--report", str(out), "--sign", str(keys[0]), "--quiet"]
    )
    return out, code


def test_keygen_writes_a_private_key_only_its_owner_reads(keys: tuple[Path, Path]) -> None:
    private, public = keys
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o600
    assert b"BEGIN PRIVATE KEY" in private.read_bytes() and b"BEGIN PUBLIC KEY" in public.read_bytes()
    with pytest.raises(ConfigError, match="will not overwrite"):
        signing.keygen(private)


def test_single_device_profile_is_conformant_and_named(
    signed_single: tuple[Path, int], keys: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    path, code = signed_single
    report = json.loads(path.read_text())
    assert code == 0, report["summary"]
    assert report["profile"] == {"name": "single-device", "world_sizes": [1]}
    assert (
        report["summary"]["verdict"] == "CONFORMANT"
        and "profile single-device" in report["summary"]["reason"]
    )
    ids = [r["id"] for r in report["results"]]
    assert "collectives.all_reduce[float32-n7-r1]" in ids
    assert not any("-r2" in i or "root1" in i for i in ids)  # a one-rank profile plans no 2-rank case
    capsys.readouterr()
    assert cli.main(["verify", "--key", str(keys[1]), str(path)]) == 0
    out = capsys.readouterr().out
    assert "profile single-device" in out and f"signed by key {report['signature']['key_fingerprint']}" in out


def test_plugin_files_are_bound_into_the_report(signed_single: tuple[Path, int]) -> None:
    files = json.loads(signed_single[0].read_text())["plugin"]["files"]
    assert files["record_sha256"] and len(files["record_sha256"]) == 64
    assert files["modified"] == []


@pytest.mark.parametrize(
    "change",
    [
        lambda r: r["results"][0].__setitem__("seconds", 0.0),
        lambda r: r["suite"].__setitem__("revision", "0" * 40),
        lambda r: r["plugin"]["files"].__setitem__("record_sha256", "0" * 64),
        lambda r: r["environment"].__setitem__("torch", "9.9"),
        lambda r: r["profile"].__setitem__("world_sizes", [2]),
    ],
    ids=["result", "suite-revision", "plugin-files", "environment", "profile"],
)
def test_a_changed_signed_report_fails_even_with_its_checksum_recomputed(
    signed_single: tuple[Path, int], keys: tuple[Path, Path], tmp_path: Path, change
) -> None:
    report = json.loads(signed_single[0].read_text())
    edited = copy.deepcopy(report)
    change(edited)
    edited["checksum"] = report_mod.checksum(edited)  # anyone can do this: the signature still catches it
    problems, _ = signing.check(edited, keys[1])
    assert problems and "does not match the report's content" in problems[0]
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(edited))
    assert cli.main(["verify", "--key", str(keys[1]), str(path)]) == 1


def test_another_key_or_no_signature_is_refused(
    signed_single: tuple[Path, int], keys: tuple[Path, Path], tmp_path: Path
) -> None:
    report = json.loads(signed_single[0].read_text())
    _, other_pub = signing.keygen(tmp_path / "other.key")
    problems, _ = signing.check(report, other_pub)
    assert problems and "not by" in problems[0]
    unsigned = {k: v for k, v in report.items() if k != "signature"}
    problems, _ = signing.check(unsigned, keys[1])
    assert problems == [f"the report is not signed, but --key {keys[1]} asks for a signature by that key"]
    assert signing.check(unsigned, None) == (
        [],
        "unsigned (anyone can recompute a checksum; sign with --sign KEY)",
    )
    resigned = signing.sign(copy.deepcopy(unsigned), tmp_path / "other.key")
    assert signing.check(resigned, other_pub)[0] == []  # a valid signature, but by the other key
    assert signing.check(resigned, keys[1])[0]


def test_a_bad_key_stops_the_run_before_it_starts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "not-a-key.pem"
    bad.write_text("hello [red]x[/]")
    assert cli.main(["--plugin", "cpu", "--sign", str(bad), "--quiet"]) == 3
    err = " ".join(capsys.readouterr().err.split())
    assert "is not a PEM private key" in err and "rlport conformance keygen" in err


def test_distribution_files_name_an_edited_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rlport.testing import pip_install

    project = tmp_path / "proj"
    (project / "rlport_filecheck").mkdir(parents=True)
    (project / "rlport_filecheck" / "__init__.py").write_text("X = 1\n")
    (project / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=69"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "rlport-filecheck"\nversion = "0.1.0"\n'
    )
    target = pip_install(project, tmp_path / "site")
    monkeypatch.syspath_prepend(str(target))
    clean = signing.distribution_files("rlport-filecheck")
    assert clean["hashed_files"] >= 1 and clean["modified"] == []
    (target / "rlport_filecheck" / "__init__.py").write_text("X = 2  # patched after install\n")
    assert signing.distribution_files("rlport-filecheck")["modified"] == ["rlport_filecheck/__init__.py"]


def test_profiles() -> None:
    assert Profile((1,)).name == "single-device"
    assert Profile((2, 3, 4)).name == "multi-device (2, 3, 4 ranks)"
    assert profile_for("cpu", 1) == Profile((2, 3, 4))
    assert profile_for("cuda", 1) == Profile((1,))
    assert profile_for("cuda", 8) == Profile((8,))
    assert profile_for("cuda", 8, world_size=2) == Profile((2,))
    with pytest.raises(ValueError):
        Profile((0,))
    ids = {c.id for c in plan({}, Profile((2, 3, 4)))}
    assert {"collectives.all_reduce[float32-n7-r3]", "collectives.broadcast[int32-n1-r4-root3]"} <= ids
    assert Profile.from_json(Profile((2, 3)).to_json()) == Profile((2, 3))
