"""The README's "Using it in your function" section is executed, so it cannot drift.

Its code blocks whose first line is ``# <path>`` are the files of a function folder (flat layout)
and are written to a temporary folder, except ``migrations/...`` blocks, which show what a
command writes and are compared with it (the generator's timestamp aside). Every ``$ command``
of its console blocks then runs, with this checkout's ``peewee-serverless``, ``pytest`` and
``mypy`` on the PATH, and must print what the README shows (``...`` matches anything, as in
doctest): the block with ``migrate`` inside the function folder, then the block with
``package`` (and ``invoke --zip``) next to it. ``export`` sets the environment of the later
commands; a command ending in ``&`` is started in the background until a line of its output
matches the README's. The README's port is replaced by a free one, so that a server already on
it cannot interfere.
"""

from __future__ import annotations

import doctest
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

from .conftest import ROOT

SECTION = "## Using it in your function"
FILE_LINE = re.compile(r"^# ([\w./-]+\.(?:py|txt))\b")
STAMP = re.compile(r"Generated from a schema diff on \d{4}-\d\d-\d\d \d\d:\d\d")
README_PORT = "3001"
READY_TIMEOUT = 60.0


def section() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    return text[start : end if end != -1 else None]


def blocks(text: str) -> list[tuple[str, str]]:
    """Every fenced block as (language, body)."""
    return re.findall(r"^```(\w*)\n(.*?)^```$", text, flags=re.S | re.M)


def free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def commands(console: str) -> list[tuple[str, str]]:
    """(command, expected output) pairs of a console block."""
    pairs: list[tuple[str, list[str]]] = []
    for line in console.splitlines():
        if line.startswith("$ "):
            pairs.append((line[2:], []))
        elif pairs:
            pairs[-1][1].append(line)
    return [(cmd, "\n".join(out) + ("\n" if out else "")) for cmd, out in pairs]


def matches(want: str, got: str) -> bool:
    # curl -i prints CRLF; curl -s prints no final newline, which a console shows anyway.
    got = got.replace("\r\n", "\n").rstrip("\n") + "\n"
    checker = doctest.OutputChecker()
    return checker.check_output(want.rstrip("\n") + "\n", got, doctest.ELLIPSIS)


def wait_for_line(path: Path, proc: subprocess.Popen[bytes], want: str) -> str:
    """The first line the background command prints that matches ``want`` (its ready line)."""
    deadline = time.monotonic() + READY_TIMEOUT
    text = ""
    while time.monotonic() < deadline:
        text = path.read_text() if path.exists() else ""
        for line in text.splitlines(keepends=True):
            if line.endswith("\n") and matches(want, line):
                return line
        assert proc.poll() is None, f"background command exited: {text}"
        time.sleep(0.05)  # polling a condition (the ready line), bounded by the deadline
    raise AssertionError(f"no line like {want!r} from the background command: {text}")


def test_readme_function_runs_as_documented(tmp_path: Path) -> None:
    text = section()
    folder = tmp_path / "notes"
    folder.mkdir()
    expected_files: dict[str, str] = {}
    cycle = package = None
    for language, body in blocks(text):
        first = body.split("\n", 1)[0]
        found = FILE_LINE.match(first)
        if found and language in ("python", "text"):
            path = found.group(1)
            if path.startswith("migrations/"):
                expected_files[path] = body.split("\n", 1)[1]
            else:
                (folder / path).parent.mkdir(parents=True, exist_ok=True)
                (folder / path).write_text(body)
        elif language == "console" and "$ peewee-serverless migrate" in body:
            cycle = body
        elif language == "console" and "$ peewee-serverless package" in body:
            package = body
    assert cycle is not None and package is not None, "a console block of the section is gone"
    assert {"models.py", "app.py", "conftest.py", "tests/test_notes.py"} <= {
        str(p.relative_to(folder)) for p in folder.rglob("*.py")
    }

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "DATABASE_URL"))}
    env.pop("PEEWEE_SERVERLESS_TEST_DATABASE_URL", None)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    background: list[subprocess.Popen[bytes]] = []
    ran = []
    steps = [(folder, cmd) for cmd in commands(cycle)] + [
        (tmp_path, cmd) for cmd in commands(package)
    ]
    try:
        for cwd, (command, want) in steps:
            command = command.replace(README_PORT, port)
            want = want.replace(README_PORT, port)
            if command.startswith("export "):
                name, _, value = command[len("export ") :].partition("=")
                env[name] = value
                continue
            if command.endswith("&"):
                log = tmp_path / f"background-{len(background)}.log"
                with open(log, "wb") as out:
                    proc = subprocess.Popen(
                        ["bash", "-c", f"exec {command[:-1].strip()}"],
                        cwd=cwd,
                        env=env,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                    )
                background.append(proc)
                got = wait_for_line(log, proc, want)
            else:
                done = subprocess.run(
                    ["bash", "-c", command],
                    cwd=cwd,
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=300,
                )
                assert done.returncode == 0, (command, done.stdout, done.stderr)
                got = done.stdout
            assert matches(want, got), f"$ {command}\nREADME shows:\n{want}\nit printed:\n{got}"
            ran.append(command.split()[0])
    finally:
        for proc in background:
            proc.terminate()
            proc.wait(timeout=30)
    assert ran.count("peewee-serverless") >= 5 and "pytest" in ran and "mypy" in ran
    assert (tmp_path / "dist" / "function.zip").is_file()

    assert expected_files, "the section no longer shows a generated migration"
    for path, shown in expected_files.items():
        written = (folder / path).read_text()
        stamp = STAMP.search(shown)
        if stamp:
            written = STAMP.sub(stamp.group(0), written)
        assert written == shown, f"{path} as written:\n{written}"
