"""The capture sink: the library (start_sink, run_sink, list_captured) and `bulletin sink`.

Messages are sent with plain smtplib or bulletin's SMTP transport to a real sink on a free
port; `bulletin sink` runs as a real subprocess and is stopped with real signals.
"""

from __future__ import annotations

import email
import email.policy
import gc
import os
import queue
import signal
import smtplib
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bulletin.dispatch.smtp import SmtpTransport
from bulletin.dispatch.transport import Envelope
from bulletin.errors import BulletinError
from bulletin.sink import (
    SinkActivity,
    SinkHandle,
    list_captured,
    read_captured,
    run_sink,
    start_sink,
)
from bulletin.workspace import SmtpConfig

SENDER = "newsletter@clusterpolisee.example.org"
SUBJECT = "Buletin nr. 3: știri, școli și învățământ"


def message(to: str, subject: str = SUBJECT) -> bytes:
    """A message as the composer makes them: CRLF, RFC 2047 subject, raw UTF-8 allowed."""
    msg = email.message.EmailMessage(policy=email.policy.SMTP)
    msg["From"] = f"ClusterPoliSEE <{SENDER}>"
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = "Wed, 01 Oct 2014 09:30:00 +0000"
    msg["Message-ID"] = "<nr3.abc@clusterpolisee.example.org>"
    msg.set_content(".Țară\nrând cu punct\n.\n", cte="8bit")
    return msg.as_bytes()


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[SinkHandle]:
    with start_sink(tmp_path / "mail" / "sink", port=0) as handle:
        yield handle


def test_sink_stores_each_recipient_with_envelope_headers(sink: SinkHandle) -> None:
    data = message("ana@example.ro, ștefan@exemplu.ro")
    with smtplib.SMTP(sink.host, sink.port, timeout=5) as client:
        client.sendmail(
            SENDER, ["ana@example.ro", "ștefan@exemplu.ro"], data, mail_options=["SMTPUTF8"]
        )
    assert sink.count == 2
    assert sink.last == ("ștefan@exemplu.ro", SUBJECT)
    captured = list_captured(sink.maildir)
    assert sorted(c.delivered_to for c in captured) == ["ana@example.ro", "ștefan@exemplu.ro"]
    for c in captured:
        assert c.subject == SUBJECT
        assert c.envelope_from == SENDER
        assert c.from_ == f"ClusterPoliSEE <{SENDER}>"
        assert c.message_id == "<nr3.abc@clusterpolisee.example.org>"
        assert c.date is not None and c.date.year == 2014
        raw = read_captured(sink.maildir, c.key)
        assert c.size == len(raw)
        head = f"X-Bulletin-Envelope-From: <{SENDER}>\r\nDelivered-To: {c.delivered_to}\r\n"
        # The message itself is stored exactly as it arrived.
        assert raw == head.encode() + data
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        assert parsed.get_content().startswith(".Țară")


def test_list_captured_is_newest_first(sink: SinkHandle) -> None:
    with smtplib.SMTP(sink.host, sink.port, timeout=5) as client:
        for n in range(3):
            client.sendmail(SENDER, [f"r{n}@example.ro"], message(f"r{n}@example.ro", f"nr. {n}"))
            time.sleep(0.01)
    assert [c.subject for c in list_captured(sink.maildir)] == ["nr. 2", "nr. 1", "nr. 0"]


def test_list_captured_of_a_missing_folder_is_empty(tmp_path: Path) -> None:
    assert list_captured(tmp_path / "nothing") == []


def test_sink_refuses_oversized_messages_up_front(sink: SinkHandle) -> None:
    with smtplib.SMTP(sink.host, sink.port, timeout=5) as client:
        client.ehlo()
        assert client.has_extn("smtputf8") and client.has_extn("8bitmime")
        code, _ = client.mail(SENDER, [f"SIZE={60 * 1024 * 1024}"])
    assert code == 552
    assert sink.count == 0


def test_bulletin_transport_sends_to_the_sink(sink: SinkHandle) -> None:
    transport = SmtpTransport(SmtpConfig(url=sink.url, timeout=2), password=None)
    connection = transport.connect()
    try:
        deliveries = [
            connection.send(
                Envelope(SENDER, f"r{n}@example.ro", message(f"r{n}@example.ro"), f"<{n}@x>")
            )
            for n in range(3)
        ]
    finally:
        connection.close()
    assert [d.outcome for d in deliveries] == ["sent"] * 3
    assert sink.count == 3
    assert {c.delivered_to for c in list_captured(sink.maildir)} == {
        f"r{n}@example.ro" for n in range(3)
    }


def test_an_existing_empty_folder_becomes_the_maildir(tmp_path: Path) -> None:
    # A user who made the folder first (mkdir captured; bulletin sink --maildir captured).
    folder = tmp_path / "captured"
    folder.mkdir()
    with start_sink(folder, port=0) as handle:
        with smtplib.SMTP(handle.host, handle.port, timeout=5) as client:
            refused = client.sendmail(SENDER, ["ana@example.ro"], message("ana@example.ro"))
        assert refused == {}
        assert handle.count == 1
    (captured,) = list_captured(folder)
    assert captured.delivered_to == "ana@example.ro" and captured.subject == SUBJECT
    assert sorted(p.name for p in folder.iterdir()) == ["cur", "new", "tmp"]


def test_a_maildir_missing_a_subfolder_gets_it(tmp_path: Path) -> None:
    folder = tmp_path / "box"
    (folder / "cur").mkdir(parents=True)
    (folder / "new").mkdir()
    with start_sink(folder, port=0) as handle:
        with smtplib.SMTP(handle.host, handle.port, timeout=5) as client:
            client.sendmail(SENDER, ["ana@example.ro"], message("ana@example.ro"))
    assert [c.delivered_to for c in list_captured(folder)] == ["ana@example.ro"]


def test_a_folder_holding_other_files_is_refused_at_the_start(tmp_path: Path) -> None:
    folder = tmp_path / "Documents"
    folder.mkdir()
    (folder / "notes.txt").write_text("x", encoding="utf-8")
    (folder / "photos").mkdir()
    with pytest.raises(BulletinError) as info:
        start_sink(folder, port=0)
    assert info.value.message == (
        f"{folder} is not a Maildir: it holds other files (notes.txt, photos) and no "
        "cur, new or tmp folder."
    )
    assert "--maildir" in (info.value.hint or "")
    # Nothing was written into it.
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt", "photos"]
    a_file = tmp_path / "file"
    a_file.write_text("x", encoding="utf-8")
    with pytest.raises(BulletinError, match="is a file, not a folder"):
        start_sink(a_file, port=0)


def test_port_in_use_is_a_clear_error_at_once(sink: SinkHandle, tmp_path: Path) -> None:
    start = time.monotonic()
    with pytest.raises(BulletinError) as info:
        start_sink(tmp_path / "other", port=sink.port)
    assert time.monotonic() - start < 1
    assert str(info.value).startswith(f"Port {sink.port} on 127.0.0.1 is already in use.")
    assert "--port" in (info.value.hint or "")


def test_stop_drops_open_sessions_and_frees_the_port(tmp_path: Path) -> None:
    handle = start_sink(tmp_path / "sink", port=0)
    client = smtplib.SMTP(handle.host, handle.port, timeout=5)
    try:
        assert client.noop()[0] == 250
        handle.stop()
        with pytest.raises(smtplib.SMTPServerDisconnected):
            client.noop()
    finally:
        client.close()
    handle.stop()  # twice is fine
    with pytest.raises(ConnectionRefusedError):
        smtplib.SMTP(handle.host, handle.port, timeout=5)
    # Nothing was left open for the garbage collector to warn about (warnings are errors).
    gc.collect()
    # The same port can be taken again at once.
    with start_sink(tmp_path / "sink", port=handle.port) as again:
        assert again.port == handle.port


def test_sessions_at_once_each_store_every_message(sink: SinkHandle) -> None:
    # A send's connections deliver side by side; every message gets its own file.
    def client(n: int) -> None:
        with smtplib.SMTP(sink.host, sink.port, timeout=10) as smtp:
            for i in range(25):
                rcpt = f"w{n}-{i}@example.ro"
                smtp.sendmail(SENDER, [rcpt], message(rcpt))

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sink.count == 200
    assert len({c.delivered_to for c in list_captured(sink.maildir)}) == 200


def test_run_sink_reports_what_arrives_and_stops_on_sigterm(tmp_path: Path) -> None:
    handle = start_sink(tmp_path / "box", port=0)
    reports: list[SinkActivity] = []
    first = threading.Event()

    def on_activity(activity: SinkActivity) -> None:
        reports.append(activity)
        first.set()

    def traffic() -> None:
        with smtplib.SMTP(handle.host, handle.port, timeout=5) as client:
            client.sendmail(SENDER, ["ana@example.ro"], message("ana@example.ro"))
            assert first.wait(5)
            rcpts = ["ion@example.ro", "dan@example.ro", "eva@example.ro"]
            client.sendmail(SENDER, rcpts, message(", ".join(rcpts)))
        deadline = time.monotonic() + 5
        while sum(r.new for r in reports) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)
    sender = threading.Thread(target=traffic)
    sender.start()
    try:
        count = run_sink(handle, on_activity, interval=0.05)
    finally:
        sender.join(10)
    assert count == 4
    assert reports[0] == SinkActivity(1, 1, ("ana@example.ro", SUBJECT))
    assert sum(r.new for r in reports) == 4 and reports[-1].count == 4
    assert reports[-1].last is not None and reports[-1].last[1] == SUBJECT
    # The handler is put back and the sink is stopped.
    assert signal.getsignal(signal.SIGTERM) is before
    with pytest.raises(ConnectionRefusedError):
        smtplib.SMTP(handle.host, handle.port, timeout=5)


# -- `bulletin sink` as a process ----------------------------------------------------------


class Process:
    """A `bulletin` subprocess whose output lines can be awaited."""

    def __init__(self, args: list[str], cwd: Path) -> None:
        env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bulletin", *args],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            env=env,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        assert self.proc.stdout is not None
        self._reader = threading.Thread(target=self._read, args=(self.proc.stdout,))
        self._reader.start()
        self.seen: list[str] = []

    def _read(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            self.lines.put(line.rstrip("\n"))

    def expect(self, fragment: str, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                exited = self.proc.poll()
                why = f" (exited with {exited})" if exited is not None else ""
                raise AssertionError(f"no line with {fragment!r}{why}; got {self.seen}") from None
            self.seen.append(line)
            if fragment in line:
                return line

    def finish(self, timeout: float = 10.0) -> tuple[int, str]:
        """Wait for the exit; return the exit code and the whole of stderr."""
        proc = self.proc
        assert proc.stdout is not None and proc.stderr is not None
        try:
            proc.wait(timeout)
        finally:
            if proc.poll() is None:  # pragma: no cover - hung
                proc.kill()
                proc.wait()
            # stdout belongs to the reader thread until it sees the end of it.
            self._reader.join()
            err = proc.stderr.read()
            proc.stdout.close()
            proc.stderr.close()
        return proc.returncode, err


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_bulletin_sink_captures_and_stops_with_a_summary(workspace_dir: Path, signum: int) -> None:
    port = _free_port()
    proc = Process(["sink", "--port", str(port)], cwd=workspace_dir)
    try:
        first = proc.expect("Capturing mail at")
        maildir = workspace_dir / "mail" / "sink"
        assert first == (
            f"Capturing mail at smtp://127.0.0.1:{port} into {maildir} (Ctrl-C to stop)"
        )
        # bulletin.toml sends to port 2525, not this one: the sink says so.
        proc.expect(f'set smtp.url = "smtp://127.0.0.1:{port}"')
        with smtplib.SMTP("127.0.0.1", port, timeout=5) as client:
            client.sendmail(SENDER, ["ana@example.ro"], message("ana@example.ro"))
        line = proc.expect("ana@example.ro")
        assert line.split() == ["1", "ana@example.ro", *SUBJECT.split()]
        proc.proc.send_signal(signum)
        code, err = proc.finish()
    finally:
        if proc.proc.poll() is None:  # pragma: no cover - failed before stopping
            proc.proc.kill()
            proc.finish()
    assert code == 0, err
    assert proc.expect("Stopped.") == f"Stopped. Captured 1 message in {maildir}."
    assert "Traceback" not in err
    (captured,) = list_captured(maildir)
    assert captured.delivered_to == "ana@example.ro" and captured.subject == SUBJECT


def test_bulletin_sink_port_in_use(sink: SinkHandle, tmp_path: Path) -> None:
    # --maildir: no workspace needed (tmp_path has no bulletin.toml).
    proc = Process(
        ["sink", "--port", str(sink.port), "--maildir", str(tmp_path / "box")], cwd=tmp_path
    )
    code, err = proc.finish()
    assert code == 1
    assert f"Error: Port {sink.port} on 127.0.0.1 is already in use." in err
    assert "--port" in err
    assert "Traceback" not in err


def test_bulletin_sink_refuses_a_folder_that_is_not_a_maildir(tmp_path: Path) -> None:
    folder = tmp_path / "papers"
    folder.mkdir()
    (folder / "report.pdf").write_bytes(b"%PDF")
    proc = Process(["sink", "--port", str(_free_port()), "--maildir", str(folder)], cwd=tmp_path)
    code, err = proc.finish()
    assert code == 1
    assert f"Error: {folder} is not a Maildir: it holds other files (report.pdf)" in err
    assert "Traceback" not in err
    # Refused before listening: it never said it was capturing.
    assert proc.lines.qsize() == 0
