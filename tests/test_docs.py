"""The code blocks of README.md and docs/*.md, run as tests, so a snippet that breaks fails CI.

Every fenced block labelled ``python`` (``py``, ``pycon``) or ``bash`` (``sh``, ``shell``,
``console``) is one test case, with the id ``FILE:LLINE`` (the line of its opening fence).

**Markers.** HTML comments on the lines directly before a block (invisible on GitHub),
one directive each:

- ``<!-- doctest: slow -->``: the case is marked ``slow`` (``make test-slow``, not ``make test``);
- ``<!-- doctest: skip: REASON -->``: never run (only for blocks that cannot run in a test:
  ``make test`` itself, installing, hours of training, several processes, a GPU);
- ``<!-- doctest: replace "OLD" "NEW" -->`` (repeatable, applied in order, every occurrence):
  the text is substituted before the block runs, e.g. a tiny configuration of a long command.

A marker that is not directly above a run block, an unknown directive, or a ``replace``
pattern that does not occur in its block fails ``test_doc_markers``.

**Python blocks** of one file run top to bottom in one namespace, as a reader pasting them
into one session would (the README's later blocks use ``np``, ``di`` and ``rho`` of the first):
in one worker process (``tests/doc_worker.py``, killed on a timeout) with the file's own working
directory. Running one case first runs the earlier blocks of its file that have not run, but not
the ``slow`` ones for a case that is not ``slow`` itself: a block of the default run must not
need the names of a slow block (in ``make test`` it fails with a NameError; mark it slow too).
A case still runs after an earlier block failed, and names it if it fails too. Blocks written
as an interactive session (``>>>`` prompts) run statement by statement; a statement whose
shown output ends in ``SomeError: message`` must raise that exception with that message;
other shown output is not compared, except the README's ``make run`` output, whose lines and
numbers ``test_the_readme_shows_what_make_run_prints`` (slow) checks against a fresh run.

**Shell blocks** run with ``bash -e -o pipefail -x`` in a fresh directory holding what the
commands read: links to ``.venv`` (whose ``bin`` leads ``PATH``, so ``diffinfer`` and
``python`` are the project's), ``examples/``, ``configs/``, ``scripts/``, the scripts of
``calibration/`` and ``data/lognormal64`` (unless the block writes there with ``--out``; a data
set of 100 cosmologies simulated once per session, so a clean checkout needs none), and
a copy of the shipped models found first through ``DIFFINFER_MODEL_PATH``, so nothing a block
writes (``recalibrate --store`` included) reaches the repository. Only the ``$ `` lines of a
block with prompts run (and their continuation lines); the rest is shown output.
"""

from __future__ import annotations

import json
import os
import re
import select
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
WORKER = Path(__file__).resolve().with_name("doc_worker.py")
PYTHON_LANGS = frozenset({"python", "py", "pycon"})
SHELL_LANGS = frozenset({"bash", "sh", "shell", "console"})
DEFAULT_TIMEOUT_S = 120.0
SLOW_TIMEOUT_S = 600.0
TAIL_CHARS = 4000
# read-only inputs linked into every working directory, at the same path as in the repository
SHARED_INPUTS = (".venv", "examples", "configs", "scripts", "data/lognormal64")
# the data set the blocks read as data/lognormal64: simulated once per session (a clean checkout
# has none), with fewer cosmologies than the default so that it takes seconds
DATASET = "data/lognormal64"
DATASET_COSMOLOGIES = 100

MARKER = re.compile(r"^<!--\s*doctest:\s*(?P<directive>.*?)\s*-->\s*$")
FENCE = re.compile(r"^(?P<fence>`{3,})\s*(?P<lang>[\w+-]*)\s*$")
EXCEPTION_LINE = re.compile(r"^(?P<type>[A-Za-z_][\w.]*(?:Error|Exception|Exit)): (?P<msg>.*)$")
COMMAND_WORDS = ("diffinfer ", "python ", "make ", "torchrun ", ".venv/", "pip ", "$ ")


@dataclass
class Block:
    """One fenced block of a Markdown file, with the markers above it."""

    path: str  # relative to the repository root
    line: int  # 1-based line of the opening fence
    lang: str
    text: str
    slow: bool = False
    skip: str | None = None
    replaces: list[tuple[str, str]] = field(default_factory=list)

    @property
    def id(self) -> str:
        """The test id, ``FILE:LLINE``."""
        return f"{self.path}:L{self.line}"

    @property
    def kind(self) -> str | None:
        """``"python"``, ``"shell"`` or None (a block that is not run: output, text, YAML)."""
        if self.lang in PYTHON_LANGS:
            return "python"
        if self.lang in SHELL_LANGS:
            return "shell"
        return None

    def runnable_text(self) -> str:
        """The block's text with its ``replace`` markers applied."""
        text = self.text
        for old, new in self.replaces:
            text = text.replace(old, new)
        return text


@dataclass
class DocFile:
    """The blocks of one Markdown file and what is wrong with its markers."""

    path: str
    blocks: list[Block]
    problems: list[str]


def _apply_directive(directive: str, block: Block, where: str, problems: list[str]) -> None:
    """Record one marker directive on its block (or a problem)."""
    if directive == "slow":
        block.slow = True
    elif directive.startswith("skip:") and directive[5:].strip():
        block.skip = directive[5:].strip()
    elif directive.startswith("replace ") or directive == "replace":
        try:
            args = shlex.split(directive[len("replace") :])
        except ValueError as exc:
            problems.append(f"{where}: malformed replace marker ({exc})")
            return
        if len(args) != 2 or not args[0]:
            problems.append(f'{where}: replace takes two quoted strings, "OLD" "NEW"')
            return
        block.replaces.append((args[0], args[1]))
    else:
        problems.append(
            f"{where}: unknown doctest directive {directive!r} "
            '(slow, skip: REASON, replace "OLD" "NEW")'
        )


def _check_block_markers(block: Block, problems: list[str]) -> None:
    """A marker must sit on a run block, and every replace pattern must occur in its block."""
    marked = block.slow or block.skip is not None or block.replaces
    if marked and block.kind is None:
        problems.append(
            f"{block.id}: doctest marker above a block that is not run (language "
            f"{block.lang!r}; label it python or bash)"
        )
    if block.skip is not None and (block.slow or block.replaces):
        problems.append(f"{block.id}: a skipped block takes no other marker")
    text = block.text
    for old, new in block.replaces:
        if old not in text:
            problems.append(f"{block.id}: replace pattern {old!r} does not occur in the block")
        text = text.replace(old, new)


def parse_markdown(path: Path, rel: str | None = None) -> DocFile:
    """The fenced blocks of a Markdown file with their markers, and marker problems.

    ``rel`` names the file in ids and messages (default: its path in the repository).
    """
    rel = rel or path.relative_to(ROOT).as_posix()
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    problems: list[str] = []
    pending: list[tuple[int, str]] = []  # (line, directive) waiting for their block
    i = 0
    while i < len(lines):
        line = lines[i]
        marker = MARKER.match(line)
        if marker:
            pending.append((i + 1, marker.group("directive")))
            i += 1
            continue
        if "doctest" in line and "<!--" in line:
            problems.append(f"{rel}:{i + 1}: a doctest marker must be alone on its line")
        fence = FENCE.match(line)
        if fence:
            ticks = fence.group("fence")
            end = next((j for j in range(i + 1, len(lines)) if lines[j].rstrip() == ticks), None)
            if end is None:
                problems.append(f"{rel}:{i + 1}: the fenced block is never closed")
                break
            block = Block(rel, i + 1, fence.group("lang").lower(), "\n".join(lines[i + 1 : end]))
            for line_no, directive in pending:
                _apply_directive(directive, block, f"{rel}:{line_no}", problems)
            _check_block_markers(block, problems)
            blocks.append(block)
            pending = []
            i = end + 1
            continue
        if pending:
            problems.append(
                f"{rel}:{pending[0][0]}: doctest marker not directly above a fenced block"
            )
            pending = []
        i += 1
    if pending:
        problems.append(f"{rel}:{pending[0][0]}: doctest marker not directly above a fenced block")
    return DocFile(rel, blocks, problems)


DOCS = [parse_markdown(path) for path in DOC_FILES]
BY_PATH = {doc.path: doc for doc in DOCS}


def _cases() -> list:
    """One pytest parameter per run block, marked slow or skip as its markers say."""
    cases = []
    for doc in DOCS:
        for block in doc.blocks:
            if block.kind is None:
                continue
            marks: list = []
            if block.skip is not None:
                marks.append(pytest.mark.skip(reason=block.skip))
            elif block.slow:
                marks.append(pytest.mark.slow)
            cases.append(pytest.param(block, id=block.id, marks=marks))
    return cases


def _tail(text: str) -> str:
    """The end of a long output (of each line rewritten with carriage returns, the last)."""
    text = "\n".join(line.rsplit("\r", 1)[-1] for line in text.split("\n"))
    return text if len(text) <= TAIL_CHARS else "...\n" + text[-TAIL_CHARS:]


def _timeout(block: Block) -> float:
    """Seconds a block may take."""
    return SLOW_TIMEOUT_S if block.slow else DEFAULT_TIMEOUT_S


def _report(block: Block, what: str, ran: str, output: str) -> str:
    """A failure message: what went wrong, the block as run, the output's end."""
    return (
        f"{block.id}: {what}\n--- the block as run ---\n{ran}\n"
        f"--- output (end) ---\n{_tail(output)}"
    )


# ---------------------------------------------------------------------------------------------
# working directories


def run_env(models: Path) -> dict[str, str]:
    """The environment of the blocks: the project's ``.venv`` first, ``models`` searched first."""
    env = dict(os.environ)
    env.pop("PYTHONHOME", None)
    env.update(
        PATH=f"{ROOT / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        VIRTUAL_ENV=str(ROOT / ".venv"),
        DIFFINFER_MODEL_PATH=str(models),
        MPLBACKEND="Agg",
        TQDM_DISABLE="1",  # progress bars would fill the output shown on a failure
        PS4="+ [${SECONDS}s] ",  # bash -x: each command with the seconds since the start
    )
    return env


def copy_models(dest: Path) -> Path:
    """A copy of the shipped models (so a block that stores into a card changes only this)."""
    shutil.copytree(ROOT / "models", dest)
    return dest


def simulate_dataset(dest: Path) -> Path:
    """The session's ``data/lognormal64``: the default simulator with fewer cosmologies."""
    cmd = [str(ROOT / ".venv" / "bin" / "diffinfer"), "simulate", "--out", str(dest)]
    cmd += ["--n-cosmologies", str(DATASET_COSMOLOGIES), "--no-progress"]
    if not Path(cmd[0]).exists():  # a test run outside the Makefile's .venv
        cmd[:1] = [sys.executable, "-m", "diffinfer"]
    subprocess.run(cmd, check=True, capture_output=True, timeout=300, cwd=ROOT)
    return dest


def make_workspace(dest: Path, dataset: Path, writes: str = "") -> None:
    """Fill ``dest`` with links to what the blocks read.

    ``dataset`` is linked as ``data/lognormal64``. ``writes`` is the text of the commands to
    run: a shared input that they write into (an ``--out`` at or below it) is not linked, so
    they create it in ``dest``.
    """
    outs = {p.strip("\"'").rstrip("/") for p in re.findall(r"--out[= ]\s*(\S+)", writes)}
    dest.mkdir(parents=True, exist_ok=True)
    for rel in SHARED_INPUTS:
        if any(o == rel or o.startswith(rel + "/") or rel.startswith(o + "/") for o in outs):
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(dataset if rel == DATASET else ROOT / rel)
    # the scripts of calibration/, not its studies: a block's study starts afresh in dest
    (dest / "calibration").mkdir(exist_ok=True)
    for script in sorted((ROOT / "calibration").glob("*.*")):
        if script.is_file() and script.suffix in {".py", ".sh"}:
            (dest / "calibration" / script.name).symlink_to(script)


# ---------------------------------------------------------------------------------------------
# shell blocks


def shell_script(block: Block) -> str:
    """The commands of a shell block: all of it, or only its ``$ `` lines and continuations."""
    text = block.runnable_text()
    lines = text.splitlines()
    if block.lang != "console" and not any(line.startswith("$ ") for line in lines):
        return text
    commands: list[str] = []
    continued = False
    for line in lines:
        if line.startswith("$ "):
            commands.append(line[2:])
        elif continued:
            commands.append(line)
        else:
            continue
        continued = line.rstrip().endswith("\\")
    return "\n".join(commands)


def run_shell_block(block: Block, workdir: Path, dataset: Path) -> None:
    """Run a shell block in a fresh working directory; fail with its output on an error."""
    script = shell_script(block)
    make_workspace(workdir, dataset, script)
    env = run_env(copy_models(workdir / "models"))
    timeout = _timeout(block)
    proc = subprocess.Popen(
        ["bash", "-e", "-o", "pipefail", "-x", "-c", script],
        cwd=workdir,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        pytest.fail(_report(block, f"timed out after {timeout:.0f} s", script, output))
    if proc.returncode != 0:
        pytest.fail(_report(block, f"exit status {proc.returncode}", script, output))


# ---------------------------------------------------------------------------------------------
# python blocks


@dataclass
class Statement:
    """A piece of a python block run at once, and the exception it must raise, if any."""

    code: str
    first_line: int
    expect: tuple[str, str] | None = None  # (exception type, message)


def python_statements(block: Block) -> list[Statement]:
    """A python block as statements: the whole block, or its ``>>>`` statements one by one."""
    text = block.runnable_text()
    lines = text.splitlines()
    if not any(line.startswith(">>>") for line in lines):
        return [Statement(text, block.line + 1)]
    statements: list[Statement] = []
    shown: list[str] = []

    def close() -> None:
        """Attach the output shown after the last statement (an exception it must raise)."""
        if statements and shown:
            match = EXCEPTION_LINE.match(shown[-1].strip())
            if match:
                statements[-1].expect = (match.group("type"), match.group("msg"))
        shown.clear()

    for n, line in enumerate(lines):
        if line.startswith(">>>"):
            close()
            statements.append(Statement(line[4:], block.line + 1 + n))
        elif line.startswith("...") and statements and not shown:
            statements[-1].code += "\n" + line[4:]
        else:
            shown.append(line)
    close()
    return statements


class PythonRunner:
    """A worker process running the python blocks, one namespace and directory per file."""

    def __init__(self, root: Path, dataset: Path) -> None:
        self.root = root
        self.dataset = dataset
        self.proc: subprocess.Popen | None = None
        self.done: dict[str, str | None] = {}  # block id -> None (passed) or the failure
        self.workdirs: dict[str, Path] = {}
        self.env = run_env(copy_models(root / "models"))
        self.n_logs = 0

    def _workdir(self, path: str) -> Path:
        """The working directory of a file's python blocks (made once per session)."""
        if path not in self.workdirs:
            workdir = self.root / ("py-" + re.sub(r"\W", "_", path))
            make_workspace(workdir, self.dataset)
            self.workdirs[path] = workdir
        return self.workdirs[path]

    def _start(self) -> subprocess.Popen:
        """The worker, started on first use and after a kill."""
        if self.proc is None or self.proc.poll() is not None:
            self.proc = subprocess.Popen(
                [sys.executable, str(WORKER)],
                cwd=self.root,
                env=self.env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=(self.root / "worker-stderr.txt").open("a"),
                text=True,
                start_new_session=True,
            )
            self.done.clear()  # a new process has empty namespaces
        return self.proc

    def kill(self) -> None:
        """Stop the worker (its whole session)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    def close(self) -> None:
        """End the worker at the end of the session."""
        if self.proc is not None and self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc = None

    def _request(self, block: Block, statement: Statement, timeout: float) -> tuple[dict, str]:
        """Run one statement in the worker; return its answer and output."""
        proc = self._start()
        self.n_logs += 1
        log = self.root / f"log-{self.n_logs}.txt"
        request = {
            "namespace": block.path,
            "cwd": str(self._workdir(block.path)),
            "log": str(log),
            "filename": block.path,
            "first_line": statement.first_line,
            "code": statement.code,
        }
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(json.dumps(request) + "\n")
        proc.stdin.flush()
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        line = proc.stdout.readline() if ready else ""
        output = log.read_text(errors="replace") if log.exists() else ""
        if not ready:
            self.kill()
            return {"ok": False, "traceback": f"timed out after {timeout:.0f} s"}, output
        if not line:
            err = (self.root / "worker-stderr.txt").read_text(errors="replace")
            self.kill()
            return {"ok": False, "traceback": f"the worker died:\n{_tail(err)}"}, output
        return json.loads(line), output

    def _execute(self, block: Block) -> str | None:
        """Run a block's statements; None if it passed, else the failure message."""
        ran = block.runnable_text()
        for statement in python_statements(block):
            answer, output = self._request(block, statement, _timeout(block))
            if statement.expect is None:
                if not answer["ok"]:
                    return _report(block, "raised", ran, output + "\n" + answer["traceback"])
                continue
            want_type, want_msg = statement.expect
            if answer["ok"]:
                return _report(block, f"expected {want_type}: {want_msg}; nothing raised", ran,
                               output)  # fmt: skip
            got_type = answer.get("type", "")
            same_type = got_type == want_type or got_type.endswith("." + want_type)
            if not same_type or " ".join(answer["message"].split()) != " ".join(want_msg.split()):
                return _report(
                    block,
                    f"expected {want_type}: {want_msg}\n  raised {got_type}: {answer['message']}",
                    ran,
                    output + "\n" + answer["traceback"],
                )
        return None

    def run(self, block: Block) -> None:
        """Run a block after the earlier python blocks of its file; fail on an error.

        The earlier blocks that have not run yet run first, except slow ones before a block
        that is not slow (it must not need them).
        """
        earlier = [
            b
            for b in BY_PATH[block.path].blocks
            if b.kind == "python"
            and b.skip is None
            and b.line < block.line
            and (block.slow or not b.slow)
        ]
        for before in earlier:
            if before.id not in self.done:
                self.done[before.id] = self._execute(before)
        if block.id not in self.done:
            self.done[block.id] = self._execute(block)
        failure = self.done[block.id]
        if failure is not None:
            failed = [b.id for b in earlier if self.done.get(b.id) is not None]
            if failed:
                failure += f"\n(the earlier blocks {', '.join(failed)} of its file failed too)"
            pytest.fail(failure)


@pytest.fixture(scope="session")
def doc_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``data/lognormal64`` of the blocks, simulated once per session."""
    return simulate_dataset(tmp_path_factory.mktemp("doc-data") / "lognormal64")


@pytest.fixture(scope="session")
def python_runner(
    tmp_path_factory: pytest.TempPathFactory, doc_dataset: Path
) -> Iterator[PythonRunner]:
    """The worker of the python blocks, shared by all files of a session."""
    runner = PythonRunner(tmp_path_factory.mktemp("doc-python"), doc_dataset)
    yield runner
    runner.close()


# ---------------------------------------------------------------------------------------------
# the tests


@pytest.mark.parametrize("block", _cases())
def test_doc_block(
    block: Block, python_runner: PythonRunner, doc_dataset: Path, tmp_path: Path
) -> None:
    """A python or shell block of the docs runs without error (as its markers configure)."""
    if block.kind == "python":
        python_runner.run(block)
    else:
        run_shell_block(block, tmp_path, doc_dataset)


def test_doc_markers() -> None:
    """Every doctest marker sits directly above a run block, and every replace pattern occurs."""
    problems = [p for doc in DOCS for p in doc.problems]
    assert not problems, "\n".join(problems)


def test_command_blocks_are_labelled() -> None:
    """A block of commands is labelled (bash or python), so that it is run."""
    unlabelled = [
        block.id
        for doc in DOCS
        for block in doc.blocks
        if not block.lang and block.text.lstrip().startswith(COMMAND_WORDS)
    ]
    assert not unlabelled, f"label these command blocks ```bash: {unlabelled}"


def test_make_run_is_the_documented_command() -> None:
    """``make run`` (skipped as a README block) runs the command docs/usage.md shows and tests."""
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    recipe = re.search(r"^run:.*\n((?:\t.*\n)+)", makefile, re.MULTILINE)
    assert recipe, "the Makefile has no run target"
    made = " ".join(recipe.group(1).replace("\\\n", " ").split())
    made = made.replace("$(VENV)/bin/diffinfer", "diffinfer")
    shown = [
        " ".join(b.text.replace("\\\n", " ").split())
        for b in BY_PATH["docs/usage.md"].blocks
        if b.kind == "shell" and "--out runs/example" in b.text
    ]
    assert made in shown, f"make run: {made!r}\ndocs/usage.md: {shown!r}"


_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?%?")


def _shown_numbers(line: str) -> list[str]:
    """The numbers of an output line that a rerun must reproduce: not timings (``8.0 s``)."""
    line = re.sub(r"\d+(?:\.\d+)? s\b", "", line)
    return _NUMBER.findall(line)


def _close(shown: str, got: str) -> bool:
    """Two printed numbers agree: integers (evaluations, calls) within 25 % (the grid and the
    Monte Carlo rounds depend on the CPU's precision), decimals within 0.005 or 5 % (fp32 on
    one CPU, bf16 on another)."""
    a, b = (float(x.rstrip("%")) for x in (shown, got))
    if "." not in shown and "." not in got:
        return abs(a - b) <= 0.25 * max(abs(a), 1.0)
    return abs(a - b) <= max(0.005, 0.05 * abs(a))


@pytest.mark.slow  # 25 s: the diffusion and the exact posterior of the example map
def test_the_readme_shows_what_make_run_prints(tmp_path: Path) -> None:
    """The output README.md shows for ``make run`` is what its command prints now: the same
    lines, and the same numbers within the tolerance of another CPU (timings aside)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```text\n((?:diffinfer: warning.*\n)?diffinfer infer: .*?)```", readme,
                      re.DOTALL)  # fmt: skip
    assert block, "README.md shows no make run output"
    shown = [line for line in block.group(1).splitlines() if line.strip()]
    cmd = [str(ROOT / ".venv" / "bin" / "diffinfer"), "infer", "examples/lognormal64/map1.npy",
           "--model", "lognormal64", "--reference", "exact", "--truth", "0.224216",
           "0.788392", "--no-progress", "--out", str(tmp_path / "example")]  # fmt: skip
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    printed = [line for line in (run.stderr + run.stdout).splitlines()
               if line.strip() and not line.startswith("  warnings.warn")]  # fmt: skip
    printed = [line.replace(str(tmp_path / "example"), "runs/example") for line in printed]
    assert len(printed) == len(shown), "\n".join(printed)
    for want, got in zip(shown, printed, strict=True):
        a, b = _shown_numbers(want), _shown_numbers(got)
        assert _NUMBER.sub("#", want) == _NUMBER.sub("#", got), (want, got)
        assert len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True)), (
            f"README shows\n{want}\nmake run prints\n{got}"
        )


SELF_TEST_DOC = """\
<!-- doctest: replace "--n 200" "--n 2" -->
```bash
diffinfer calibrate --n 100
```

<!-- doctest: slow -->
Some prose.

<!-- doctest: slow -->
```text
output
```

<!-- doctest: fast -->
<!-- doctest: skip: needs a GPU -->
<!-- doctest: slow -->
```python
>>> import math
>>> math.sqrt(-1)
Traceback (most recent call last):
ValueError: math domain error
>>> for i in range(2):
...     print(i)
0
1
```

```console
$ echo one \\
  two
one two
$ true
```
"""


def test_marker_check_catches_stale_markers(tmp_path: Path) -> None:
    """The marker check finds a stale replace, stray markers and bad directives (self-test)."""
    path = tmp_path / "doc.md"
    path.write_text(SELF_TEST_DOC, encoding="utf-8")
    doc = parse_markdown(path, "doc.md")
    problems = "\n".join(doc.problems)
    assert "doc.md:L2: replace pattern '--n 200' does not occur" in problems
    assert "doc.md:6: doctest marker not directly above a fenced block" in problems
    assert "doc.md:L10: doctest marker above a block that is not run" in problems
    assert "doc.md:14: unknown doctest directive 'fast'" in problems
    assert "doc.md:L17: a skipped block takes no other marker" in problems
    assert len(doc.problems) == 5, problems
    python, console = doc.blocks[-2], doc.blocks[-1]
    statements = python_statements(python)
    assert [st.code for st in statements] == [
        "import math",
        "math.sqrt(-1)",
        "for i in range(2):\n    print(i)",
    ]
    assert [st.first_line for st in statements] == [18, 19, 22]
    assert statements[1].expect == ("ValueError", "math domain error")
    assert statements[0].expect is None and statements[2].expect is None
    assert shell_script(console) == "echo one \\\n  two\ntrue"
