"""Scale-out benchmark: 1, 2 and 4 `bulletin send` processes sharing one send on PostgreSQL.

    .venv/bin/python bench/scale.py [--recipients 3000] [--big 200000] [--quick]

Run by ``make bench``. Prints figures; nothing here passes or fails. Everything runs on this
machine: a private PostgreSQL server (tests/pgserver.py: initdb in a temporary folder,
fsync off), the senders as child processes (the first creates the send, the others join
it), and the relay.

* **Relay with a delay.** A remote relay answers each message after a while; a sender's
  throughput is then its connections over that delay, and adding senders should add
  throughput until the machine's CPUs run out. The relay here is an aiosmtpd server in a
  child process that holds each message's final reply ``--delay`` seconds (100 ms) and
  keeps nothing. 1, 2 and 4 senders x 4 connections, no rate limit; the rate is the sink's
  own count over the middle of the send (from 10 % to 90 % of the messages), so start-up
  (check, render, joining) and the tail are left out. Scaling is that rate over N times the
  one-sender rate (goal: >= 0.9 until CPU runs out).
* **No delay.** The same into Postfix's smtp-sink, against ``smtp-source -d`` with 4
  sessions into the same sink (the reference of bench/send.py): where the machine's CPUs
  are the limit.
* **A big send.** ``--big`` recipients (default 200,000), 4 senders x 4 connections into
  smtp-sink; each sender's peak RSS is its own ``ru_maxrss`` (``wait4``, through the small
  launcher of bench/send.py). A sender's memory does not grow with the list (keyset paging,
  claims of about a second of work, a bounded window): figures at two sizes show it.

CPU seconds of every process are printed beside the rates: on a 2-core machine the senders,
the sink and PostgreSQL share the cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import pgserver  # noqa: E402
import send as sendbench  # noqa: E402  (bench/send.py: children, sinks, workspaces)
from pgserver import PgServer  # noqa: E402

SAMPLE = sendbench.SAMPLE
LIST = sendbench.LIST
CONNECTIONS = 4
SENDERS = (1, 2, 4)
GOAL_SCALING = 0.9
GOAL_RSS_MB = 150

# A relay that takes its time: aiosmtpd, each message's final reply held DELAY seconds,
# counting what it accepted ("mesg=N", as smtp-sink -c prints it) and keeping nothing.
_DELAY_SINK = """\
import asyncio, sys, threading, time
sys.path.insert(0, sys.argv[3])
from bulletin.sink import SocketController, listen_socket
delay, port = float(sys.argv[1]), int(sys.argv[2])
count = 0
class Handler:
    async def handle_DATA(self, server, session, envelope):
        global count
        await asyncio.sleep(delay)
        count += 1
        return "250 2.0.0 OK"
controller = SocketController(Handler(), listen_socket("127.0.0.1", port))
controller.start()
print("ready", flush=True)
last = -1
while True:
    time.sleep(0.1)
    if count != last:
        last = count
        print(f"mesg={count}", flush=True)
"""


class DelaySink(sendbench.Sink):
    """The relay with a delay, in a child process, read like smtp-sink."""

    def __init__(self, children: sendbench.Children, delay: float, log: Path) -> None:
        self.port = sendbench.free_port()
        self.log = log
        src = str(Path(__file__).resolve().parent.parent / "src")
        cmd = [sys.executable, "-c", _DELAY_SINK, str(delay), str(self.port), src]
        with open(log, "wb") as out:
            self.proc = children.start(cmd, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while b"ready" not in log.read_bytes():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the delay sink did not start: {log.read_text()[-500:]}")
            time.sleep(0.05)


@dataclass
class Sender:
    """A sender process started through bench/send.py's launcher (its own rusage)."""

    proc: subprocess.Popen[bytes]
    usage: Path
    out: Path

    def finish(self) -> tuple[int, float, float, str]:
        """Exit status, CPU seconds, peak RSS (MB) and output."""
        code = self.proc.wait()
        text = self.out.read_text(encoding="utf-8", errors="replace")
        if not self.usage.exists():
            return code, 0.0, 0.0, text
        _, user, system, maxrss = json.loads(self.usage.read_text())
        return code, user + system, maxrss / 1024, text


def start_sender(children: sendbench.Children, root: Path, tmp: Path, n: int) -> Sender:
    cmd = sendbench.bulletin_cmd(root, "send", SAMPLE, "--list", LIST, "--yes")
    cmd += ["--connections", str(CONNECTIONS), "--rate", "0"]
    usage, out = tmp / f"usage-{n}.json", tmp / f"sender-{n}.log"
    launcher = [sys.executable, "-I", "-S", "-c", sendbench._LAUNCHER, str(usage), *cmd]
    with open(out, "wb") as f:
        proc = children.start(
            launcher,
            stdout=f,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=sendbench.child_env(),
        )
    return Sender(proc, usage, out)


@dataclass
class Run:
    """N senders on one send."""

    label: str
    senders: int
    recipients: int
    rate: float = 0.0
    """Messages/s the sink counted from 10 % to 90 % of the send."""
    wall: float = 0.0
    cpu: list[float] = field(default_factory=list)
    rss: list[float] = field(default_factory=list)
    sink_cpu: float | None = None
    pg_cpu: float | None = None
    problem: str = ""


def workspace(server: PgServer, top: Path, name: str, url: str, csv: Path) -> Path:
    """A workspace on a new PostgreSQL schema, sending to ``url``, the CSV imported."""
    root = sendbench.make_workspace(top / name, url)
    toml = root / "bulletin.toml"
    text = toml.read_text(encoding="utf-8")
    text = text.replace(
        'url = "sqlite:///subscribers/bulletin.db"', f'url = "{server.new_url(name)}"', 1
    )
    toml.write_text(text, encoding="utf-8")
    sendbench.import_subscribers(root, csv)
    return root


def postgres_cpu(server: PgServer) -> float:
    """CPU seconds so far of this benchmark's PostgreSQL: its postmaster, the processes it
    forked that still run (one per session), and those that ended (the postmaster's
    children's times), not other clusters on the machine."""
    try:
        postmaster = int((server.data / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(entry)
        if pid == postmaster:
            # utime, stime, cutime, cstime: its own and its reaped children's.
            total += sum(int(f) for f in fields[11:15]) / tick
        elif int(fields[1]) == postmaster:
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def run_senders(
    children: sendbench.Children,
    sink: sendbench.Sink,
    server: PgServer,
    root: Path,
    tmp: Path,
    run: Run,
) -> Run:
    """Start ``run.senders`` senders at once on the workspace's send; measure the rate."""
    before, sink_cpu, pg_cpu = sink.messages(), sink.cpu(), postgres_cpu(server)
    started = time.monotonic()
    procs = [start_sender(children, root, tmp, i) for i in range(run.senders)]
    low, high = before + run.recipients // 10, before + run.recipients * 9 // 10
    t_low = t_high = None
    while any(p.proc.poll() is None for p in procs):
        got, now = sink.messages(), time.monotonic()
        if t_low is None and got >= low:
            t_low = now
        if t_high is None and got >= high:
            t_high = now
        time.sleep(0.05)
    run.wall = time.monotonic() - started
    for p in procs:
        code, cpu, rss, text = p.finish()
        run.cpu.append(cpu)
        run.rss.append(rss)
        if code != 0 and not run.problem:
            run.problem = f"a sender exited {code}: {sendbench._tail(text)}"
    time.sleep(0.3)
    arrived = sink.messages() - before
    after = sink.cpu()
    if sink_cpu is not None and after is not None:
        run.sink_cpu = after - sink_cpu
    run.pg_cpu = postgres_cpu(server) - pg_cpu
    if arrived < run.recipients and not run.problem:
        run.problem = f"the sink counted {arrived:,} of {run.recipients:,}"
    if t_low is not None and t_high is not None and t_high > t_low:
        run.rate = (high - low) / (t_high - t_low)
    return run


def scaling_rows(runs: list[Run]) -> list[tuple[str, str, str]]:
    rows = []
    one = next((r.rate for r in runs if r.senders == 1 and r.rate), 0.0)
    for r in runs:
        if r.problem:
            rows.append((r.label, "n/a", r.problem.splitlines()[0][:120]))
            continue
        scale = f"{r.rate / (r.senders * one):.2f} x linear" if one else ""
        cpu = " + ".join(f"{c:,.1f}" for c in r.cpu)
        rows.append(
            (
                r.label,
                f"{r.rate:,.0f}/s",
                f"{scale}; CPU s: senders {cpu}, sink {r.sink_cpu or 0:,.1f}, "
                f"PostgreSQL {r.pg_cpu or 0:,.1f}; {r.wall:,.1f} s wall",
            )
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipients", type=int, default=3000, help="per run with a delay")
    parser.add_argument("--fast-recipients", type=int, default=20_000, help="per run, no delay")
    parser.add_argument("--big", type=int, default=200_000, help="recipients of the big send")
    parser.add_argument("--delay", type=float, default=0.1, help="the relay's delay (s)")
    parser.add_argument("--quick", action="store_true", help="small numbers, for a smoke run")
    args = parser.parse_args()
    if args.quick:
        args.recipients, args.fast_recipients, args.big = 400, 2000, 5000

    if pgserver.binaries() is None:
        print("bench/scale.py: PostgreSQL is not installed (make system-deps installs it)")
        return 0
    sink_bin, source_bin = (
        sendbench.postfix_tool("smtp-sink"),
        sendbench.postfix_tool("smtp-source"),
    )
    sendbench.CACHE.mkdir(parents=True, exist_ok=True)
    children = sendbench.Children()
    delayed: list[Run] = []
    fast: list[Run] = []
    big: list[Run] = []
    references: list[float] = []
    size = 0
    with (
        sendbench.signals_exit(),
        tempfile.TemporaryDirectory(dir=sendbench.CACHE, prefix="scale-") as tmp,
        PgServer() as server,
    ):
        top = Path(tmp)
        try:
            slow = DelaySink(children, args.delay, top / "delay-sink.log")
            csv = sendbench.subscribers_csv(args.recipients)
            for n in SENDERS:
                label = f"{n} sender{'s' if n > 1 else ''} x {CONNECTIONS}, relay {args.delay:g} s"
                print(f"{label}: {args.recipients:,} messages...", flush=True)
                root = workspace(server, top, f"d{n}", slow.url, csv)
                run = Run(label, n, args.recipients)
                delayed.append(run_senders(children, slow, server, root, top, run))
            if sink_bin is not None and source_bin is not None:
                sink = sendbench.Sink(children, sink_bin, top / "smtp-sink.log")
                csv = sendbench.subscribers_csv(args.fast_recipients)
                for n in SENDERS:
                    label = f"{n} sender{'s' if n > 1 else ''} x {CONNECTIONS}, no delay"
                    print(f"{label}: {args.fast_recipients:,} messages...", flush=True)
                    root = workspace(server, top, f"f{n}", sink.url, csv)
                    if not size:
                        size = len(_one_message(root))
                    run = Run(label, n, args.fast_recipients)
                    fast.append(run_senders(children, sink, server, root, top, run))
                    source = sendbench.smtp_source(
                        children,
                        sink,
                        source_bin,
                        size,
                        args.fast_recipients,
                        "smtp-source -d",
                        reuse=True,
                    )
                    if source.rate:
                        references.append(source.rate)
                for n_big in sorted({args.big // 4, args.big}):
                    label = f"big send: {n_big:,} recipients, 4 senders x {CONNECTIONS}"
                    print(f"{label}...", flush=True)
                    root = workspace(
                        server, top, f"b{n_big}", sink.url, sendbench.subscribers_csv(n_big)
                    )
                    big.append(run_senders(children, sink, server, root, top, Run(label, 4, n_big)))
        finally:
            children.stop_all()
    report(args, delayed, fast, big, references, size, sink_bin is not None)
    return 0


def _one_message(root: Path) -> bytes:
    """One message of the send as built (for smtp-source's message size)."""
    from bulletin import workspace as wsm
    from bulletin.dispatch.plan import SendOptions, prepare_send
    from bulletin.mail.compose import Recipient
    from bulletin.store import ledger
    from bulletin.store.db import open_store

    ws = wsm.load(root)
    db = open_store(ws.database_url())
    try:
        plan = prepare_send(ws, db, SAMPLE, (LIST,), SendOptions(rate=0))
        composer = plan.composer()
        with db.connect() as conn:
            r = next(ledger.iter_eligible(conn, plan.issue_slug, plan.lists))
        values = composer.values(r.subscriber_id, r.list_id, r.email, r.name, r.attributes)
        return composer.envelope(
            Recipient(r.email, r.name, values), composer.message_id_for(r.email)
        ).data
    finally:
        db.dispose()


def report(
    args: argparse.Namespace,
    delayed: list[Run],
    fast: list[Run],
    big: list[Run],
    references: list[float],
    size: int,
    have_postfix: bool,
) -> None:
    print()
    print(
        f"bulletin scale-out benchmark: issue {SAMPLE}, PostgreSQL, Python "
        f"{platform.python_version()}, {os.cpu_count()} CPUs"
    )
    print(
        "note: rates are the relay's own count from 10 % to 90 % of each send (start-up and "
        "tail left out); the senders, the relay and PostgreSQL share this machine's CPUs"
    )
    sections: list[tuple[str, list[tuple[str, str, str]]]] = [
        (
            f"Relay holding each message {args.delay:g} s, {args.recipients:,} messages per run "
            f"(goal: >= {GOAL_SCALING} x linear until CPU runs out)",
            scaling_rows(delayed),
        )
    ]
    if not have_postfix:
        print("note: smtp-sink/smtp-source not found: no runs without delay (make bench-postfix)")
    if fast:
        rows = scaling_rows(fast)
        if references:
            mean = sum(references) / len(references)
            best = max(r.rate for r in fast)
            rows.append(
                (
                    "ratio: best of these / smtp-source -d",
                    f"{best / mean:.2f}",
                    f"smtp-source -d, {CONNECTIONS} sessions, {size:,}-byte messages: "
                    f"{mean:,.0f}/s (mean of {len(references)} runs, between these)",
                )
            )
        sections.append((f"No delay (smtp-sink), {args.fast_recipients:,} messages per run", rows))
    if big:
        rows = []
        for r in big:
            rss = ", ".join(f"{m:,.0f}" for m in r.rss)
            rows.append(
                (
                    r.label,
                    f"{max(r.rss or [0]):,.0f} MB",
                    f"peak RSS of each sender: {rss} MB (goal <= {GOAL_RSS_MB} MB); "
                    f"{r.rate:,.0f}/s; {r.wall:,.0f} s wall"
                    + (f"; {r.problem}" if r.problem else ""),
                )
            )
        sections.append(("Big sends into smtp-sink", rows))
    every = [row for _, rows in sections for row in rows]
    width = max(len(r[0]) for r in every)
    vwidth = max(len(r[1]) for r in every)
    for title, rows in sections:
        print()
        print(title)
        for name, value, note in rows:
            print(f"  {name:<{width}}  {value:>{vwidth}}  {note}".rstrip())


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("bench/scale.py: interrupted", file=sys.stderr)
        sys.exit(130)
