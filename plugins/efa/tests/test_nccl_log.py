"""The log parser and verdict on NCCL log excerpts written for these tests (see efa_fakes.py)."""

from __future__ import annotations

from efa_fakes import (  # noqa: F401 (autouse fixture)
    OTHER_PLUGIN_VERSION,
    PLUGIN_LIBFABRIC_MISMATCH,
    PROVES_EFA,
    SOCKET_FALLBACK,
    TCP_PROVIDER,
    clean_env,
)
from packaging.version import Version
from rlport_efa.nccl_log import NcclTransport, parse, verdict

DIR = "/opt/amazon/ofi-nccl/lib"


def judge(text: str, version: str | None = "1.14.2"):  # type: ignore[no-untyped-def]
    return verdict(
        parse(text),
        source="rank0.log",
        plugin_dir=DIR,
        expected_version=Version(version) if version else None,
    )


def test_parse_a_log_that_proves_efa() -> None:
    assert parse(PROVES_EFA) == NcclTransport(
        network="Libfabric",
        provider="efa",
        fabric="efa-direct",
        nics=32,
        plugin_version="1.14.2",
        libfabric_version="1.22",
        plugin_missing=False,
        missing_symbol=None,
        lines=10,
    )


def test_proving_log_passes_with_the_facts() -> None:
    result = judge(PROVES_EFA)
    assert result.ok and result.fix == ""
    assert result.detail == (
        "NCCL network Libfabric, provider efa, fabric efa-direct, 32 NICs, aws-ofi-nccl 1.14.2, libfabric 1.22"
    )


def test_older_plugin_name_aws_libfabric_passes() -> None:
    assert judge(PROVES_EFA.replace("Using network Libfabric", "Using network AWS Libfabric")).ok


def test_socket_fallback_fails_with_the_fix() -> None:
    transport = parse(SOCKET_FALLBACK)
    assert (transport.network, transport.provider, transport.plugin_missing) == ("Socket", None, True)
    result = judge(SOCKET_FALLBACK)
    assert not result.ok
    assert result.detail == "NCCL is using network 'Socket' (no net plugin was found), not EFA"
    assert result.fix.startswith(
        f"make NCCL load aws-ofi-nccl: export LD_LIBRARY_PATH={DIR}:$LD_LIBRARY_PATH NCCL_NET_PLUGIN=ofi"
    )


def test_plugin_built_for_another_libfabric_names_the_symbol() -> None:
    result = judge(PLUGIN_LIBFABRIC_MISMATCH)
    assert not result.ok and "symbol version EFA_1.2 not found" in result.detail
    assert "NCCL fell back to Socket" in result.detail
    assert "LD_LIBRARY_PATH=/opt/amazon/efa/lib:$LD_LIBRARY_PATH" in result.fix


def test_another_plugin_version_than_configured_fails() -> None:
    result = judge(OTHER_PLUGIN_VERSION)
    assert not result.ok
    assert result.detail == f"NCCL loaded aws-ofi-nccl 1.9.1, but rlport configured for 1.14.2 in {DIR}"
    assert judge(OTHER_PLUGIN_VERSION, version=None).ok  # version unknown: the transport alone decides


def test_ofi_on_the_tcp_provider_is_not_efa() -> None:
    result = judge(TCP_PROVIDER)
    assert not result.ok and result.detail == "aws-ofi-nccl runs on libfabric provider 'tcp', not efa"
    assert "FI_PROVIDER" in result.fix


def test_empty_log_fails_saying_no_lines() -> None:
    result = judge("")
    assert not result.ok and result.detail == "no NCCL INIT/NET lines in rank0.log"
