"""The one benchmark command: ``python -m bench.run [--quick]`` (or ``scripts/bench``).

Runs the scenarios against the running MariaDB and PostgreSQL (database
``peewee_serverless_bench``, created when missing) and a SQLite file, and writes
``docs/benchmarks.md`` (tables) and ``docs/benchmarks.png`` (plot). Scenario 4 (bursts) is
``bench/burst.py``, run as its own process on a private server; it writes its section of the
Markdown file between the ``burst`` markers, which this command keeps in place.
``--only`` runs some scenarios and keeps the others' sections, target rows and plot as an
earlier run wrote them.

Every figure is a ratio against a baseline measured in the same run, next to the absolute
numbers; the machine is described at the top of the file.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.common import (
    BUDGETS,
    DEFAULT_DATABASE,
    ENGINE_LABELS,
    ENGINES,
    ROOT,
    Budget,
    Section,
    child_environ,
    machine,
    table,
)

SCENARIOS = ("warm", "cold", "freeze", "burst", "server", "profile")
MARK_START = "<!-- burst:start -->"
MARK_END = "<!-- burst:end -->"
BURST_PLACEHOLDER = (
    f"{MARK_START}\n## 4. Bursts against a connection limit\n\n"
    "Not run yet: `python bench/burst.py` writes this section.\n\n"
    f"{MARK_END}"
)


def _runner(key: str) -> Callable[[Budget, Sequence[str], str], Section]:
    from importlib import import_module

    return import_module(f"bench.{key}").run  # type: ignore[no-any-return]


def load_average() -> str:
    """``uptime``'s load averages (1, 5, 15 min): how much other work shared the cores."""
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "unknown"
    return f"{one:.1f} / {five:.1f} / {fifteen:.1f} (1 / 5 / 15 min)"


def existing_burst_section(path: Path) -> str:
    """The burst section currently in the file (markers included), or a placeholder."""
    if path.exists():
        text = path.read_text()
        if MARK_START in text and MARK_END in text:
            head, _, rest = text.partition(MARK_START)
            body, _, _ = rest.partition(MARK_END)
            return MARK_START + body + MARK_END
    return BURST_PLACEHOLDER


def keep_sections(path: Path, text: str, fresh: Sequence[str] = ()) -> str:
    """``text`` with the sections the file at ``path`` holds between markers
    (``<!-- name:start -->`` ... ``<!-- name:end -->``) kept, except those named in ``fresh``
    (what this run measured): the scenarios' own sections (warm, cold, ...: a run with
    ``--only`` keeps the others as they were) and other scripts' (zipcold, localrt, pgbouncer,
    connect, ...). Each goes in place of the same markers in ``text`` (a placeholder), else is
    appended in its order. A section inside another (zipcold inside cold) is taken on its own,
    so it is kept when the outer one was measured again.

    The burst section is placed by :func:`existing_burst_section`, so it is not repeated here.
    """
    if not path.exists():
        return text
    old = path.read_text()
    for name in dict.fromkeys(re.findall(r"<!-- ([a-z0-9_-]+):start -->", old)):
        if name == "burst" or name in fresh:
            continue
        start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
        body, found, _ = old.partition(start)[2].partition(end)
        if not found:
            continue
        section = start + body + end
        if start in text and end in text:
            head, _, rest = text.partition(start)
            _, _, tail = rest.partition(end)
            text = head + section + tail
        else:
            text += "\n" + section + "\n"
    return text


def kept_targets(path: Path, measured: Sequence[str]) -> list[list[str]]:
    """The rows of the targets table in the file at ``path`` whose target this run did not
    measure (a run with ``--only``): they stay, as they were, beside the new rows."""
    if not path.exists():
        return []
    _, found, rest = path.read_text().partition("\n## Targets\n")
    if not found:
        return []
    rows = []
    for line in rest.strip().splitlines()[2:]:  # after the header and separator rows
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        if cells and cells[0] not in measured:
            rows.append(cells)
    return rows


def run_burst(budget: Budget, output: Path) -> str:
    """Run ``bench/burst.py`` (its own process and private server); a status line."""
    script = ROOT / "bench" / "burst.py"
    if not script.exists():
        return "bench/burst.py is not there: the burst section was left as it was"
    command = [sys.executable, str(script), *budget.burst_args, "--output", str(output)]
    started = time.perf_counter()
    proc = subprocess.run(
        command,
        env=child_environ(),
        cwd=str(ROOT),
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    if proc.returncode != 0:
        return f"bench/burst.py failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]}"
    return f"bench/burst.py done in {time.perf_counter() - started:.0f} s"


def render(
    sections: dict[str, Section],
    burst: str,
    engines: Sequence[str],
    budget: Budget,
    command: str,
    elapsed: float,
    plot_name: str | None,
    load: Sequence[str] = (),
    kept_rows: Sequence[Sequence[str]] = (),
) -> str:
    """The whole Markdown document (``load``: the machine's load averages during the run).

    Each scenario's section stands between its own markers (``<!-- warm:start -->``); one this
    run did not measure is an empty pair, which :func:`keep_sections` fills from the file's
    previous version. ``kept_rows``: targets table rows kept from it (:func:`kept_targets`).
    """
    targets = [
        [t.name, t.goal, t.measured, t.verdict] for s in sections.values() for t in s.targets
    ]
    partial = any(key not in sections for key in SCENARIOS if key != "burst")
    generated = (
        f"Generated by `{command}` on {datetime.date.today().isoformat()} "
        f"({budget.name} budget, {elapsed:.0f} s)"
    )
    if partial:
        generated += (
            (
                ": sections "
                + ", ".join(f"{key} ({sections[key].title.split('.')[0]})" for key in sections)
                + "; the other sections, their targets and the plot are kept as an earlier run "
                "wrote them"
            )
            if sections
            else ": no scenario; every section is kept from earlier runs"
        )
    lines = [
        "# Benchmarks",
        "",
        f"{generated}. Every ratio is against a baseline measured "
        "in the same run, on this machine; absolute numbers are beside it. Lower ms and higher "
        "requests/s are better. The lifecycle's Powertools log line (one JSON line per "
        "invocation) is formatted and written as in Lambda, but to a null stream "
        "(`/dev/null` or a drained pipe), never the terminal.",
        "",
        "## Machine",
        "",
        table(["", ""], [*machine(engines), *(("load average", x) for x in load)], "ll"),
        "",
        "## Targets",
        "",
        table(
            ["target", "goal", "measured", "verdict"],
            [*targets, *kept_rows],
            "llll",
        )
        if targets or kept_rows
        else "No target measured in this run.",
        "",
    ]
    if plot_name:
        lines += [f"![benchmarks]({plot_name})", ""]
    for key in SCENARIOS:
        if key == "burst":
            lines += [burst, ""]
            continue
        section = sections.get(key)
        if section is None:
            lines += [f"<!-- {key}:start -->", f"<!-- {key}:end -->", ""]
            continue
        lines += [
            f"<!-- {key}:start -->",
            f"## {section.title}",
            "",
            section.body,
            f"<!-- {key}:end -->",
            "",
        ]
    return "\n".join(lines).rstrip() + "\n"


def plot(sections: dict[str, Section], path: Path) -> bool:
    """``docs/benchmarks.png``: one panel per measured scenario (False without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    panels = [k for k in ("warm", "cold", "freeze", "server") if k in sections]
    if not panels:
        return False
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.6), squeeze=False)
    for ax, key in zip(axes[0], panels, strict=False):
        data: dict[str, Any] = sections[key].plot
        if key == "warm":
            _grouped(
                ax,
                data,
                "Warm GET /users/{id}: median ms",
                {
                    "raw": "raw persistent",
                    "per-invocation": "connect/invocation",
                    "pool": "playhouse.pool",
                    "serverless": "peewee-serverless",
                    "serverless-quiet": "p-s, log WARNING",
                },
                log=True,
            )
        elif key == "freeze":
            _grouped(
                ax,
                data,
                "After a freeze: median ms",
                {
                    "warm": "warm",
                    "raw-frozen": "plain, idle gap",
                    "frozen": "frozen, alive",
                    "killed": "frozen, killed",
                },
                log=True,
            )
        elif key == "cold":
            names = list(data["imports"])
            ax.bar(range(len(names)), [data["imports"][n] for n in names], color="#4c72b0")
            ax.set_xticks(range(len(names)))
            ax.set_xticklabels([n.replace("examples.users.", "") for n in names], fontsize=8)
            ax.set_title("Cold start: import ms (median)")
        else:
            labels = ["in-process"] + [f"HTTP c={c}" for c in data["levels"]]
            values = [data["inprocess"], *data["levels"].values()]
            ax.bar(range(len(values)), values, color="#55a868")
            ax.axhline(1000, color="red", linestyle="--", linewidth=1)
            ax.set_xticks(range(len(values)))
            ax.set_xticklabels(labels, fontsize=8)
            ax.set_title("Local server, SQLite: requests/s")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def _grouped(ax: Any, data: dict[str, Any], title: str, series: dict[str, str], log: bool) -> None:
    engines = list(data)
    width = 0.8 / max(1, len(series))
    for i, (key, label) in enumerate(series.items()):
        values = [data[e].get(key, 0.0) for e in engines]
        ax.bar([x + i * width for x in range(len(engines))], values, width, label=label)
    ax.set_xticks([x + width * (len(series) - 1) / 2 for x in range(len(engines))])
    ax.set_xticklabels([ENGINE_LABELS[e] for e in engines])
    if log:
        ax.set_yscale("log")
    ax.set_title(title)
    ax.legend(fontsize=7)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, run the scenarios, write the report."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.run", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="fewer iterations (~2 minutes)")
    parser.add_argument("--smoke", action="store_true", help=argparse.SUPPRESS)  # tests
    parser.add_argument(
        "--only", default=",".join(SCENARIOS), help="comma-separated: " + ",".join(SCENARIOS)
    )
    parser.add_argument("--engines", default=",".join(ENGINES), help="default: %(default)s")
    parser.add_argument("--database", default=DEFAULT_DATABASE, help="default: %(default)s")
    parser.add_argument("--output", default=str(ROOT / "docs" / "benchmarks.md"))
    parser.add_argument("--no-plot", action="store_true")
    args = parser.parse_args(argv)
    budget = BUDGETS["smoke" if args.smoke else "quick" if args.quick else "full"]
    engines = [e for e in args.engines.split(",") if e]
    unknown = set(engines) - set(ENGINES)
    only = [s for s in args.only.split(",") if s]
    unknown |= set(only) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown engine/scenario: {', '.join(sorted(unknown))}")
    output = Path(args.output)
    load = [f"{load_average()} at the start"]
    started = time.perf_counter()
    sections: dict[str, Section] = {}
    burst_status = ""
    for key in SCENARIOS:
        if key not in only:
            continue
        t0 = time.perf_counter()
        print(f"[bench] {key} ...", flush=True)
        if key == "burst":
            burst_status = run_burst(budget, output)
            print(f"[bench] {burst_status}", flush=True)
            continue
        sections[key] = _runner(key)(budget, engines, args.database)
        print(f"[bench] {key} done in {time.perf_counter() - t0:.0f} s", flush=True)
    png = output.with_suffix(".png")
    partial = any(key not in sections for key in SCENARIOS if key != "burst")
    # The plot shows every scenario: a run with --only leaves the existing one as it is.
    plotted = not args.no_plot and not partial and plot(sections, png)
    shown = plotted or (partial and png.exists())
    measured = [t.name for s in sections.values() for t in s.targets]
    argv_text = " ".join(argv if argv is not None else sys.argv[1:])
    command = f"python -m bench.run {argv_text}".strip()
    text = render(
        sections,
        existing_burst_section(output),
        engines,
        budget,
        command,
        time.perf_counter() - started,
        png.name if shown else None,
        [*load, f"{load_average()} at the end"],
        kept_targets(output, measured) if partial else (),
    )
    text = keep_sections(output, text, fresh=list(sections))
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text)
    for section in sections.values():
        for t in section.targets:
            print(f"[bench] {t.verdict:>14}  {t.name}: {t.measured} (goal {t.goal})", flush=True)
    print(f"[bench] wrote {output}" + (f" and {png}" if plotted else ""), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
