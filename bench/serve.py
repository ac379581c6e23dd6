"""Serve benchmark: one-click unsubscribes answered by one ``bulletin serve`` process.

    .venv/bin/python bench/serve.py [--subscribers 10000] [--concurrency 32] [--requests 4000]
                                    [--import-rows 200000] [--engine both|sqlite|postgresql]
                                    [--quick] [--py-spy FILE]

Run by ``make bench``. Prints figures with the goal of issue #13 beside each (at least 200
unsubscribes a second, p99 at most 1 s with no import running); nothing here passes or fails.

What is measured, in one run, on a temporary copy of the repository's workspace (under
bench/.cache/, removed at the end): on SQLite, a user's default, then on PostgreSQL (a
private server, tests/pgserver.py, on the same machine; skipped when its programs are not
installed):

* setup: ``bulletin subscribers import`` of ``--subscribers`` generated rows into list
  ``news``, then one valid unsubscribe token per subscriber (signed with the workspace's key).
* ``bulletin serve --port 0``, a child process, as a user runs it (access log on).
* **reference**: the same client sending ``GET /healthz`` (one ``SELECT 1``): the floor of this
  server on this machine, HTTP and the framework included.
* **one-click**: RFC 8058 POSTs (``List-Unsubscribe=One-Click``), each token once, from
  ``--concurrency`` clients at a time, each request on a connection of its own (as from many
  mail providers) and from an X-Forwarded-For address of its own (the rate limit is per
  client address, and no provider sends hundreds a second from one).
* **during an import**: the same POSTs while ``bulletin subscribers import`` of
  ``--import-rows`` new rows runs in another process (its save holds SQLite's write lock);
  a request that cannot write within serve's 5 s gets 503 with Retry-After.

After each run the database is checked: every 200 is an unsubscribe that was saved (the
subscription is unsubscribed and has exactly one ``unsubscribed`` event), every 503 left
the subscriber as it was. The client is a small asyncio HTTP/1.1 client (no library), so that
it costs the shared cores little; its CPU seconds are printed beside the server's.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import platform
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / "bench" / ".cache"
SECRET = "bench-signing-key-not-a-secret-0123456789"
LIST = "news"

GOAL_RATE = 200.0
GOAL_P99 = 1.0

FIRST = ["Ion", "Maria", "Ștefan", "Ioana", "Andrei", "Elena", "Mihai", "Ana", "Radu", "Irina"]
LAST = ["Popescu", "Ionescu", "Țurcanu", "Stănescu", "Mureșan", "Bălan", "Pătrașcu", "Niță"]
DOMAINS = ["gmail.com", "yahoo.com", "example.ro", "uaic.ro", "outlook.com", "example.org"]

ONE_CLICK = b"List-Unsubscribe=One-Click"


# --- processes --------------------------------------------------------------------------


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    # SIGTERM/SIGHUP become SystemExit so that the `finally` blocks stop the children.
    raise SystemExit(128 + signum)


@contextmanager
def signals_exit() -> Iterator[None]:
    previous = {s: signal.signal(s, _exit_on_signal) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def proc_cpu(pid: int) -> float:
    """CPU seconds used so far by a running process (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def client_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def child_env() -> dict[str, str]:
    return {**os.environ, "BULLETIN_SECRET_KEY": SECRET, "COLUMNS": "200"}


def bulletin_cmd(root: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "bulletin", "-w", str(root), *args]


class Serve:
    """``bulletin serve --port 0`` in its own process group; knows its port once it listens."""

    def __init__(self, root: Path, log: Path, profile: Path | None = None) -> None:
        self.log = open(log, "w+", encoding="utf-8")  # noqa: SIM115 (closed in stop)
        cmd = bulletin_cmd(root, "serve", "--port", "0")
        if profile is not None:
            # py-spy samples every thread of serve (--idle off: only what runs on a CPU).
            spy = shutil.which("py-spy", path=Path(sys.executable).parent) or "py-spy"
            cmd = [spy, "record", "-o", str(profile), "-f", "raw", "-r", "200", "--", *cmd]
        self.proc = subprocess.Popen(
            cmd,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=child_env(),
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while True:
            found = re.search(r"at http://127\.0\.0\.1:(\d+)/ ", Path(log).read_text())
            if found:
                self.port = int(found.group(1))
                return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"bulletin serve did not start:\n{Path(log).read_text()}")
            time.sleep(0.05)

    def cpu(self) -> float:
        return proc_cpu(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


# --- workspace ----------------------------------------------------------------------------


def make_workspace(root: Path) -> Path:
    """A copy of the repository's workspace (its own SQLite file under subscribers/)."""
    root.mkdir(parents=True)
    shutil.copytree(REPO / "templates", root / "templates")
    shutil.copytree(REPO / "issues", root / "issues")
    (root / "subscribers").mkdir()
    shutil.copy(REPO / "bulletin.toml", root / "bulletin.toml")
    return root


def generate_csv(path: Path, rows: int, prefix: str, seed: int) -> None:
    """Subscribers with distinct addresses and Romanian names (streamed to ``path``)."""
    rnd = random.Random(seed)
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write("email,name\r\n")
        for i in range(rows):
            domain = DOMAINS[i % len(DOMAINS)]
            f.write(f"{prefix}.{i}@{domain},{rnd.choice(FIRST)} {rnd.choice(LAST)}\r\n")


def import_cmd(root: Path, csv_path: Path, list_slug: str) -> list[str]:
    return bulletin_cmd(
        root, "subscribers", "import", str(csv_path), "--list", list_slug, "--create-list"
    )


def tokens_of(root: Path) -> tuple[list[int], list[str], int]:
    """(subscriber ids, their unsubscribe tokens for the list, the list's id)."""
    import sqlalchemy as sa

    from bulletin import workspace
    from bulletin.store.db import open_store
    from bulletin.store.schema import lists, subscriptions
    from bulletin.tokens import TokenSigner

    ws = workspace.load(root)
    engine = open_store(ws.database_url())
    try:
        with engine.connect() as conn:
            list_id = conn.scalar(sa.select(lists.c.id).where(lists.c.slug == LIST))
            assert list_id is not None
            ids = list(
                conn.scalars(
                    sa.select(subscriptions.c.subscriber_id)
                    .where(subscriptions.c.list_id == list_id)
                    .order_by(subscriptions.c.subscriber_id)
                )
            )
    finally:
        engine.dispose()
    signer = TokenSigner([SECRET])
    return ids, [signer.unsubscribe_token(i, list_id) for i in ids], list_id


@dataclass
class Check:
    saved_ok: int = 0
    """200s whose unsubscribe is in the database with exactly one event."""
    saved_wrong: list[int] = field(default_factory=list)
    busy_untouched: int = 0
    """503s whose subscriber is still subscribed, without an unsubscribe event."""
    busy_touched: list[int] = field(default_factory=list)


def check_database(root: Path, list_id: int, answered: dict[int, int]) -> Check:
    """Every 200 saved exactly once and every 503 left untouched (``answered``: id -> status)."""
    import sqlalchemy as sa

    from bulletin import workspace
    from bulletin.store.db import open_store
    from bulletin.store.schema import events, subscriptions

    ws = workspace.load(root)
    engine = open_store(ws.database_url())
    check = Check()
    try:
        with engine.connect() as conn:
            status = dict(
                conn.execute(
                    sa.select(subscriptions.c.subscriber_id, subscriptions.c.status).where(
                        subscriptions.c.list_id == list_id
                    )
                ).all()
            )
            counted = Counter(
                conn.scalars(
                    sa.select(events.c.subscriber_id).where(
                        events.c.kind == "unsubscribed", events.c.list_id == list_id
                    )
                )
            )
    finally:
        engine.dispose()
    for sub_id, code in answered.items():
        if code == 200:
            if status.get(sub_id) == "unsubscribed" and counted[sub_id] == 1:
                check.saved_ok += 1
            else:
                check.saved_wrong.append(sub_id)
        elif code == 503:
            if status.get(sub_id) == "subscribed" and counted[sub_id] == 0:
                check.busy_untouched += 1
            else:
                check.busy_touched.append(sub_id)
    return check


# --- the client -----------------------------------------------------------------------------


_addresses = (f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}" for n in itertools.count(1))


def _request(method: str, path: str, body: bytes = b"") -> bytes:
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: bench.example\r\n"
        f"X-Forwarded-For: {next(_addresses)}\r\nConnection: close\r\n"
    )
    if method == "POST":
        head += (
            f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len(body)}\r\n"
        )
    return head.encode("ascii") + b"\r\n" + body


async def _one(port: int, request: bytes, timeout: float) -> tuple[int, float]:
    """(status, seconds) of one request on a connection of its own; status 0 on failure."""
    started = time.perf_counter()
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                writer.write(request)
                line = await reader.readline()
                await reader.read()  # to the end: Connection: close
            finally:
                writer.close()
    except (OSError, TimeoutError):
        return 0, time.perf_counter() - started
    try:
        status = int(line.split(b" ", 2)[1])
    except (IndexError, ValueError):
        status = 0
    return status, time.perf_counter() - started


@dataclass
class Run:
    label: str
    wall: float
    latencies: list[float]
    statuses: Counter[int]
    server_cpu: float
    client_cpu: float
    answered: dict[int, int] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.wall if self.wall else 0.0

    def pct(self, p: float) -> float:
        ordered = sorted(self.latencies)
        if not ordered:
            return 0.0
        return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def drive(
    serve: Serve,
    label: str,
    requests: list[tuple[int, bytes]],
    concurrency: int,
    *,
    until: threading.Event | None = None,
    timeout: float = 30.0,
) -> Run:
    """Send ``requests`` ((key, bytes)) from ``concurrency`` clients at a time; stop early
    once ``until`` is set."""
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    answered: dict[int, int] = {}
    queue = iter(requests)

    async def worker() -> None:
        for key, request in queue:
            if until is not None and until.is_set():
                return
            status, seconds = await _one(serve.port, request, timeout)
            latencies.append(seconds)
            statuses[status] += 1
            answered[key] = status

    async def main() -> None:
        await asyncio.gather(*(worker() for _ in range(concurrency)))

    cpu0, ccpu0 = serve.cpu(), client_cpu()
    started = time.perf_counter()
    asyncio.run(main())
    wall = time.perf_counter() - started
    return Run(
        label,
        wall,
        latencies,
        statuses,
        serve.cpu() - cpu0,
        client_cpu() - ccpu0,
        answered,
    )


# --- report ---------------------------------------------------------------------------------


def _statuses(run: Run) -> str:
    return ", ".join(f"{code or 'no answer'}: {n:,}" for code, n in sorted(run.statuses.items()))


def print_run(run: Run, goals: bool) -> None:
    rate_goal = f"  (goal >= {GOAL_RATE:.0f}/s)" if goals else ""
    p99_goal = f"  (goal <= {GOAL_P99:g} s)" if goals else ""
    print(f"\n{run.label}")
    print(f"  requests              {len(run.latencies):>10,} in {run.wall:,.2f} s")
    print(f"  throughput            {run.rate:>10,.0f}/s{rate_goal}")
    print(f"  latency p50           {run.pct(50) * 1000:>10,.1f} ms")
    print(f"  latency p90           {run.pct(90) * 1000:>10,.1f} ms")
    print(f"  latency p99           {run.pct(99) * 1000:>10,.1f} ms{p99_goal}")
    print(f"  latency max           {max(run.latencies, default=0) * 1000:>10,.1f} ms")
    print(f"  statuses              {_statuses(run)}")
    per = run.server_cpu / len(run.latencies) * 1000 if run.latencies else 0.0
    print(f"  server CPU            {run.server_cpu:>10,.2f} s ({per:,.2f} ms a request)")
    print(f"  client CPU            {run.client_cpu:>10,.2f} s (this process)")


def print_check(check: Check) -> None:
    ok = not check.saved_wrong and not check.busy_touched
    print(
        f"  database check        {'ok' if ok else 'WRONG'}: {check.saved_ok:,} answered 200 "
        f"and saved once, {check.busy_untouched:,} answered 503 and untouched"
    )
    if check.saved_wrong:
        print(f"    answered 200 but not saved exactly once: {check.saved_wrong[:10]}")
    if check.busy_touched:
        print(f"    answered 503 but changed: {check.busy_touched[:10]}")


@dataclass
class Results:
    engine: str
    subscribers: int
    health: Run
    quiet: Run
    quiet_check: Check
    during: Run
    during_check: Check
    import_wall: float
    import_exit: int | None


def measure(args: argparse.Namespace, top: Path, database_url: str | None) -> Results:
    """Set up a workspace (on ``database_url``, else its SQLite file) and run the three runs."""
    root = make_workspace(top / "ws")
    if database_url is not None:
        toml = root / "bulletin.toml"
        text = toml.read_text(encoding="utf-8")
        text = text.replace(
            'url = "sqlite:///subscribers/bulletin.db"', f'url = "{database_url}"', 1
        )
        toml.write_text(text, encoding="utf-8")
    engine = "PostgreSQL" if database_url else "SQLite"
    t = time.perf_counter()
    people = top / "people.csv"
    generate_csv(people, args.subscribers, "abonat", seed=13)
    subprocess.run(import_cmd(root, people, LIST), env=child_env(), check=True, capture_output=True)
    big = top / "big.csv"
    generate_csv(big, args.import_rows, "nou", seed=14)
    ids, tokens, list_id = tokens_of(root)
    print(
        f"{engine}: {len(ids):,} subscribers on list {LIST!r} in {time.perf_counter() - t:.1f} s",
        flush=True,
    )
    serve = Serve(root, top / "serve.log", args.py_spy)
    try:
        # Warm-up (imports, first connections, the archive thread), not measured.
        drive(serve, "warm-up", [(0, _request("GET", "/healthz"))] * 50, 8)
        health = drive(
            serve,
            "reference: GET /healthz, the same client",
            [(i, _request("GET", "/healthz")) for i in range(args.requests)],
            args.concurrency,
        )
        posts = [(ids[i], _request("POST", f"/u/{tokens[i]}", ONE_CLICK)) for i in range(len(ids))]
        quiet = drive(
            serve,
            f"one-click POST /u/<token>, {args.concurrency} at a time, no import running",
            posts[: args.requests],
            args.concurrency,
        )
        quiet_check = check_database(root, list_id, quiet.answered)
        print(f"{engine}: importing {args.import_rows:,} rows while unsubscribing...", flush=True)
        done = threading.Event()
        importer = subprocess.Popen(
            import_cmd(root, big, "other"),
            env=child_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

        def wait_import() -> None:
            importer.wait()
            done.set()

        threading.Thread(target=wait_import, daemon=True).start()
        t_import = time.perf_counter()
        try:
            during = drive(
                serve,
                f"one-click POST during `bulletin subscribers import` of {args.import_rows:,} rows",
                posts[args.requests :],
                args.concurrency,
                until=done,
            )
            importer.wait()
        finally:
            if importer.poll() is None:
                os.killpg(importer.pid, signal.SIGTERM)
                importer.wait()
        import_wall = time.perf_counter() - t_import
        during_check = check_database(root, list_id, during.answered)
    finally:
        serve.stop()
    return Results(
        engine,
        len(ids),
        health,
        quiet,
        quiet_check,
        during,
        during_check,
        import_wall,
        importer.returncode,
    )


def report(results: Results, args: argparse.Namespace) -> None:
    print()
    print(
        f"bulletin serve benchmark on {results.engine}: Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, {results.subscribers:,} subscribers"
    )
    print(
        "note: each request on a connection of its own, from an X-Forwarded-For address of its "
        "own; client and server share the machine's cores (CPU seconds of each below)"
    )
    if args.py_spy:
        print("note: profiled with py-spy: the figures are slower than without, CPU is py-spy's")
    print_run(results.health, goals=False)
    print_run(results.quiet, goals=True)
    print_check(results.quiet_check)
    print_run(results.during, goals=False)
    print(
        f"  the import            {results.import_wall:>10,.1f} s (exit {results.import_exit}); "
        f"503s: {results.during.statuses.get(503, 0):,}"
    )
    print_check(results.during_check)


def postgres_available() -> bool:
    return bool(list(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))) or bool(
        shutil.which("pg_ctl")
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--subscribers", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight")
    parser.add_argument("--requests", type=int, default=4_000, help="one-click POSTs, no import")
    parser.add_argument(
        "--import-rows", type=int, default=200_000, help="rows of the concurrent import"
    )
    parser.add_argument(
        "--engine", choices=["sqlite", "postgresql", "both"], default="both", help="databases"
    )
    parser.add_argument("--quick", action="store_true", help="small numbers, for a smoke run")
    parser.add_argument(
        "--py-spy", type=Path, metavar="FILE", help="profile serve with py-spy (raw folded stacks)"
    )
    args = parser.parse_args()
    if args.quick:
        args.subscribers, args.requests, args.import_rows = 2_000, 600, 20_000
    args.requests = min(args.requests, args.subscribers // 2)
    engines = ["sqlite", "postgresql"] if args.engine == "both" else [args.engine]
    notes = []
    if "postgresql" in engines and not postgres_available():
        engines.remove("postgresql")
        notes.append("PostgreSQL not installed (make system-deps): SQLite only")

    CACHE.mkdir(parents=True, exist_ok=True)
    results = []
    with signals_exit():
        for name in engines:
            with tempfile.TemporaryDirectory(dir=CACHE, prefix="serve-") as tmp:
                if name == "sqlite":
                    results.append(measure(args, Path(tmp), None))
                    continue
                sys.path.insert(0, str(REPO / "tests"))
                from pgserver import PgServer

                server = PgServer()
                try:
                    results.append(measure(args, Path(tmp), server.new_url("serve")))
                finally:
                    server.stop()
    for note in notes:
        print(f"note: {note}")
    for result in results:
        report(result, args)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("bench/serve.py: interrupted", file=sys.stderr)
        sys.exit(130)
