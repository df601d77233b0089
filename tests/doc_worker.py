"""A Python process that runs the Python blocks of the docs for ``tests/test_docs.py``.

Started by the tests as ``python tests/doc_worker.py``; it reads one JSON request per line on
stdin and answers one JSON line on its original stdout. A request runs code in a namespace
named by the request (one per Markdown file, so the blocks of a file share their names as a
reader running them top to bottom would), in a working directory, with the file descriptors
1 and 2 redirected to a log file (so output of C code and subprocesses is caught too, and the
protocol stays clean). The tests kill the process (its session) on a timeout.

Request: ``{"namespace": str, "cwd": str, "log": str, "filename": str, "first_line": int,
"code": str}``. Answer: ``{"ok": true}`` or ``{"ok": false, "type": "module.QualName",
"name": "QualName", "message": str, "traceback": str}``.

Standard library only: the code it runs imports what it needs.
"""

from __future__ import annotations

import json
import os
import sys
import traceback


def run_request(request: dict, namespaces: dict[str, dict]) -> dict:
    """Run one request's code; return the answer (never raises for an error of the code)."""
    namespace = namespaces.setdefault(request["namespace"], {"__name__": "__main__"})
    os.chdir(request["cwd"])
    # pad with newlines so the tracebacks give line numbers of the Markdown file
    source = "\n" * (int(request["first_line"]) - 1) + request["code"]
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(request["log"], "a", encoding="utf-8") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            exec(compile(source, request["filename"], "exec"), namespace)
            answer: dict = {"ok": True}
        except BaseException as exc:  # SystemExit and KeyboardInterrupt are failures too
            kind = type(exc)
            answer = {
                "ok": False,
                "type": f"{kind.__module__}.{kind.__qualname__}",
                "name": kind.__qualname__,
                "message": str(exc),
                "traceback": traceback.format_exc(),
            }
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
    return answer


def main() -> None:
    """Serve requests from stdin until it closes."""
    protocol = os.fdopen(os.dup(1), "w", encoding="utf-8")
    namespaces: dict[str, dict] = {}
    for line in sys.stdin:
        if line.strip():
            answer = run_request(json.loads(line), namespaces)
            protocol.write(json.dumps(answer) + "\n")
            protocol.flush()


if __name__ == "__main__":
    main()
