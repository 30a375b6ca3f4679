"""rlport-conformance: the conformance suite for rlport plugins.

Run it with ``rlport conformance --plugin NAME`` (or ``rlport-conformance``). The suite is a pytest
plugin (:mod:`rlport_conformance.plugin`) carrying its cases (:mod:`rlport_conformance.cases`); a run
produces a JSON report with a verdict and a checksum that :mod:`rlport_conformance.verify` re-checks.
Importing this package is light: no torch, no rlport runtime.
"""

from __future__ import annotations

__version__ = "0.1.0"

#: The name of the suite as written into every report.
SUITE_NAME = "rlport-conformance"

__all__ = ["SUITE_NAME", "__version__"]
