"""Measurement: how encoding detection does on the corpus, per language and encoding.

    .venv/bin/python bench/encodings.py [--max-rows N] [--charset-normalizer]

Every file of ``tests/encoding_corpus.py`` (subscriber lists in 19 languages and mixes,
saved in every encoding that can hold them) goes through the real reader. A file is
*correct* when every row reads back as written, *stopped* when the reader refuses it with an
encoding message (nothing would be imported), *wrong* otherwise. The goal (issue 8): no file
wrong, few stopped. With ``--charset-normalizer`` the same files are given to
charset-normalizer for comparison (UTF-16 and BOM files excluded: the reader settles those
before any detection).
"""

from __future__ import annotations

import argparse
import codecs
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from encoding_corpus import ENCODINGS, Sample, classify, corpus  # noqa: E402

OUTCOMES = ("correct", "stopped", "wrong")


def _table(title: str, results: dict[tuple[str, str], Counter[str]]) -> None:
    languages = sorted({lang for lang, _ in results})
    print(f"\n{title}: correct/stopped/wrong per language and encoding")
    print(f"{'':<14}" + "".join(f"{enc:>14}" for enc in ENCODINGS))
    for lang in languages:
        cells = []
        for enc in ENCODINGS:
            c = results.get((lang, enc))
            cells.append(f"{c['correct']}/{c['stopped']}/{c['wrong']}" if c else "-")
        print(f"{lang:<14}" + "".join(f"{cell:>14}" for cell in cells))
    total: Counter[str] = Counter()
    for c in results.values():
        total.update(c)
    n = sum(total.values())
    print(
        f"total {n} files: "
        + ", ".join(f"{o} {total[o]} ({100 * total[o] / n:.1f} %)" for o in OUTCOMES)
    )


def _charset_normalizer(sample: Sample) -> str:
    import charset_normalizer

    best = charset_normalizer.from_bytes(sample.data).best()
    if best is None:
        return "stopped"
    try:
        text = sample.data.decode(best.encoding)
    except UnicodeDecodeError:
        return "wrong"
    return "correct" if text == sample.data.decode(sample.encoding) else "wrong"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--max-rows", type=int, default=None, help="leave out longer files")
    parser.add_argument("--charset-normalizer", action="store_true", help="compare with it")
    args = parser.parse_args()

    ours: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    theirs: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    odd: list[str] = []
    seconds = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for sample in corpus(max_rows=args.max_rows):
            t = time.perf_counter()
            outcome = classify(sample, Path(tmp) / sample.name)
            seconds += time.perf_counter() - t
            if outcome not in OUTCOMES:
                odd.append(f"{sample.name}: {outcome}")
                outcome = "wrong"
            ours[sample.language, sample.encoding][outcome] += 1
            bom = sample.data.startswith((codecs.BOM_UTF8, codecs.BOM_UTF16))
            if args.charset_normalizer and not sample.encoding.startswith("utf-16") and not bom:
                theirs[sample.language, sample.encoding][_charset_normalizer(sample)] += 1
    _table("bulletin's reader", ours)
    files = sum(sum(c.values()) for c in ours.values())
    print(f"{seconds:.1f} s for {files} files ({1000 * seconds / files:.1f} ms a file)")
    for line in odd:
        print("  unexpected:", line)
    if theirs:
        _table("charset-normalizer", theirs)
    return 1 if any(c["wrong"] for c in ours.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
