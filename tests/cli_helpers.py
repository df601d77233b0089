"""Shared assertions of the bad-input tests of the command line."""

from __future__ import annotations

from pathlib import Path

from diffinfer.cli import main


def run_bad(argv: list[str], capsys, fragment: str) -> str:
    """Run the CLI in-process; assert exit status 2 and one clean error line (no traceback)
    that contains ``fragment``; return that line."""
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("diffinfer: error:"), err
    assert fragment in lines[0], lines[0]
    return lines[0]


def fill(argv: list[str], names: dict[str, Path | str]) -> list[str]:
    """Replace ``{name}`` in each argument by the path of that test file."""
    out = []
    for a in argv:
        for k, v in names.items():
            a = a.replace("{" + k + "}", str(v))
        out.append(a)
    return out
