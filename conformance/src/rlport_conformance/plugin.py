"""The suite's pytest plugin (entry point ``pytest11``), inert unless a conformance run asks for it.

With ``--rlport-conformance`` it starts the runtime of the plugin under test (selected by the
environment: ``RLPORT_DEVICE`` and friends), computes the plan from the plugin's declared
capabilities before collecting, parametrises every case function over its planned cases, and turns
what each case does into one result event:

- the worst status the case recorded (``case.record``/``case.judge``/...);
- an exception from the plugin's code: FAIL; from the suite's own code: INTERNAL_ERROR;
  ``MemoryError``/out-of-memory: RESOURCE_ERROR; the per-case time limit: TIMEOUT;
- ``pytest.skip``: no result; a must-pass case that skipped itself is a FAIL in the report, any other
  skipped case, and a deselected one, is MISSING.

A case that ends with a status not allowed in a conformant run is also reported failed to pytest,
so pytest's own output and exit code agree with the verdict.
"""

from __future__ import annotations

import os
import time
import traceback
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

import rlport_conformance
from rlport_conformance.plan import PlannedCase
from rlport_conformance.recorder import CaseContext, EventLog
from rlport_conformance.status import Status

MARKER = "rlport_case"
PERF_MARKER = "rlport_perf"
_SESSION = pytest.StashKey["Any"]()
CONTEXT = pytest.StashKey[CaseContext]()
_ERRORS = pytest.StashKey[list]()
_SUITE_DIR = str(Path(rlport_conformance.__file__).resolve().parent)


def _timed_out(error: BaseException) -> bool:
    """pytest-timeout (signal method, started with ``--timeout``) ends a case that ran past the
    per-case limit with ``pytest.fail("Timeout >Ns ...")``: a BaseException a case cannot swallow."""
    return isinstance(error, pytest.fail.Exception) and str(error).lstrip().startswith("Timeout")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("rlport-conformance")
    group.addoption(
        "--rlport-conformance",
        action="store_true",
        default=False,
        help="run the rlport conformance cases against the selected plugin",
    )
    group.addoption(
        "--rlport-conformance-log",
        default=None,
        metavar="PATH",
        help="append the run's events (JSON lines) to PATH",
    )
    group.addoption(
        "--rlport-conformance-exclude",
        default=None,
        metavar="PATH",
        help="file of case ids (one a line) not to run again (already done before a crash)",
    )
    group.addoption(
        "--rlport-case-timeout",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="time limit per case (TIMEOUT when exceeded)",
    )
    group.addoption(
        "--rlport-world-size",
        type=int,
        default=None,
        metavar="N",
        help="certify at N ranks (1: the single-device profile); default every visible device",
    )
    group.addoption(
        "--rlport-no-perf", action="store_true", default=False, help="skip the performance measurements"
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{MARKER}(kind): a conformance case, parametrised over the plan")
    config.addinivalue_line("markers", f"{PERF_MARKER}: a conformance performance measurement")
    if not config.getoption("--rlport-conformance"):
        return
    from rlport_conformance.session import ConformanceSession

    log = EventLog(config.getoption("--rlport-conformance-log"))
    exclude_path = config.getoption("--rlport-conformance-exclude")
    exclude = set(Path(exclude_path).read_text().split()) if exclude_path else set()
    try:
        session = ConformanceSession.start(
            log,
            case_timeout=config.getoption("--rlport-case-timeout"),
            run_perf=not config.getoption("--rlport-no-perf"),
            exclude=exclude,
            world_size=config.getoption("--rlport-world-size"),
        )
    except Exception as exc:
        log.write(
            {
                "event": "fatal",
                "where": "session start",
                "error": _describe(exc),
                "traceback": traceback.format_exc(),
            }
        )
        raise pytest.UsageError(f"rlport conformance could not start the plugin under test: {exc}") from exc
    config.stash[_SESSION] = session


def session_of(config: pytest.Config) -> Any:
    return config.stash.get(_SESSION, None)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    marker = metafunc.definition.get_closest_marker(MARKER)
    if marker is None or "planned" not in metafunc.fixturenames:
        return
    session = session_of(metafunc.config)
    cases: list[PlannedCase] = session.of_kind(marker.args[0]) if session else []
    metafunc.parametrize("planned", cases, ids=[c.params or "-" for c in cases])


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    session = session_of(config)
    if session is None:
        return
    kept, dropped = [], []
    for item in items:
        planned = _planned(item)
        if planned is not None:
            item.extra_keyword_matches.add(planned.id)
            item.extra_keyword_matches.add(planned.group)
            if planned.id in session.exclude:
                dropped.append(item)
                continue
        elif item.get_closest_marker(PERF_MARKER) and not session.run_perf:
            dropped.append(item)
            continue
        kept.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


def _planned(item: pytest.Item) -> PlannedCase | None:
    callspec = getattr(item, "callspec", None)
    value = callspec.params.get("planned") if callspec is not None else None
    return value if isinstance(value, PlannedCase) else None


# -- running one case -------------------------------------------------------------------------------


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, Any, Any]:
    session = session_of(item.config)
    planned = _planned(item)
    if session is None or planned is None:
        return (yield)
    ctx = CaseContext(planned)
    item.stash[CONTEXT] = ctx
    item.stash[_ERRORS] = []
    session.log.write({"event": "start", "id": planned.id, "pid": os.getpid()})
    started = time.perf_counter()
    try:
        result = yield
    finally:
        _finish(session, item, ctx, time.perf_counter() - started)
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    report = yield
    ctx = item.stash.get(CONTEXT, None)
    if ctx is None:
        return report
    if call.excinfo is not None:
        item.stash[_ERRORS].append((call.when, call.excinfo))
    if call.when == "call" and report.passed and ctx.status is not None and not ctx.allowed:
        report.outcome = "failed"
        report.longrepr = f"{ctx.id}: {ctx.status.value}: {ctx.message or ''}"
    return report


def _finish(session: Any, item: pytest.Item, ctx: CaseContext, seconds: float) -> None:
    for when, excinfo in item.stash.get(_ERRORS, []):
        if excinfo.errisinstance(pytest.skip.Exception):
            session.log.write({"event": "skipped", "id": ctx.id, "when": when, "reason": str(excinfo.value)})
            return  # no result: the case is MISSING
        status, message = classify(excinfo.value, excinfo.tb)
        ctx.record(status, f"{when}: {message}")
    if ctx.status is None:
        ctx.record(Status.INTERNAL_ERROR, "the case finished without recording a result")
    session.log.write(
        {
            "event": "result",
            "id": ctx.id,
            "status": ctx.status.value if ctx.status else None,
            "metrics": ctx.metrics,
            "message": ctx.message,
            "seconds": round(seconds, 4),
        }
    )


def classify(error: BaseException, tb: Any) -> tuple[Status, str]:
    """The status of a case that raised ``error``."""
    text = _describe(error)
    if _timed_out(error):
        return Status.TIMEOUT, text
    if isinstance(error, MemoryError) or type(error).__name__ in ("OutOfMemoryError",):
        return Status.RESOURCE_ERROR, text
    if isinstance(error, AssertionError):
        return Status.FAIL, text
    frames = traceback.extract_tb(tb) if tb is not None else []
    origin = frames[-1].filename if frames else ""
    if origin.startswith(_SUITE_DIR):
        return Status.INTERNAL_ERROR, f"{text} (in the suite: {Path(origin).name}:{frames[-1].lineno})"
    where = f" (raised in {origin}:{frames[-1].lineno})" if frames else ""
    return Status.FAIL, f"{text}{where}"


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}".strip()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    conf = session_of(session.config)
    if conf is not None:
        conf.log.write({"event": "end", "exitstatus": int(exitstatus)})
        conf.log.close()
