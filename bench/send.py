"""Send benchmark: `bulletin send` into Postfix's smtp-sink, against smtp-source on the same sink.

    .venv/bin/python bench/send.py [--recipients 10000] [--dry-run-recipients 1000000] [--quick]

Run by ``make bench`` (which installs Debian's ``postfix`` package when smtp-sink is missing,
without configuring or starting the Postfix daemon). Prints figures with the goals of issues
#4 and #13 beside each, and each ratio against the reference measured in the same run;
nothing here passes or fails.

What is measured, in one run, on the sample issue in temporary copies of the repository's
workspace (under bench/.cache/, removed at the end):

* **send**: ``bulletin send ISSUE --list bench --yes --connections 4 --rate 0`` as a user runs
  it (a child process) into ``smtp-sink`` on 127.0.0.1, ledger on (it always is). The rate is
  the CLI's own "This run: N sent in T s": ``SendEngine.run()`` from start to end -- building
  the message template, the first connection, freezing the recipients into the ledger,
  sending, recording every result, the last commit. Not in it: interpreter start-up and
  imports, loading the config, ``bulletin check`` and rendering. The **whole command** as a
  user runs it -- start-up, check and render included -- is the CLI's wall time, and its
  ratio to smtp-source is issue #13's figure (goal >= 0.8). The sink's own message counter
  confirms that every message arrived.
* **smtp-source**, Postfix's C load generator, with the same message size and 4 sessions into
  the same sink: the reference. With ``-d`` each session carries many messages, as bulletin's
  connections do; it runs before and after bulletin's sends and the ratio's reference is the
  mean of the two (the machine's speed drifts). Once more without ``-d``, the issue's literal
  command line, which opens a new session per message.
* **build rate**, on one core in this process: what the engine does per recipient --
  ``Composer.values`` (two signed tokens) and ``Composer.envelope`` (the personalised message
  bytes, Message-ID included) -- over recipients read from the store beforehand.
* **DKIM**: the same send with ``[dkim]`` set (a fresh 2048-bit RSA key, mode 0600, in the
  temporary workspace); and on one core, the signer alone over distinct messages, and the bare
  RSA operation.
* **dry runs**: ``bulletin send --dry-run`` over 300,000 generated subscribers -- the rate it
  prints is issue #13's build figure (goal >= 20,000/s, one process) -- and over 1,000,000
  (a child process each, imported first); the peak RSS is the child's own ``ru_maxrss``
  (``wait4``), taken through a small launcher process (see ``_LAUNCHER``), as for the sends.

The machine's cores are shared: during the sends smtp-sink, smtp-source and bulletin all run
at once, so the CPU seconds each used are printed too.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
CACHE = BENCH / ".cache"
SAMPLE = "2014-10-clusterpolisee-03"
LIST = "bench"
SECRET = "bench-signing-key-not-a-secret-0123456789"
CONNECTIONS = 4

GOAL_RATIO = 0.8
"""Issue #13: the whole `bulletin send` command / smtp-source -d (issue #4 asked 0.5 of the
engine alone)."""
GOAL_BUILD = 20_000
"""Issue #13: messages built per second by `send --dry-run` over 300,000 recipients."""
BUILD_RECIPIENTS = 300_000
GOAL_DKIM_SEND = 2_000
GOAL_RSS_MB = 150

FIRST = ["Ion", "Maria", "Ștefan", "Ioana", "Andrei", "Elena", "Mihai", "Ana", "Radu", "Irina"]
FIRST += ["Tudor", "Bianca", "Vlad", "Alexandra", "Cătălin", "Oana", "Bogdan", "Raluca"]
LAST = ["Popescu", "Ionescu", "Țurcanu", "Stănescu", "Dumitrescu", "Munteanu", "Mureșan"]
LAST += ["Bălan", "Vîlcu", "Georgescu", "Pătrașcu", "Niță", "Lăzărescu", "Constantin"]
CITIES = ["Iași", "Cluj-Napoca", "Timișoara", "București", "Brașov", "Constanța", "Sibiu"]
DOMAINS = ["gmail.com", "yahoo.com", "example.ro", "uaic.ro", "outlook.com", "example.org"]


# --- child processes ------------------------------------------------------------------------


# Runs a command and writes its own rusage as JSON. Measured children are started through it
# because Linux carries the spawning process's peak RSS over into the child's ru_maxrss across
# exec: spawned straight from this process (hundreds of MB after a big import), every child
# would report at least that much. This launcher is ~9 MB, the floor it leaves.
_LAUNCHER = """\
import json, os, sys, time
out, argv = sys.argv[1], sys.argv[2:]
started = time.perf_counter()
pid = os.posix_spawn(argv[0], argv, os.environ)
_, status, usage = os.wait4(pid, 0)
wall = time.perf_counter() - started
with open(out, "w") as f:
    json.dump([wall, usage.ru_utime, usage.ru_stime, usage.ru_maxrss], f)
sys.exit(os.waitstatus_to_exitcode(status))
"""


@dataclass
class Finished:
    """A child process that ran to its end: what it printed and what it cost."""

    returncode: int
    wall: float
    user: float
    """User CPU seconds of the child itself."""
    system: float
    """System CPU seconds of the child itself."""
    maxrss_mb: float
    """The child's own peak resident set size (``wait4``), not its parent's or siblings'."""
    stdout: str
    stderr: str

    @property
    def cpu(self) -> str:
        return f"{self.user + self.system:,.1f} s ({self.user:,.1f} user + {self.system:,.1f} sys)"


@dataclass
class Children:
    """Every process the bench starts, each in its own process group, so that all of them
    (and anything they start) can be stopped at the end, whatever happened."""

    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, cmd: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(cmd, start_new_session=True, **kwargs)
        self.procs.append(proc)
        return proc

    def run(self, cmd: list[str], env: dict[str, str] | None = None) -> Finished:
        """Run ``cmd`` (an absolute path first) to its end, measured by the launcher."""
        with (
            tempfile.TemporaryFile() as out,
            tempfile.TemporaryFile() as err,
            tempfile.TemporaryDirectory() as tmp,
        ):
            usage = Path(tmp) / "usage.json"
            launcher = [sys.executable, "-I", "-S", "-c", _LAUNCHER, str(usage), *cmd]
            proc = self.start(launcher, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env)
            proc.wait()
            self.procs.remove(proc)
            out.seek(0)
            err.seek(0)
            stdout = out.read().decode("utf-8", "replace")
            stderr = err.read().decode("utf-8", "replace")
            if not usage.exists():
                raise RuntimeError(f"{cmd[0]} could not be run: {_tail(stderr)}")
            wall, user, system, maxrss = json.loads(usage.read_text())
        return Finished(
            returncode=proc.returncode,
            wall=wall,
            user=user,
            system=system,
            maxrss_mb=maxrss / 1024,  # KiB on Linux
            stdout=stdout,
            stderr=stderr,
        )

    def stop_all(self) -> None:
        """SIGTERM each process group still running, then SIGKILL what did not exit."""
        for proc in self.procs:
            if proc.poll() is None:
                _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + 5
        for proc in self.procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait()
        self.procs.clear()


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)  # start_new_session: the group id is the child's pid
    except ProcessLookupError:
        pass


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    # SIGTERM/SIGHUP become SystemExit so that the `finally` blocks stop the children.
    raise SystemExit(128 + signum)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def proc_cpu(pid: int) -> float | None:
    """CPU seconds used so far by a running process (Linux /proc), or None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def postfix_tool(name: str) -> str | None:
    """Path of a Postfix test program (in /usr/sbin, often not on a user's PATH)."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin")
    return found


class Sink:
    """Postfix's smtp-sink on 127.0.0.1: accepts every message and throws it away."""

    def __init__(self, children: Children, binary: str, log: Path) -> None:
        self.port = free_port()
        self.log = log
        cmd = [binary, "-c"]
        if os.geteuid() == 0:
            cmd += ["-u", "nobody"]  # smtp-sink refuses to run as root without -u
        # -c: running counters on stdout (how we check what arrived); 1024: listen backlog.
        cmd += [f"127.0.0.1:{self.port}", "1024"]
        with open(log, "wb") as out:
            self.proc = children.start(cmd, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"smtp-sink did not start: {log.read_text(errors='replace')[-500:]}"
                    ) from None
                time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def messages(self) -> int:
        """Messages received so far (the last of smtp-sink's ``mesg=N`` counters)."""
        found = re.findall(rb"mesg=(\d+)", self.log.read_bytes()[-400:])
        return int(found[-1]) if found else 0

    def cpu(self) -> float | None:
        return proc_cpu(self.proc.pid)


# --- workspaces and subscribers ---------------------------------------------------------------


def make_workspace(root: Path, smtp_url: str, dkim_key: bytes | None = None) -> Path:
    """A copy of the repository's workspace sending to ``smtp_url`` (and signing with DKIM)."""
    root.mkdir(parents=True)
    shutil.copytree(REPO / "templates", root / "templates")
    shutil.copytree(REPO / "issues", root / "issues")
    (root / "subscribers").mkdir()
    text = (REPO / "bulletin.toml").read_text(encoding="utf-8")
    text, n = re.subn(r'(?m)^url = "smtp://[^"]*"$', f'url = "{smtp_url}"', text)
    if n != 1:
        raise RuntimeError("bulletin.toml: expected one smtp url line to replace")
    if dkim_key is not None:
        secrets = root / ".bulletin"
        secrets.mkdir(mode=0o700)
        fd = os.open(secrets / "dkim.pem", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(dkim_key)
        text += '\n[dkim]\nselector = "bench"\nkey_file = ".bulletin/dkim.pem"\n'
    (root / "bulletin.toml").write_text(text, encoding="utf-8")
    return root


def generate_csv(path: Path, rows: int, seed: int = 4) -> None:
    """Subscribers with distinct ASCII addresses, Romanian names and a city (streamed)."""
    rnd = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part")
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        f.write("email,name,city\r\n")
        for i in range(rows):
            f.write(
                f"abonat.{i}@{DOMAINS[i % len(DOMAINS)]},{rnd.choice(FIRST)} "
                f"{rnd.choice(LAST)},{rnd.choice(CITIES)}\r\n"
            )
    tmp.replace(path)


def subscribers_csv(rows: int) -> Path:
    path = CACHE / f"send-{rows}.csv"
    if not path.exists():
        generate_csv(path, rows)
    return path


def import_subscribers(root: Path, csv_path: Path) -> tuple[int, float]:
    """Import the CSV into list ``bench`` of the workspace at ``root``: (added, seconds)."""
    from bulletin import workspace
    from bulletin.store.db import open_store
    from bulletin.store.importer import import_file

    ws = workspace.load(root)
    engine = open_store(ws.database_url())
    try:
        t = time.perf_counter()
        report = import_file(engine, csv_path, LIST, create_list_if_missing=True)
        return report.added, time.perf_counter() - t
    finally:
        engine.dispose()


def bulletin_cmd(root: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "bulletin", "-w", str(root), *args]


def child_env() -> dict[str, str]:
    # COLUMNS: rich would wrap the summary lines we read at 80 columns.
    return {**os.environ, "BULLETIN_SECRET_KEY": SECRET, "COLUMNS": "200"}


# --- in-process rates on one core -------------------------------------------------------------


def rate(fn: Callable[[int], object], seconds: float, minimum: int = 200) -> float:
    """Calls of ``fn(i)`` per second over about ``seconds`` (and at least ``minimum`` calls)."""
    n = 0
    start = time.perf_counter()
    while True:
        for _ in range(100):
            fn(n)
            n += 1
        now = time.perf_counter()
        if now - start >= seconds and n >= minimum:
            return n / (now - start)


@dataclass
class BuildRates:
    message_bytes: int
    build: float
    values: float
    envelope: float
    build_dkim: float
    sign: float
    rsa: float
    dkim_header_bytes: int


def build_rates(
    plain: Path, dkim: Path, key: rsa.RSAPrivateKey, seconds: float, people: int
) -> BuildRates:
    """Per-recipient work of the engine, timed on one thread."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding
    from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

    from bulletin import workspace
    from bulletin.dispatch.composer import Composer
    from bulletin.dispatch.plan import SendOptions, prepare_send
    from bulletin.mail.compose import Recipient
    from bulletin.mail.dkim import load_dkim_signer
    from bulletin.store import ledger
    from bulletin.store.db import open_store

    def composer_of(root: Path) -> tuple[Composer, list[ledger.EligibleRecipient]]:
        ws = workspace.load(root)
        db = open_store(ws.database_url())
        try:
            plan = prepare_send(ws, db, SAMPLE, (LIST,), SendOptions(rate=0))
            with db.connect() as conn:
                found = []
                for r in ledger.iter_eligible(conn, plan.issue_slug, plan.lists):
                    found.append(r)
                    if len(found) >= people:
                        break
            return plan.composer(), found
        finally:
            db.dispose()

    composer, found = composer_of(plain)
    count = len(found)

    def values(i: int) -> dict[str, str]:
        r = found[i % count]
        return composer.values(r.subscriber_id, r.list_id, r.email, r.name, r.attributes)

    def build_with(c: Composer) -> Callable[[int], bytes]:
        # What the engine does per recipient: values in the coordinator (with the
        # Message-ID from the ledger), the envelope in a worker.
        def build(i: int) -> bytes:
            r = found[i % count]
            v = c.values(r.subscriber_id, r.list_id, r.email, r.name, r.attributes)
            recipient = Recipient(r.email, r.name, v)
            return c.envelope(recipient, c.message_id_for(r.email)).data

        return build

    build = build_with(composer)
    ready = [Recipient(r.email, r.name, values(i)) for i, r in enumerate(found[: min(count, 2000)])]

    def envelope(i: int) -> object:
        rec = ready[i % len(ready)]
        return composer.envelope(rec, composer.message_id_for(rec.email))

    message = build(0)
    build_rate = rate(build, seconds)
    values_rate = rate(values, seconds / 2)
    envelope_rate = rate(envelope, seconds / 2)

    dkim_composer, _ = composer_of(dkim)
    build_dkim = rate(build_with(dkim_composer), seconds)

    ws = workspace.load(dkim)
    signer = load_dkim_signer(ws)
    assert signer is not None
    # Distinct messages, as in a send: the body hasher sees each recipient's own values.
    unsigned = [build(i) for i in range(min(count, 300))]
    sign_rate = rate(lambda i: signer(unsigned[i % len(unsigned)]), seconds)
    header = len(signer.signature_header(unsigned[0]))
    # The bare RSA operation with the same key, to show how much of signing it is.
    digest = os.urandom(32)
    pkcs1, prehashed = padding.PKCS1v15(), Prehashed(hashes.SHA256())
    rsa_rate = rate(lambda i: key.sign(digest, pkcs1, prehashed), seconds / 2)
    return BuildRates(
        message_bytes=len(message),
        build=build_rate,
        values=values_rate,
        envelope=envelope_rate,
        build_dkim=build_dkim,
        sign=sign_rate,
        rsa=rsa_rate,
        dkim_header_bytes=header,
    )


def dkim_key() -> tuple[rsa.RSAPrivateKey, bytes]:
    """A fresh 2048-bit RSA key and its PEM (PKCS#8, no passphrase)."""
    from cryptography.hazmat.primitives import serialization

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return key, pem


# --- the runs -------------------------------------------------------------------------------


@dataclass
class SendRun:
    """One `bulletin send` (or smtp-source) into the sink."""

    label: str
    finished: Finished | None = None
    sent: int = 0
    seconds: float = 0.0
    """Send-phase seconds (the engine's, as the CLI prints them; wall time for smtp-source)."""
    arrived: int = 0
    sink_cpu: float | None = None
    problem: str = ""

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0


_THIS_RUN = re.compile(r"This run: ([\d,]+) sent in ([\d,.]+) s")
_DRY = re.compile(r"Dry run: built ([\d,]+) messages \(([\d,.]+) MB, ([\d,]+)/s\)")


def _tail(text: str, lines: int = 8) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def measured(sink: Sink, run: SendRun, go: Callable[[], Finished]) -> SendRun:
    """Run ``go`` and note what the sink received and the CPU it used meanwhile."""
    before, cpu = sink.messages(), sink.cpu()
    run.finished = go()
    time.sleep(0.2)  # the sink prints its counter after the last "." it read
    run.arrived = sink.messages() - before
    after = sink.cpu()
    if cpu is not None and after is not None:
        run.sink_cpu = after - cpu
    return run


def bulletin_send(children: Children, sink: Sink, root: Path, label: str) -> SendRun:
    cmd = bulletin_cmd(root, "send", SAMPLE, "--list", LIST, "--yes")
    cmd += ["--connections", str(CONNECTIONS), "--rate", "0"]
    run = measured(sink, SendRun(label), lambda: children.run(cmd, env=child_env()))
    done = run.finished
    assert done is not None
    found = _THIS_RUN.search(done.stdout)
    if done.returncode != 0 or found is None:
        run.problem = f"exit {done.returncode}: {_tail(done.stdout + done.stderr)}"
        return run
    run.sent = int(found[1].replace(",", ""))
    run.seconds = float(found[2].replace(",", ""))
    return run


def smtp_source(
    children: Children,
    sink: Sink,
    binary: str,
    size: int,
    count: int,
    label: str,
    *,
    reuse: bool,
) -> SendRun:
    """Postfix's load generator; ``reuse``: ``-d``, many messages per session."""
    cmd = [binary] + (["-d"] if reuse else [])
    cmd += ["-l", str(size), "-m", str(count), "-s", str(CONNECTIONS)]
    cmd += ["-f", "from@example.org", "-t", "to@example.org", f"127.0.0.1:{sink.port}"]
    run = measured(sink, SendRun(label), lambda: children.run(cmd))
    done = run.finished
    assert done is not None
    if done.returncode != 0:
        run.problem = f"exit {done.returncode}: {_tail(done.stdout + done.stderr)}"
        return run
    run.sent = run.arrived
    run.seconds = done.wall
    return run


@dataclass
class DryRun:
    recipients: int
    imported: int = 0
    import_seconds: float = 0.0
    finished: Finished | None = None
    messages: int = 0
    megabytes: float = 0.0
    per_second: float = 0.0
    problem: str = ""


def dry_run(children: Children, root: Path, recipients: int) -> DryRun:
    result = DryRun(recipients)
    csv_path = subscribers_csv(recipients)
    result.imported, result.import_seconds = import_subscribers(root, csv_path)
    done = children.run(
        bulletin_cmd(root, "send", SAMPLE, "--list", LIST, "--dry-run"), child_env()
    )
    result.finished = done
    found = _DRY.search(done.stdout)
    if done.returncode != 0 or found is None:
        result.problem = f"exit {done.returncode}: {_tail(done.stdout + done.stderr)}"
        return result
    result.messages = int(found[1].replace(",", ""))
    result.megabytes = float(found[2].replace(",", ""))
    result.per_second = float(found[3].replace(",", ""))
    return result


# --- report ---------------------------------------------------------------------------------


def _secs(seconds: float | None) -> str:
    return "?" if seconds is None else f"{seconds:,.1f} s"


Row = tuple[str, str, str]


def _smtp_rows(runs: dict[str, SendRun]) -> list[Row]:
    rows: list[Row] = []
    for key in ("source1", "plain", "dkim", "source2", "literal"):
        run = runs.get(key)
        if run is None:
            continue
        done = run.finished
        if run.problem or done is None:
            rows.append((f"{run.label}: messages/s", "n/a", run.problem.splitlines()[0][:120]))
            continue
        goal = f"goal >= {GOAL_DKIM_SEND:,}/s; " if key == "dkim" else ""
        rows.append(
            (
                f"{run.label}: messages/s",
                f"{run.rate:,.0f}/s",
                f"{goal}{run.sent:,} in {run.seconds:,.2f} s; the sink counted {run.arrived:,}",
            )
        )
        if key in ("plain", "dkim"):
            rows.append(
                (
                    "  whole CLI run (start-up, check, render included)",
                    f"{done.wall:,.2f} s",
                    f"peak RSS {done.maxrss_mb:,.0f} MB",
                )
            )
        rows.append(
            ("  CPU used by it / by smtp-sink meanwhile", "", f"{done.cpu} / {_secs(run.sink_cpu)}")
        )
    ref = [runs[k].rate for k in ("source1", "source2") if k in runs and runs[k].rate]
    plain, literal = runs.get("plain"), runs.get("literal")
    if ref and plain is not None and plain.rate and plain.finished is not None:
        mean = sum(ref) / len(ref)
        whole = plain.sent / plain.finished.wall
        rows.append(
            (
                "ratio: whole bulletin send command / smtp-source -d",
                f"{whole / mean:.2f}",
                f"goal >= {GOAL_RATIO} ({whole:,.0f}/s over the CLI's wall time; reference: "
                f"mean of the {len(ref)} smtp-source -d runs, {mean:,.0f}/s)",
            )
        )
        rows.append(
            (
                "ratio: the send engine alone / smtp-source -d",
                f"{plain.rate / mean:.2f}",
                "SendEngine.run() as the CLI reports it (issue #4 asked >= 0.5)",
            )
        )
    if literal is not None and literal.rate and plain is not None and plain.rate:
        rows.append(
            (
                "ratio: bulletin send / smtp-source without -d",
                f"{plain.rate / literal.rate:.2f}",
                "the issue's literal command line: a new session per message",
            )
        )
    return rows


def _build_rows(rates: BuildRates) -> list[Row]:
    return [
        (
            "build rate: values + envelope per recipient",
            f"{rates.build:,.0f}/s",
            f"{rates.build / GOAL_BUILD:.2f} of the {GOAL_BUILD:,}/s goal (in-process)",
        ),
        ("  Composer.values alone (two signed tokens)", f"{rates.values:,.0f}/s", ""),
        ("  Composer.envelope alone (message bytes)", f"{rates.envelope:,.0f}/s", ""),
        ("build rate with DKIM signing", f"{rates.build_dkim:,.0f}/s", ""),
        ("DKIM signing alone (DkimSigner)", f"{rates.sign:,.0f}/s", "distinct messages"),
        ("  RSA-2048 signature alone (OpenSSL)", f"{rates.rsa:,.0f}/s", ""),
    ]


def _build_dry_rows(dry: DryRun) -> list[Row]:
    """The 300,000-recipient dry run: issue #13's build figure."""
    done = dry.finished
    if dry.problem or done is None:
        return [(f"dry run of {dry.recipients:,}", "n/a", dry.problem.splitlines()[0][:120])]
    return [
        (
            f"dry run of {dry.messages:,}: messages built/s, as it prints",
            f"{dry.per_second:,.0f}/s",
            f"goal >= {GOAL_BUILD:,}/s ({dry.per_second / GOAL_BUILD:.2f} of it; one process)",
        ),
        (
            "  messages/s over the whole CLI run",
            f"{dry.messages / done.wall:,.0f}/s",
            f"{done.wall:,.1f} s wall, CPU {done.cpu}, peak RSS {done.maxrss_mb:,.0f} MB",
        ),
    ]


def _dry_rows(dry: DryRun) -> list[Row]:
    done = dry.finished
    if dry.problem or done is None:
        return [(f"dry run of {dry.recipients:,}", "n/a", dry.problem.splitlines()[0][:120])]
    return [
        (
            f"dry run of {dry.messages:,} recipients: peak RSS",
            f"{done.maxrss_mb:,.0f} MB",
            f"goal <= {GOAL_RSS_MB} MB (ru_maxrss of the bulletin process)",
        ),
        (
            "  messages/s, as the dry run reports it",
            f"{dry.per_second:,.0f}/s",
            f"{dry.megabytes:,.0f} MB of messages built",
        ),
        (
            "  messages/s over the whole CLI run",
            f"{dry.messages / done.wall:,.0f}/s",
            f"{done.wall:,.1f} s wall, CPU {done.cpu}",
        ),
        (
            f"  import of the {dry.recipients:,} subscribers first",
            f"{dry.import_seconds:,.1f} s",
            f"{dry.imported:,} added (setup, not in the figures above)",
        ),
    ]


def report(
    args: argparse.Namespace,
    rates: BuildRates,
    runs: dict[str, SendRun],
    build_dry: DryRun | None,
    dry: DryRun | None,
    notes: list[str],
) -> None:
    cores = os.cpu_count()
    sections: list[tuple[str, list[Row]]] = []
    if runs:
        sections.append(
            (
                f"Sends into smtp-sink on 127.0.0.1: {args.recipients:,} messages, "
                f"{CONNECTIONS} connections/sessions, no rate limit, ledger on",
                _smtp_rows(runs),
            )
        )
    if build_dry is not None:
        sections.append(
            ("Build rate (bulletin send --dry-run, a child process)", _build_dry_rows(build_dry))
        )
    sections.append(("On one core, in the bench process", _build_rows(rates)))
    if dry is not None:
        sections.append(("Dry run (bulletin send --dry-run, a child process)", _dry_rows(dry)))
    every = [r for _, rows in sections for r in rows]
    width = max(len(r[0]) for r in every)
    vwidth = max(len(r[1]) for r in every)

    print()
    print(
        f"bulletin send benchmark: issue {SAMPLE}, Python {platform.python_version()}, {cores} CPUs"
    )
    print(
        f"message: {rates.message_bytes:,} bytes as built (smtp-source -l {rates.message_bytes:,}"
        f"); DKIM adds a {rates.dkim_header_bytes}-byte header"
    )
    print(
        f"note: smtp-sink, smtp-source and bulletin share this machine's {cores} cores; the "
        "CPU seconds of each are shown beside the sends"
    )
    print(
        "note: a send's rate is SendEngine.run() as the CLI reports it (\"This run: N sent in T "
        's"): message template, first connection, ledger freeze, sending, recording. '
        "Start-up, config, check and render are not in it (see the whole CLI run)."
    )
    for note in notes:
        print(f"note: {note}")
    for title, rows in sections:
        print()
        print(title)
        for name, value, note in rows:
            print(f"  {name:<{width}}  {value:>{vwidth}}  {note}".rstrip())


def sends(
    children: Children,
    sink: Sink,
    source_bin: str,
    plain: Path,
    dkim: Path,
    size: int,
    args: argparse.Namespace,
) -> dict[str, SendRun]:
    """The sends into the sink, in order; smtp-source -d runs before and after bulletin's
    because the machine's speed drifts and the reference should see the same conditions."""
    n = args.recipients
    steps: list[tuple[str, str, Callable[[str], SendRun]]] = [
        (
            "source1",
            "smtp-source -d (before bulletin)",
            lambda label: smtp_source(children, sink, source_bin, size, n, label, reuse=True),
        ),
        ("plain", "bulletin send", lambda label: bulletin_send(children, sink, plain, label)),
        (
            "dkim",
            "bulletin send with DKIM",
            lambda label: bulletin_send(children, sink, dkim, label),
        ),
        (
            "source2",
            "smtp-source -d (after bulletin)",
            lambda label: smtp_source(children, sink, source_bin, size, n, label, reuse=True),
        ),
        (
            "literal",
            "smtp-source, a session per message",
            lambda label: smtp_source(children, sink, source_bin, size, n, label, reuse=False),
        ),
    ]
    runs: dict[str, SendRun] = {}
    for key, label, step in steps:
        print(f"{label}: {n:,} messages of {size:,} bytes...", flush=True)
        runs[key] = step(label)
    return runs


@contextmanager
def signals_exit() -> Iterator[None]:
    previous = {s: signal.signal(s, _exit_on_signal) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipients", type=int, default=10_000, help="recipients of each send")
    parser.add_argument(
        "--build-recipients",
        type=int,
        default=BUILD_RECIPIENTS,
        help="list size of the dry run whose rate is the build figure",
    )
    parser.add_argument(
        "--dry-run-recipients", type=int, default=1_000_000, help="list size of the dry run"
    )
    parser.add_argument("--seconds", type=float, default=2.0, help="per one-core rate")
    parser.add_argument("--quick", action="store_true", help="small numbers, for a smoke run")
    parser.add_argument("--no-dry-run", action="store_true", help="skip the dry run")
    args = parser.parse_args()
    if args.quick:
        args.recipients = min(args.recipients, 500)
        args.dry_run_recipients = min(args.dry_run_recipients, 2_000)
        args.build_recipients = min(args.build_recipients, 1_000)
        args.seconds = min(args.seconds, 0.3)

    sink_bin, source_bin = postfix_tool("smtp-sink"), postfix_tool("smtp-source")
    notes: list[str] = []
    if sink_bin is None or source_bin is None:
        notes.append(
            "smtp-sink/smtp-source not found, so no sends were measured: `make bench` "
            "installs Debian's postfix package (or: apt-get install postfix)"
        )
    CACHE.mkdir(parents=True, exist_ok=True)
    children = Children()
    runs: dict[str, SendRun] = {}
    build_dry: DryRun | None = None
    dry: DryRun | None = None
    with signals_exit(), tempfile.TemporaryDirectory(dir=CACHE, prefix="send-") as tmp:
        top = Path(tmp)
        try:
            sink = None
            if sink_bin is not None and source_bin is not None:
                sink = Sink(children, sink_bin, top / "smtp-sink.log")
            url = sink.url if sink is not None else "smtp://127.0.0.1:9"
            t = time.perf_counter()
            plain = make_workspace(top / "plain", url)
            key, pem = dkim_key()
            dkim = make_workspace(top / "dkim", url, dkim_key=pem)
            csv_path = subscribers_csv(args.recipients)
            added = [import_subscribers(root, csv_path)[0] for root in (plain, dkim)]
            print(
                f"setup: 2 workspaces with {added[0]:,} subscribers each in "
                f"{time.perf_counter() - t:.1f} s",
                flush=True,
            )
            print("measuring build and signing rates on one core...", flush=True)
            rates = build_rates(plain, dkim, key, args.seconds, args.recipients)
            if sink is not None and source_bin is not None:
                runs = sends(children, sink, source_bin, plain, dkim, rates.message_bytes, args)
            children.stop_all()  # the sink is not needed any more
            if not args.no_dry_run:
                n = args.build_recipients
                print(f"dry run: importing {n:,} subscribers, then building...", flush=True)
                build_dry = dry_run(children, make_workspace(top / "build", url), n)
                n = args.dry_run_recipients
                print(f"dry run: importing {n:,} subscribers, then building...", flush=True)
                dry = dry_run(children, make_workspace(top / "big", url), n)
        finally:
            children.stop_all()
    report(args, rates, runs, build_dry, dry, notes)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # the children are stopped by then (finally blocks)
        print("bench/send.py: interrupted", file=sys.stderr)
        sys.exit(130)
