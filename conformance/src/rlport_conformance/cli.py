"""Command line: ``rlport conformance [...]`` (the core CLI delegates here) and ``rlport-conformance``.

::

    rlport-conformance [--plugin NAME] [--report PATH] [--junit PATH] [-k EXPR] [--waivers PATH]
                       [--world-size N] [--sign KEY]
    rlport-conformance verify [--key KEY.pub] REPORT
    rlport-conformance keygen KEY

Exit status of a run: 0 CONFORMANT, 1 NOT_CONFORMANT, 2 INCOMPLETE, 3 the run could not be made.
Exit status of ``verify``: 0 a valid CONFORMANT report, 1 any problem (each one is named), 3 unreadable.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.markup import escape

from rlport.console import make_console, print_error

EXIT = {"CONFORMANT": 0, "NOT_CONFORMANT": 1, "INCOMPLETE": 2}
EXIT_ERROR = 3


def _run_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rlport conformance",
        description="Run the rlport conformance suite against a plugin and print a verdict "
        "(also: `rlport conformance verify REPORT`).",
    )
    p.add_argument("--plugin", metavar="NAME", help="the plugin under test (default: the one rlport selects)")
    p.add_argument(
        "--report",
        metavar="PATH",
        type=Path,
        help="write the JSON report here (default: rlport-conformance-<plugin>.json)",
    )
    p.add_argument("--junit", metavar="PATH", type=Path, help="also write JUnit XML here")
    p.add_argument(
        "-k",
        dest="keyword",
        metavar="EXPR",
        help="run only cases matching EXPR (pytest -k); the verdict is then at best INCOMPLETE",
    )
    p.add_argument("--waivers", metavar="PATH", type=Path, help="waiver file (YAML or JSON)")
    p.add_argument(
        "--case-timeout",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="time limit per case (default 300)",
    )
    p.add_argument(
        "--world-size",
        type=int,
        metavar="N",
        help="ranks of the collectives cases: 1 certifies the single-device profile, N>1 multi-device "
        "(default: every visible device; 2, 3 and 4 ranks on the host CPU)",
    )
    p.add_argument(
        "--sign",
        metavar="KEY",
        type=Path,
        help="sign the report with this Ed25519 private key (make one with `rlport conformance keygen KEY`)",
    )
    p.add_argument("--no-perf", action="store_true", help="skip the performance figures")
    p.add_argument("--quiet", action="store_true", help="no progress output; the tables only")
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of tables")
    return p


def _verify_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rlport conformance verify",
        description="Re-check a conformance report: checksum, signature, profile, plan, statuses, verdict.",
    )
    p.add_argument("report", type=Path, help="the JSON report to check")
    p.add_argument(
        "--key",
        metavar="PUB",
        type=Path,
        help="require a signature by this Ed25519 public key (PEM), e.g. the vendor's KEY.pub",
    )
    return p


def keygen_main(argv: list[str]) -> int:
    from rlport.errors import RlportError
    from rlport_conformance import signing

    p = argparse.ArgumentParser(
        prog="rlport conformance keygen",
        description="Write an Ed25519 key pair for signing reports: KEY (private, mode 0600) and KEY.pub.",
    )
    p.add_argument("key", type=Path, help="path of the private key to create")
    args = p.parse_args(argv)
    try:
        private, public = signing.keygen(args.key)
    except RlportError as exc:
        print_error(make_console(stderr=True), exc.message, exc.fix)
        return EXIT_ERROR
    make_console().print(
        f"private key: {private}\npublic key:  {public}  (give this one to whoever checks your reports)",
        markup=False,
        highlight=False,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point the core CLI calls with the arguments after ``rlport conformance``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "verify":
        return verify_main(argv[1:])
    if argv and argv[0] == "keygen":
        return keygen_main(argv[1:])
    return run_main(argv)


def run_main(argv: list[str]) -> int:
    from rlport.errors import RlportError
    from rlport_conformance import junit, render, runner

    args = _run_parser().parse_args(argv)
    err = make_console(stderr=True)
    options = runner.RunOptions(
        plugin=args.plugin,
        keyword=args.keyword,
        waivers=args.waivers,
        case_timeout=args.case_timeout,
        perf=not args.no_perf,
        quiet=args.quiet,
        world_size=args.world_size,
    )
    if args.world_size is not None and args.world_size < 1:
        print_error(
            err, f"--world-size {args.world_size} is not a number of ranks", "pass --world-size 1 or more"
        )
        return EXIT_ERROR
    try:
        if args.sign:  # a bad key is found before the run, not after it
            from rlport_conformance import signing

            signing._load(args.sign, private=True)
        report = runner.run(options)
        if args.sign:
            signing.sign(report, args.sign)
    except RlportError as exc:
        print_error(err, exc.message, exc.fix)
        return EXIT_ERROR
    path = args.report or Path(f"rlport-conformance-{report['plugin']['name']}.json")
    path.write_text(json.dumps(report, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    if args.junit:
        junit.write(report, args.junit)
    if args.json:
        print(json.dumps(report, indent=1, sort_keys=True))
    else:
        render.show(report)
        make_console().print(
            f"report: {path}"
            + (f"   junit: {args.junit}" if args.junit else "")
            + f"   ({report['run']['seconds']} s)",
            markup=False,
            highlight=False,
        )
    return EXIT[report["summary"]["verdict"]]


def verify_main(argv: list[str]) -> int:
    from rlport.errors import RlportError
    from rlport_conformance import signing
    from rlport_conformance.verify import verify_file

    args = _verify_parser().parse_args(argv)
    console = make_console()
    report, found = verify_file(args.report)
    if report is None:
        for problem in found:
            print_error(console, problem)
        return EXIT_ERROR
    try:
        signature_problems, signed = signing.check(report, args.key)
    except RlportError as exc:
        print_error(console, exc.message, exc.fix)
        return EXIT_ERROR
    found = [*found, *signature_problems]
    if found:
        console.print(f"[bold red]{escape(str(args.report))}: {len(found)} problem(s)[/]")
        for problem in found:
            console.print(f"  - {problem}", markup=False, highlight=False)
        return 1
    s = report["summary"]
    console.print(
        f"[bold green]{escape(str(args.report))}: valid[/] - {s['verdict']}, profile "
        f"{escape(report['profile']['name'])}, {s['must_pass']} must-pass cases, "
        f"checksum {report['checksum'][:16]}..., plugin {escape(str(report['plugin']['name']))} "
        f"{escape(str(report['plugin'].get('version')))}, suite {escape(str(report['suite']['revision']))}"
    )
    console.print(f"  {signed}", markup=False, highlight=False)
    return 0


def console_main() -> None:
    """The ``rlport-conformance`` console script."""
    sys.exit(main())


if __name__ == "__main__":
    console_main()
