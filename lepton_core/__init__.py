"""Lepton's core library: every piece of migration logic, with no Prefect import.

Sub-packages, one per stage: ``spec`` (the migration spec), ``store`` (object store and the
embedded S3 server), ``data`` (the transfer engine), ``validation`` (gates, profiles, drift),
``sim`` (the migration simulator and plans), ``transfer`` (models), ``demo`` (the bundled demo),
``report`` (run reports). Heavy libraries
(torch, Great Expectations) are imported inside the functions that use them.
"""

__version__ = "0.1.0"
