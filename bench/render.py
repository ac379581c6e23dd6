"""Render benchmark: bulletin's whole pipeline against the official MJML compiler alone.

Run with ``make bench`` (installs official MJML into bench/node_modules first) or
``.venv/bin/python bench/render.py``. Prints figures and ratios with the goal beside each;
nothing here passes or fails.

What is measured, on the sample issue of the repository's workspace:

* our full pipeline: load issue.yaml + ``render_issue`` (Jinja2 -> MJML -> HTML with
  mjml-python -> CSS inlining with premailer -> plain text), median of N warm runs;
* where its milliseconds go: load_issue, then each stage ``render_issue`` times
  (``timings=``; the stage names are ``bulletin.render.pipeline.STAGES``), median and
  minimum of each and its share of the whole;
* mjml-python compiling the generated MJML (``rendered.mjml``) only;
* the official MJML (npm ``mjml``) compiling the *same* MJML, in one Node process that loads
  mjml once and compiles it K times (bench/mjml_compile.mjs), so Node start-up is not counted;
  run before and after ours, keeping the lower median and the lower minimum;
* per-recipient personalisation: ``html.fill`` + ``text.fill`` per second on one thread, and
  full message personalisation (``bulletin.mail.compose``) when that module exists.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
CACHE = BENCH / ".cache"  # gitignored: the generated MJML handed to Node
SAMPLE = "2014-10-clusterpolisee-03"

GOAL_FILLS_PER_S = 20_000
GOAL_RATIO = 1.0  # our full pipeline / official MJML compile, on medians and on minima

STAGE_NAMES = {
    "load": "load issue.yaml (YAML, schema, Markdown checks)",
    "images": "local images (cached on disk)",
    "jinja": "Jinja2 -> MJML (with Markdown to HTML)",
    "markers": "source markers out of the MJML",
    "mjml": "MJML -> HTML (mjml-python)",
    "inline": "CSS inlining (premailer)",
    "text": "plain-text version",
    "slots": "split into per-recipient slots",
}


def time_ms(fn: Callable[[], object], runs: int) -> list[float]:
    """Wall-clock milliseconds of ``runs`` calls of ``fn``."""
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def rate_per_s(fn: Callable[[int], object], seconds: float) -> float:
    """Calls of ``fn(i)`` per second over about ``seconds`` of wall time (one thread)."""
    n = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(500):
            fn(n)
            n += 1
        now = time.perf_counter()
        if now >= deadline:
            return n / (now - start)


def recipients(base: dict[str, str], count: int) -> list[dict[str, str]]:
    """Distinct per-recipient values built on ``sample_values`` (names with Romanian letters)."""
    out = []
    for i in range(count):
        v = dict(base)
        v["email"] = f"cititor.{i}@example.org"
        v["name"] = f"Ștefan Țăranu {i}"
        v["first_name"] = f"Ștefan {i}"
        if "unsubscribe_url" in v:
            # Real links carry a signed token (itsdangerous, ~60 characters).
            token = f"{i:08d}.{'Zx9_' * 13}"
            v["unsubscribe_url"] = f"{base['unsubscribe_url'].rsplit('/', 1)[0]}/{token}"
        out.append(v)
    return out


def official_mjml(mjml: str, runs: int) -> dict[str, Any] | str:
    """Timings from bench/mjml_compile.mjs, or the reason they are unavailable."""
    node = shutil.which("node")
    if node is None:
        return "node not found (install Node.js)"
    if not (BENCH / "node_modules" / "mjml" / "package.json").is_file():
        return "official MJML not installed (run `make bench`)"
    CACHE.mkdir(exist_ok=True)
    src = CACHE / "rendered.mjml"
    src.write_text(mjml, encoding="utf-8")
    done = subprocess.run(
        [node, str(BENCH / "mjml_compile.mjs"), str(src), str(runs), "3"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        return f"mjml_compile.mjs failed: {done.stderr.strip()[-400:]}"
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def stage_times(ws: Any, issue_dir: Path, runs: int) -> dict[str, list[float]]:
    """Milliseconds of load_issue and of each render stage, per run (warm)."""
    from bulletin.content.loader import load_issue
    from bulletin.render.pipeline import STAGES, render_issue

    out: dict[str, list[float]] = {name: [] for name in ("load", *STAGES)}
    for _ in range(runs):
        t = time.perf_counter()
        loaded = load_issue(ws, issue_dir)
        out["load"].append((time.perf_counter() - t) * 1000)
        timings: dict[str, float] = {}
        render_issue(ws, loaded, timings=timings)
        for name in STAGES:
            out[name].append(timings.get(name, 0.0) * 1000)
    return out


def stage_table(stages: dict[str, list[float]]) -> list[str]:
    """Where the milliseconds go: each stage's median and minimum, and its share."""
    medians = {name: statistics.median(times) for name, times in stages.items()}
    total = sum(medians.values()) or 1.0
    width = max(len(STAGE_NAMES.get(name, name)) for name in stages)
    lines = [f"{'stage':<{width}}  {'median':>9}  {'min':>9}  share"]
    for name, times in stages.items():
        label = STAGE_NAMES.get(name, name)
        lines.append(
            f"{label:<{width}}  {medians[name]:>6.2f} ms  {min(times):>6.2f} ms  "
            f"{medians[name] / total:>5.0%}"
        )
    lines.append(f"{'sum of the medians':<{width}}  {total:>6.2f} ms")
    return lines


def best_of(first: dict[str, Any] | str, second: dict[str, Any] | str) -> dict[str, Any] | str:
    """The lower median and the lower minimum of two official MJML runs."""
    if isinstance(first, str) or isinstance(second, str):
        return second if isinstance(first, str) else first
    return {
        **second,
        "runs": first["runs"] + second["runs"],
        "median_ms": min(first["median_ms"], second["median_ms"]),
        "min_ms": min(first["min_ms"], second["min_ms"]),
    }


def fmt_ms(v: float) -> str:
    return f"{v:,.2f} ms"


def fmt_times(times: list[float]) -> str:
    """Median, with the minimum beside it: on a busy machine the minimum is the steadier."""
    return f"{statistics.median(times):,.2f} ms (min {min(times):,.2f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="warm runs of our pipeline")
    parser.add_argument("--mjml-runs", type=int, default=50, help="compiles by official MJML")
    parser.add_argument("--seconds", type=float, default=2.0, help="per personalisation rate")
    parser.add_argument("--issue", default=SAMPLE, help="issue slug in the repo workspace")
    args = parser.parse_args()

    from bulletin import workspace

    try:
        from bulletin.content.loader import load_issue
        from bulletin.render.pipeline import render_issue
        from bulletin.render.values import sample_values
    except ImportError as exc:
        print(f"bench/render.py: the render pipeline is not there yet ({exc}).", file=sys.stderr)
        return 1
    import mjml as mjml_python

    ws = workspace.load(REPO)

    def full() -> Any:
        return render_issue(ws, load_issue(ws, ws.issue_dir(args.issue)))

    t = time.perf_counter()
    rendered = full()  # cold: template compilation and imports' lazy work included
    cold_ms = (time.perf_counter() - t) * 1000
    # Official MJML is timed before and after our runs and the better figures are kept:
    # its timings swing between runs on a busy machine, and the goal is to beat its best.
    official_before = official_mjml(rendered.mjml, args.mjml_runs)
    ours = time_ms(full, args.runs)
    ours_ms = statistics.median(ours)
    ours_min = min(ours)
    # The two halves apart, to show where the time goes.
    issue_dir = ws.issue_dir(args.issue)
    load_times = time_ms(lambda: load_issue(ws, issue_dir), args.runs)
    loaded = rendered.loaded
    render_times = time_ms(lambda: render_issue(ws, loaded), args.runs)

    stages = stage_times(ws, issue_dir, args.runs)

    source = rendered.mjml
    mrml = time_ms(lambda: mjml_python.mjml2html(source), args.runs)

    official = best_of(official_before, official_mjml(source, args.mjml_runs))

    values = sample_values(ws, rendered.loaded.slug)
    people = recipients(values, 1000)
    html_t, text_t = rendered.html, rendered.text

    def fill(i: int) -> None:
        v = people[i % 1000]
        html_t.fill(v)
        text_t.fill(v)

    fills = rate_per_s(fill, args.seconds)

    message_rate: float | str
    try:
        from bulletin.mail.compose import Recipient, build_message_template
    except ImportError:
        message_rate = "bulletin.mail.compose not there yet"
    else:
        template = build_message_template(ws.config, rendered)
        addressees = [
            Recipient(
                email=v["email"],
                name=v["name"],
                values={**v, "unsubscribe_token": v["unsubscribe_url"].rpartition("/")[2]},
            )
            for v in people
        ]
        message_rate = rate_per_s(
            lambda i: template.personalise(addressees[i % 1000]), args.seconds
        )

    html_bytes = len(html_t.fill(values).encode("utf-8"))
    text_bytes = len(text_t.fill(values).encode("utf-8"))

    rows: list[tuple[str, str, str]] = []
    rows.append((f"our full pipeline (load + render), median of {args.runs}", fmt_times(ours), ""))
    rows.append(("  first (cold) run of it", fmt_ms(cold_ms), ""))
    rows.append(("  load_issue alone (YAML + schema), median", fmt_times(load_times), ""))
    rows.append(("  render_issue alone, median", fmt_times(render_times), ""))
    rows.append(("mjml-python compile only, median", fmt_times(mrml), ""))
    if isinstance(official, str):
        rows.append(("official MJML compile only", "n/a", official))
        rows.append(
            ("ratio: our full pipeline / official MJML", "n/a", f"goal <= {GOAL_RATIO:.2f}")
        )
    else:
        label = (
            f"official MJML {official['mjml_version']} compile only, best median of 2 x "
            f"{official['runs'] // 2}"
        )
        official_ms = f"{official['median_ms']:,.2f} ms (min {official['min_ms']:,.2f})"
        rows.append((label, official_ms, f"Node {official['node_version']}"))
        rows.append(
            (
                "  (mjml load / first compile)",
                f"{official['load_ms']:,.0f} / {official['first_ms']:,.1f} ms",
                "not counted",
            )
        )
        rows.append(
            (
                "ratio: our full pipeline / official MJML compile, medians",
                f"{ours_ms / official['median_ms']:.2f}",
                f"goal <= {GOAL_RATIO:.2f}",
            )
        )
        rows.append(
            (
                "ratio: our full pipeline / official MJML compile, minima",
                f"{ours_min / official['min_ms']:.2f}",
                f"goal <= {GOAL_RATIO:.2f}",
            )
        )
        rows.append(
            (
                "ratio: render_issue alone / official MJML compile, medians",
                f"{statistics.median(render_times) / official['median_ms']:.2f}",
                f"(minima: {min(render_times) / official['min_ms']:.2f})",
            )
        )
        rows.append(
            (
                "ratio: mjml-python / official MJML (compile only)",
                f"{statistics.median(mrml) / official['median_ms']:.3f}",
                "",
            )
        )
    rows.append(
        (
            "personalisation: html.fill + text.fill per second",
            f"{fills:,.0f}/s",
            f"goal >= {GOAL_FILLS_PER_S:,}/s",
        )
    )
    if isinstance(message_rate, str):
        rows.append(("full message personalisation per second", "n/a", message_rate))
    else:
        rows.append(
            (
                "full message personalisation per second",
                f"{message_rate:,.0f}/s",
                "bytes ready for SMTP DATA, no DKIM",
            )
        )

    print(
        f"bulletin render benchmark: issue {args.issue}, Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, one thread"
    )
    print(
        f"sizes: MJML {len(source.encode('utf-8')):,} B, our HTML {html_bytes:,} B, "
        f"text {text_bytes:,} B"
        + (
            ""
            if isinstance(official, str)
            else f", official MJML HTML {official['html_bytes']:,} B"
        )
        + f"; {len(html_t.slots)} html slots"
    )
    if not rendered.ok:
        print(f"note: the render reported {len(rendered.problems)} problem(s)")
    width = max(len(r[0]) for r in rows)
    vwidth = max(len(r[1]) for r in rows)
    print()
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>{vwidth}}  {note}".rstrip())
    print()
    print(f"where the milliseconds of our full pipeline go (median of {args.runs} warm runs):")
    for line in stage_table(stages):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
