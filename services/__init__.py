"""Terrain's four deployable services: ingest, sentiment, escalation, events."""

import os
import sys


def leave_working_directory_off_the_path() -> None:
    """For `python -m services.<name>`, run by hand: Python puts the working directory first on the import
    path, and from the folder that holds a checkout named `terrain` that folder (a namespace package: the
    checkout's root has no __init__.py) shadowed the installed kernel, so the service died looking for
    `terrain/migrations`. Drop it, as `python -P` does, unless it is where this package comes from (run from the
    checkout itself, it holds the real packages). Call before anything imports `terrain`."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if not sys.flags.safe_path and sys.path and sys.path[0] == os.getcwd() != here:
        del sys.path[0]
