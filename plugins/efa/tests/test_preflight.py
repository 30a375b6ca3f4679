"""Capture around a fake collective that writes the NCCL debug file as NCCL does (%h host, %p pid)."""

from __future__ import annotations

from pathlib import Path

from efa_fakes import PROVES_EFA, SOCKET_FALLBACK, clean_env  # noqa: F401 (autouse fixture)
from packaging.version import Version
from rlport_efa.preflight import capture, check, debug_files, logging_problem

PID = 4021


def env_for(tmp_path: Path) -> dict[str, str]:
    return {
        "NCCL_DEBUG": "INFO",
        "NCCL_DEBUG_SUBSYS": "INIT,NET",
        "NCCL_DEBUG_FILE": f"{tmp_path}/nccl.%h.%p.log",
    }


def fake_nccl(tmp_path: Path, text: str, calls: list[str]):  # type: ignore[no-untyped-def]
    def all_reduce() -> None:
        calls.append("all_reduce")
        (tmp_path / f"nccl.ip-10-0-0-5.{PID}.log").write_text(text)

    return all_reduce


def test_capture_reads_this_process_file_after_the_collective(tmp_path: Path) -> None:
    (tmp_path / "nccl.ip-10-0-0-5.999.log").write_text(SOCKET_FALLBACK)  # another process's log
    calls: list[str] = []
    text, source = capture(fake_nccl(tmp_path, PROVES_EFA, calls), env_for(tmp_path), pid=PID)
    assert calls == ["all_reduce"] and text == PROVES_EFA
    assert source == f"{tmp_path}/nccl.ip-10-0-0-5.{PID}.log"
    assert debug_files(f"{tmp_path}/nccl.%h.%p.log", 999) == [tmp_path / "nccl.ip-10-0-0-5.999.log"]


def test_check_passes_on_efa_and_fails_on_sockets(tmp_path: Path) -> None:
    env = env_for(tmp_path)
    ok = check(
        fake_nccl(tmp_path, PROVES_EFA, []),
        env,
        plugin_dir="/opt/amazon/ofi-nccl/lib",
        expected_version=Version("1.14.2"),
        pid=PID,
    )
    assert ok.ok, ok.detail
    bad = check(
        fake_nccl(tmp_path, SOCKET_FALLBACK, []),
        env,
        plugin_dir="/opt/amazon/ofi-nccl/lib",
        expected_version=None,
        pid=PID,
    )
    assert not bad.ok and "Socket" in bad.detail and "NCCL_NET_PLUGIN=ofi" in bad.fix


def test_no_file_written_fails(tmp_path: Path) -> None:
    result = check(lambda: None, env_for(tmp_path), plugin_dir=None, expected_version=None, pid=PID)
    assert not result.ok and "(no file written)" in result.detail


def test_logging_the_user_turned_down_is_reported_before_running(tmp_path: Path) -> None:
    calls: list[str] = []
    env = {**env_for(tmp_path), "NCCL_DEBUG": "WARN"}
    result = check(
        fake_nccl(tmp_path, PROVES_EFA, calls), env, plugin_dir=None, expected_version=None, pid=PID
    )
    assert calls == [] and not result.ok
    assert result.detail == "cannot see which network NCCL uses: NCCL_DEBUG='WARN' (needs INFO)"
    assert "unset NCCL_DEBUG" in result.fix


def test_logging_problem_rules(tmp_path: Path) -> None:
    base = env_for(tmp_path)
    assert logging_problem(base) is None
    assert logging_problem({**base, "NCCL_DEBUG_SUBSYS": "ALL"}) is None
    assert logging_problem({**base, "NCCL_DEBUG_SUBSYS": "^COLL,P2P"}) is None
    assert (
        logging_problem({**base, "NCCL_DEBUG_SUBSYS": "^NET"}) == "NCCL_DEBUG_SUBSYS='^NET' (needs INIT,NET)"
    )
    assert (
        logging_problem({**base, "NCCL_DEBUG_SUBSYS": "INIT"}) == "NCCL_DEBUG_SUBSYS='INIT' (needs INIT,NET)"
    )
    assert "NCCL_DEBUG_FILE is unset" in (
        logging_problem({k: v for k, v in base.items() if k != "NCCL_DEBUG_FILE"}) or ""
    )
