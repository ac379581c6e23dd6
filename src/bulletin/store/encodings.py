"""Which encoding a subscriber file without a byte-order mark was saved in.

Excel and older tools save CSV in UTF-8 or in the single-byte code page of the computer:
cp1252 or ISO-8859-15 in Western Europe, cp1250 or ISO-8859-2 in Central Europe and
Romania. The same bytes read differently in each: ``0xF1`` is ``ñ`` in cp1252 and ``ń`` in
cp1250. Detectors that compare letter frequencies with running prose are not made for a list
of names, which is short and mixes languages; so each reading is judged word by word instead.

A word holding non-ASCII letters is *plausible* when one language's alphabet holds all of
them and a few facts of that language's spelling hold (Polish never writes ``ń`` before a
vowel; Portuguese ``ã`` stands before ``o``, ``e``, ``s`` or at the end; Spanish ``ñ``
before a vowel; Czech ``ě`` only after b, p, v, f, m, d, t, n...). A word with a symbol
inside it (``Piteºti``, ``Bo¿ena``), a control character, an undecodable byte, a capital
inside a lowercase word (``forĂŞt``) or letters of several alphabets (``Ăą``) is not. Each
reading scores the number of distinct implausible words, and a code page's reading that
holds control characters or bytes the code page does not define ranks below any other.
:func:`judge` keeps the best (valid UTF-8 wins a tie) and says when two readings that
differ are equally good (then a person must choose), or when the file is UTF-8 with
damaged lines. ``bench/encodings.py`` measures it on ``tests/encoding_corpus.py``.

UTF-16 is recognised by its byte-order mark or its zero bytes, before any of this.
"""

from __future__ import annotations

import codecs
import functools
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass

LEGACY = ("cp1252", "cp1250", "iso8859-15", "iso8859-2")
"""Single-byte code pages, in the order named when several read a file identically."""
CANDIDATES = ("utf-8", *LEGACY)

# --- characters ---------------------------------------------------------------------------

_HIGH = bytes(range(0x80, 0x100))
_PAGE_CHARS = frozenset("".join(_HIGH.decode(enc, errors="replace") for enc in LEGACY))
"""Every character a byte >= 0x80 can become in one of the code pages (or U+FFFD)."""

VOWELS = frozenset("aeiouàáâãäåæèéêëìíîïòóôõöøùúûüýÿąęěůűőœă")
_SLAVIC_VOWELS = VOWELS | {"y", "ĺ", "ŕ"}  # y, and syllabic l and r, are vowels in Slavic

# Apostrophes may join the parts of a name (O’Neil); quotes, brackets, dashes and a few
# symbols may stand before or after a word (¿Qué, ACME®, 25°).
_JOINERS = frozenset("’‘")
_QUOTES = "«»‹›„“”‚‘’‐‑–—…•°\u00ad"
_LEADING = _QUOTES + "¡¿"
_TRAILING = _QUOTES + "®™©"

_SEPARATORS = "\x00-\x40\x5b-\x60\x7b-\x7f\xa0\u2000-\u200f\u2028-\u202f\u205f\u3000"
_TOKEN = re.compile(f"[^{_SEPARATORS}]+")
"""A run of characters between separators (spaces, digits, ASCII punctuation)."""


Rule = Callable[[str], bool]
"""A spelling fact about a lowercase word: True when the word respects it."""


@dataclass(frozen=True)
class Language:
    """An alphabet (its non-ASCII letters) and facts of its spelling."""

    name: str
    letters: frozenset[str]
    foreign: frozenset[str] = frozenset()
    """ASCII letters the language's own words never hold."""
    rules: tuple[Rule, ...] = ()


def _each(letters: str, ok: Callable[[str, str, str], bool]) -> Rule:
    """A rule on every occurrence of ``letters``: ``ok(before, letter, after)``; '' at an edge."""

    def rule(word: str) -> bool:
        for i, c in enumerate(word):
            if c in letters and not ok(word[i - 1] if i else "", c, word[i + 1 : i + 2]):
                return False
        return True

    return rule


def _at_most_one(letters: str) -> Rule:
    """Languages that mark one stressed vowel per word (Spanish, Catalan, Portuguese)."""
    return lambda word: sum(word.count(c) for c in letters) <= 1


def _vowel(c: str) -> bool:
    return c in VOWELS


def _slavic_vowel(c: str) -> bool:
    return c in _SLAVIC_VOWELS


def _consonant(c: str) -> bool:
    return c.isalpha() and c not in _SLAVIC_VOWELS


def _plain(c: str) -> str:
    return unicodedata.normalize("NFD", c)[0]


def _syllabic_liquids(word: str) -> bool:
    """Slovak ĺ and ŕ are syllables of their own: dĺžka, vŕba, štvŕtok.

    They stand between consonants, and the one before begins the word or follows another.
    """
    for i, c in enumerate(word):
        if c in "ĺŕ":
            before, after = word[i - 1 : i], word[i + 1 : i + 2]
            if not (_consonant(before) and _consonant(after)):
                return False
            if i >= 2 and not _consonant(word[i - 2]):
                return False
            if _plain(c) in (before, after):
                return False
    return True


def _caron_cluster(word: str) -> bool:
    """Czech, Slovak and Croatian č.

    Between consonants it follows a syllabic r or l (krčma, mlčky); last after a consonant,
    an r or l (Krč, Telč); it never stands before g.
    """
    for i, c in enumerate(word):
        if c != "č" or i == 0:
            continue
        before, after = word[i - 1], word[i + 1 : i + 2]
        if after == "g":
            return False
        if not _consonant(before) or (after and not _consonant(after)):
            continue  # a vowel beside it
        if before not in "rl":
            return False
        if after and not (i >= 2 and _consonant(word[i - 2])):
            return False  # the r or l is no syllable: Hélčne
    return True


def _soft(letters: str, before_vowels: str) -> Rule:
    """Czech and Slovak write de, ti, ně for ďe, ťi, ňe; and a final cluster has no ď or ť."""

    def rule(word: str) -> bool:
        for i, c in enumerate(word):
            if c in letters:
                after = word[i + 1 : i + 2]
                if after and after in before_vowels:
                    return False
                if c in "ďť" and i == len(word) - 2 and _consonant(after):
                    return False  # loďka, but no word ends in ďs
        return True

    return rule


_LANGUAGES = (
    Language(
        "Romanian",
        frozenset("ăâîșțşţ"),
        rules=(
            _each("ă", lambda b, c, a: a not in ("a", "o", "ă")),  # Găești, but no ăo
            _each("â", lambda b, c, a: b != ""),  # î begins a word, â never does
        ),
    ),
    Language(
        "French",
        frozenset("àâæçéèêëîïôœùûüÿ"),
        rules=(
            _each("à", lambda b, c, a: a == ""),  # à, là, voilà, déjà
            _each("ù", lambda b, c, a: b == "o" and a == ""),  # où
            _each("è", lambda b, c, a: b != "" and _consonant(a)),  # père, Hélène, Genève
            _each("ëïü", lambda b, c, a: _vowel(b)),  # a diaeresis: Noël, Loïc, Saül
            _each("œæ", lambda b, c, a: not _vowel(b)),
            _each("ÿ", lambda b, c, a: b != ""),
        ),
    ),
    Language(
        "Spanish",
        frozenset("áéíñóúü"),
        rules=(
            _each("ñ", lambda b, c, a: _vowel(a)),
            _each("ü", lambda b, c, a: b in ("g", "q") and a in ("e", "i", "é", "í")),
            _at_most_one("áéíóú"),
        ),
    ),
    Language(
        "Portuguese",
        frozenset("áâãàçéêíóôõúü"),
        rules=(
            _each("ã", lambda b, c, a: a in ("o", "e", "s", "")),  # João, mãe, irmãs, São
            _each("õ", lambda b, c, a: a in ("e", "s", "")),  # Simões, põe
            _each("à", lambda b, c, a: a in ("", "s") or b == ""),  # à, às, àquele
            _each("ü", lambda b, c, a: b in ("g", "q") and a in ("e", "i")),
            _at_most_one("áâàéêíóôú"),
        ),
    ),
    Language(
        "Catalan",
        frozenset("àçéèíïóòúü"),
        rules=(
            _each("ï", lambda b, c, a: _vowel(b)),
            # güe, qüi, or a diaeresis: Raül, reüneix
            _each("ü", lambda b, c, a: (b in ("g", "q") and a in ("e", "i")) or _vowel(b)),
            _each("è", lambda b, c, a: a == "" or _consonant(a)),  # Mercè, Pagès
            _at_most_one("àéèíóòú"),
        ),
    ),
    Language("German", frozenset("äöüß"), rules=(_each("ß", lambda b, c, a: b != ""),)),
    Language(
        "Italian",
        frozenset("àèéìíîòóùú"),
        rules=(_each("àèéìíîòóùú", lambda b, c, a: a == ""),),  # città, perché, Niccolò
    ),
    Language(
        "Dutch",
        frozenset("áéëèïóöüíú"),
        rules=(
            _each("ëïöü", lambda b, c, a: _vowel(b)),  # België, coöperatie, reünie
            _each("è", lambda b, c, a: _consonant(a)),  # crème, scène
            lambda word: len(set(word) & set("áéèíóú")) <= 1,  # één, café, crème
        ),
    ),
    Language(
        "Danish and Norwegian",
        frozenset("æøåéóô"),
        rules=(_each("æ", lambda b, c, a: not _vowel(b)),),
    ),
    Language("Swedish", frozenset("åäöé")),
    Language("Albanian and Luxembourgish", frozenset("çëéä")),  # Tiranë, Lëtzebuerg
    Language("Finnish", frozenset("äöåšž")),
    Language("Estonian", frozenset("õäöüšž"), foreign=frozenset("cqwxyz")),
    Language(
        "Icelandic",
        frozenset("áðéíóúýþæö"),
        foreign=frozenset("cqwz"),
        rules=(
            _each("ð", lambda b, c, a: b != ""),  # ð never begins a word
            _each("æ", lambda b, c, a: not _vowel(b)),
        ),
    ),
    Language(
        "Polish",
        frozenset("ąćęłńóśźż"),
        foreign=frozenset("qvx"),
        rules=(
            # Before a vowel Polish writes ni, ci, si, zi: never ń, ć, ś, ź.
            _each("ńćśź", lambda b, c, a: not _slavic_vowel(a)),
            _each("ńć", lambda b, c, a: _slavic_vowel(b) or b in ("", "ś", "ź")),
            # Nasal ą and ę follow a consonant or i and precede no vowel: Dąbrowski, pięć.
            _each("ąę", lambda b, c, a: (_consonant(b) or b == "i") and not _slavic_vowel(a)),
        ),
    ),
    Language(
        "Czech",
        frozenset("áčďéěíňóřšťúůýž"),
        rules=(
            _each("ů", lambda b, c, a: _consonant(b)),  # ú begins a word, ů never does
            _each("ě", lambda b, c, a: b in "bpvfmdtn" and b != ""),
            _soft("ďťň", "eiéíě"),
            _each("ň", lambda b, c, a: _slavic_vowel(b) or _slavic_vowel(a)),
            _each(
                "ř",
                lambda b, c, a: (
                    "r" not in (b, a)
                    and (a != "" or _slavic_vowel(b))
                    and (b != "" or _slavic_vowel(a))
                ),
            ),
            _caron_cluster,
        ),
    ),
    Language(
        "Slovak",
        frozenset("áäčďéíĺľňóôŕšťúýž"),
        foreign=frozenset("qwx"),
        rules=(
            _each("ä", lambda b, c, a: b in ("b", "p", "m", "v")),  # mäso, päť, deväť
            _syllabic_liquids,
            _soft("ďťňľ", "eiéí"),
            _each("ň", lambda b, c, a: _slavic_vowel(b) or _slavic_vowel(a)),
            _caron_cluster,
        ),
    ),
    Language(
        "Hungarian",
        frozenset("áéíóöőúüű"),
        # In Hungarian y only writes consonants (gy, ny, ty), so it is no vowel here.
        rules=(
            _each("őű", lambda b, c, a: not _vowel(b)),
            # Long vowels take an accent: aa, oo, uu only meet across a compound (Tiszaalpár).
            lambda word: not any(pair in word for pair in ("aa", "oo", "uu")),
        ),
    ),
    Language(
        "Croatian, Slovene and Bosnian",
        frozenset("čćđšž"),
        foreign=frozenset("qwxy"),
        rules=(
            _each("ć", lambda b, c, a: _slavic_vowel(b) or b in ("", "š")),
            _caron_cluster,
        ),
    ),
)
_KNOWN_LETTERS = frozenset().union(*(lang.letters for lang in _LANGUAGES))


# --- judging a word -------------------------------------------------------------------------


def _script(c: str) -> str:
    if c.isascii() or c in _PAGE_CHARS:
        return "LATIN"
    name = unicodedata.name(c, "")
    if name.startswith("LATIN") and (not 0x180 <= ord(c) <= 0x2AF or 0x218 <= ord(c) <= 0x21B):
        return "LATIN"
    # Latin Extended-B and IPA letters (ƀ, ʌ...) are what damaged bytes decode to, not names.
    return "OTHER LATIN" if name.startswith("LATIN") else name.split(" ")[0]


def _mixed_case(word: str) -> bool:
    """Capitals where names have none: ``forĂŞt``, ``RĂşben``, ``ČšARA``.

    A capital after a small letter, or a non-ASCII capital inside a word that is not all
    capitals (ASCII ones are names: McDonald, DeLuca).
    """
    for before, after in zip(word, word[1:], strict=False):
        if before.islower() and after.isupper() and not (before.isascii() and after.isascii()):
            return True
    if not word.isupper():
        return any(c.isupper() and not c.isascii() for c in word[1:])
    return False


def _word_plausible(word: str) -> bool:
    if word.isascii():
        return True
    if _mixed_case(word):
        return False
    lower = word.lower()
    letters = {c for c in lower if not c.isascii()}
    if not letters <= _KNOWN_LETTERS:
        if letters & _PAGE_CHARS - _KNOWN_LETTERS:
            return False  # a code page's symbol-like letter: ª º µ ƒ ˆ
        # Letters no code page has (ğ, ı, Cyrillic...) come only from UTF-8, which holds
        # every language: the word is plausible if it keeps to one script.
        scripts = {_script(c) for c in word if not unicodedata.category(c).startswith("M")}
        return len(scripts) == 1 and "OTHER LATIN" not in scripts
    ascii_letters = {c for c in lower if c.isascii()}
    return any(
        letters <= lang.letters
        and not ascii_letters & lang.foreign
        and all(rule(lower) for rule in lang.rules)
        for lang in _LANGUAGES
    )


@functools.lru_cache(maxsize=1 << 16)
def plausible(token: str) -> bool:
    """Whether ``token`` (a run of text between separators) reads as part of a name."""
    token = unicodedata.normalize("NFC", token)
    core = token.lstrip(_LEADING).rstrip(_TRAILING)
    if not core:
        return True
    if len(core) <= 2 and core[-1] in "ªº" and (len(core) == 1 or core[0].isalpha()):
        return True  # Nº, 1ª (the digit is a separator)
    words: list[str] = []
    start = 0
    for i, c in enumerate(core):
        if c.isalpha() or unicodedata.category(c).startswith("M"):
            continue
        if c not in _PAGE_CHARS and not c.isascii():
            pass  # an emoji or other sign only UTF-8 holds: a separator
        elif c in _JOINERS and 0 < i < len(core) - 1:
            pass
        elif c == "·" and core[i - 1 : i + 2].lower() == "l·l":
            pass  # Catalan l·l
        else:
            return False  # a symbol, control character or undecodable byte inside a word
        words.append(core[start:i])
        start = i + 1
    words.append(core[start:])
    return all(_word_plausible(w) for w in words if w)


# --- judging a reading ----------------------------------------------------------------------


@dataclass(frozen=True)
class Reading:
    """The text of a sample under one encoding, and how many of its words are implausible."""

    encoding: str
    text: str
    doubtful: int
    """Distinct words that no language's alphabet and spelling explain."""
    damaged: bool = False
    """Whether the UTF-8 reading met bytes that are not UTF-8 (each is a doubtful word)."""
    impossible: bool = False
    """Whether a code page's reading holds a control character or a byte it does not define:
    programs that write text in that code page never do."""

    @property
    def rank(self) -> tuple[bool, int]:
        """Readings compare by this: lower is more plausible."""
        return self.impossible, self.doubtful


_IMPOSSIBLE = re.compile("[\x80-\x9f\ufffd]")
_DAMAGE = re.compile("[\udc80-\udcff]+")


def _doubtful(text: str) -> int:
    # Tokens first, then the non-ASCII ones: one pattern requiring a non-ASCII character
    # would backtrack over every long ASCII run.
    return sum(1 for t in set(_TOKEN.findall(text)) if not t.isascii() and not plausible(t))


def read(data: bytes, encoding: str, final: bool = True) -> Reading:
    """``data`` decoded with ``encoding`` and judged.

    Undecodable bytes become U+FFFD (an implausible word). A UTF-8 sequence cut at the end
    of a sample that is not ``final`` is left out.
    """
    if encoding != "utf-8":
        text = data.decode(encoding, errors="replace")
        impossible = _IMPOSSIBLE.search(text) is not None
        return Reading(encoding, text, _doubtful(text), impossible=impossible)
    raw = codecs.getincrementaldecoder("utf-8")(errors="surrogateescape").decode(data, final)
    text = _DAMAGE.sub("\ufffd", raw)
    return Reading(encoding, text, _doubtful(text), damaged=text != raw)


@dataclass(frozen=True)
class Verdict:
    """What :func:`judge` concluded.

    Exactly one of: ``encodings`` (readings that give the same text, the one to name first),
    ``ambiguous`` (equally good readings that differ: a person must choose), or ``damaged``
    (the UTF-8 reading, whose undecodable bytes are the problem).
    """

    encodings: tuple[str, ...] = ()
    ambiguous: tuple[Reading, ...] = ()
    damaged: Reading | None = None


def judge(data: bytes, candidates: Sequence[str] = CANDIDATES, final: bool = True) -> Verdict:
    """Which of ``candidates`` reads ``data`` (a sample holding non-ASCII bytes) as names."""
    utf8 = read(data, "utf-8", final) if "utf-8" in candidates else None
    if utf8 is not None and not utf8.damaged and not utf8.doubtful:
        return Verdict(encodings=("utf-8",))  # nothing can beat it
    legacy = [read(data, enc) for enc in LEGACY if enc in candidates]
    best = min((r.rank for r in legacy), default=None)
    if utf8 is not None and (best is None or (False, utf8.doubtful) <= best):
        # Text in a code page is almost never valid UTF-8 (every accented letter would have
        # to be followed by a symbol), so a valid UTF-8 reading wins a tie; and damaged
        # UTF-8 is the likelier story when no code page reads the file better.
        return Verdict(damaged=utf8) if utf8.damaged else Verdict(encodings=("utf-8",))
    if best is None:
        raise ValueError(f"no encodings to judge among: {candidates}")
    texts: dict[str, list[Reading]] = {}
    for r in legacy:
        if r.rank == best:
            texts.setdefault(r.text, []).append(r)
    if len(texts) > 1:
        return Verdict(ambiguous=tuple(group[0] for group in texts.values()))
    return Verdict(encodings=tuple(r.encoding for r in next(iter(texts.values()))))


@functools.cache
def disagreement(candidates: tuple[str, ...]) -> re.Pattern[bytes]:
    """A pattern finding the bytes that some of ``candidates`` (code pages) read differently."""
    differ = [
        b
        for b in _HIGH
        if len({bytes([b]).decode(enc, errors="replace") for enc in candidates}) > 1
    ]
    if not differ:
        return re.compile(b"(?!)")  # matches nothing
    return re.compile(b"[" + b"".join(re.escape(bytes([b])) for b in differ) + b"]")
