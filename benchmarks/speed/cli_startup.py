"""Start-up time of the command line: ``histocam --help`` and ``histocam methods``.

Each command runs in fresh subprocesses (``python -m histocam ...``), ``--repeats`` times after one
warm-up run (which fills the OS file cache); the script prints, per command, the median and the
fastest wall time, the import time of ``histocam.cli`` that ``python -X importtime`` reports
(cumulative, microseconds → seconds), and whether torch was imported. The target is well under a
second on an idle machine: time it there, not on a machine shared with training jobs.

    python benchmarks/speed/cli_startup.py [--repeats 10]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

COMMANDS = {"histocam --help": ["--help"], "histocam methods": ["methods"]}


def wall_times(args: list[str], repeats: int) -> list[float]:
    command = [sys.executable, "-m", "histocam", *args]
    subprocess.run(command, check=True, capture_output=True)  # warm-up: the file cache
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return times


def import_report(args: list[str]) -> tuple[float, bool]:
    """(seconds importing ``histocam.cli``, whether torch was imported) from ``-X importtime``."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "histocam", *args],
                          check=True, capture_output=True, text=True)
    cli, torch = 0.0, False
    for line in done.stderr.splitlines():  # "import time: self | cumulative | name" (µs)
        fields = [f.strip() for f in line.removeprefix("import time:").split("|")]
        if not line.startswith("import time:") or len(fields) != 3 or not fields[1].isdigit():
            continue
        _, cumulative, name = fields
        if name == "histocam.cli":
            cli = int(cumulative) / 1e6
        torch = torch or name == "torch"
    return cli, torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, {args.repeats} runs each after one warm-up")
    print(f"{'command':<18} {'median s':>9} {'fastest s':>10} {'import cli s':>13}  torch")
    for label, argv in COMMANDS.items():
        times = wall_times(argv, args.repeats)
        cli, torch = import_report(argv)
        print(f"{label:<18} {statistics.median(times):9.3f} {min(times):10.3f} {cli:13.3f}  "
              f"{'imported' if torch else 'not imported'}")


if __name__ == "__main__":
    main()
