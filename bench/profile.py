"""Where a gunicorn worker's time goes under load: py-spy samples one worker while wrk drives the decision
endpoint, and the samples are summarised by stage (innermost matching frame wins) and by function.

Used by `make bench` (bench/run.py --profile SECONDS); also on its own against a running worker:

    python -m bench.profile --pid WORKER_PID --seconds 15

Writes the samples to var/bench/profile.txt as collapsed stacks (speedscope.app and flamegraph.pl read them)
and prints the summary.
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "var" / "bench"

# (stage, substrings of a frame "function (path:line)"): the innermost frame that matches decides the
# stage of a sample, so JSON encoding inside the store counts as JSON, not as the store.
STAGES = (
    ("scoring (retention/compiled.py)", ("retention/compiled.py",)),
    ("JSON encode/decode", ("json/encoder.py", "json/decoder.py", "json/__init__.py", "flask/json/")),
    ("validation (marshmallow, webargs)", ("marshmallow/", "webargs/", "flask_smorest/arguments")),
    ("metrics (prometheus_client)", ("prometheus_client/",)),
    ("logging", ("logging/", "service/logs.py")),
    ("store: SQLite (sqlite3 calls)", ("sqlalchemy/engine/default.py:", "sqlite3")),
    ("store: SQLAlchemy and our store code", ("sqlalchemy/", "store/")),
    ("policy: threads (scoring handed to a worker thread)", ("concurrent/futures", "threading.py")),
    ("policy: features, guardrails, value (retention/)", ("retention/",)),
    ("auth (service/auth.py)", ("service/auth.py",)),
    ("our Flask layer (service/)", ("service/",)),
    ("Flask, Werkzeug, gunicorn", ("flask/", "werkzeug/", "gunicorn/")),
)


def record(pid: int, seconds: float, out: Path = OUT, gil: bool = False) -> Path:
    """Sample `pid` (and its threads) for `seconds` with py-spy; returns the collapsed-stack file.

    Two views, each biased one way, so the bench takes both:
    - default: every thread py-spy thinks is not idle. It over-counts threads blocked on a lock (the scoring
      pool's worker waiting for work, the request thread waiting for a score): they look busy.
    - gil=True: only samples where a thread holds the GIL, i.e. Python running. It under-counts C code that
      releases the GIL, above all SQLite executing a statement.
    """
    out.mkdir(parents=True, exist_ok=True)
    raw = out / ("profile-gil.txt" if gil else "profile.txt")
    spy = str(Path(sys.executable).with_name("py-spy"))
    common = ["--pid", str(pid), "--duration", str(int(seconds)), "--rate", "200", "--nonblocking"]
    subprocess.run([spy, "record", *common, *(["--gil"] if gil else []), "--format", "raw", "--output", str(raw)],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return raw


def summarise(raw: Path, top: int = 15) -> dict:
    """Share of samples per stage and the functions with the most self time."""
    stages: collections.Counter = collections.Counter()
    leaves: collections.Counter = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        stages[_stage(frames)] += n
        leaves[frames[-1]] += n
    share = {name: round(n / total, 3) for name, n in stages.most_common()} if total else {}
    self_time = [{"function": f, "share": round(n / total, 3)} for f, n in leaves.most_common(top)] if total else []
    return {"samples": total, "stages": share, "self_time": self_time}


def _stage(frames: list[str]) -> str:
    for frame in reversed(frames):
        for name, markers in STAGES:
            if any(m in frame for m in markers):
                return name
    return "other (interpreter, C, start-up frames)"


def format_summary(s: dict, view: str = "threads not idle") -> str:
    lines = [f"where a decision worker's time goes (py-spy, {view}, {s['samples']} samples; innermost stage wins):"]
    lines += [f"  {share:6.1%}  {name}" for name, share in s["stages"].items()]
    lines.append("  functions with the most self time:")
    lines += [f"  {x['share']:6.1%}  {x['function']}" for x in s["self_time"]]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--seconds", type=float, default=15)
    ap.add_argument("--gil", action="store_true", help="only samples holding the GIL (see `record`)")
    args = ap.parse_args()
    print(format_summary(summarise(record(args.pid, args.seconds, gil=args.gil)),
                         "holding the GIL" if args.gil else "threads not idle"))


if __name__ == "__main__":
    main()
