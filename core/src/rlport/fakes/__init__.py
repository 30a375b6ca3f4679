"""Fakes of accelerator libraries, for testing plugins on a machine without the hardware.

Each fake computes with plain torch math on the host, checks its arguments the way the real library
does (raising where the library raises), and records every call so a test can assert the exact
arguments a backend passed. They stand in for the library in ``sys.modules``; they prove a
translation right, never that the real kernel runs.
"""
