"""The ``diffinfer`` command line: the parser (:mod:`.parser`), the commands (:mod:`.commands`,
:mod:`.infer`, :mod:`.calibrate`) and running them (:mod:`.app`)."""

from diffinfer.cli.app import main

__all__ = ["main"]
