"""The conformance cases (pytest modules), parametrised by :mod:`rlport_conformance.plugin` over the
plan of the plugin under test."""
