"""Lint the generated MJML, because the compiler does not.

mjml-python (MRML) validates nothing: an unknown ``mj-*`` tag is copied into the HTML as a
literal tag, an unknown attribute or a bad value is ignored without a word, and a component in
the wrong parent renders somewhere odd. This module knows the MJML 4 components, their
attributes and value types and where each may appear, and reports every deviation at the
generated MJML's line:column and, through :class:`~bulletin.render.types.SourceSpan`, at the
template line that produced it.

It also turns MRML's own parse errors (byte offsets) into line:column.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from html.parser import HTMLParser

from bulletin.errors import Location, Problem, Severity
from bulletin.render.types import SourceSpan

MJML_PATH = "generated MJML"
"""Location path used when a finding cannot be traced back to a template."""

# --- The component table ----------------------------------------------------------------
#
# Attribute types use MJML's own notation (mjml-validator), so the table can be compared with
# the components' ``allowedAttributes`` line by line:
#   string | color | integer | boolean | enum(a,b,) | unit(px,%) | unit(px,%){1,4}
#   unitWithNegative(px,em)
# An empty enum option or unit allows the empty value / a unitless number.

_PADDING = {
    "padding": "unit(px,%){1,4}",
    "padding-top": "unit(px,%)",
    "padding-right": "unit(px,%)",
    "padding-bottom": "unit(px,%)",
    "padding-left": "unit(px,%)",
}
_BORDERS = {
    "border": "string",
    "border-top": "string",
    "border-right": "string",
    "border-bottom": "string",
    "border-left": "string",
}
_FONT = {
    "font-family": "string",
    "font-size": "unit(px)",
    "font-style": "string",
    "font-weight": "string",
}
_VALIGN = "enum(top,bottom,middle)"

_SECTION_ATTRS: dict[str, str] = {
    "background-color": "color",
    "background-url": "string",
    "background-repeat": "enum(repeat,no-repeat)",
    "background-size": "string",
    "background-position": "string",
    "background-position-x": "string",
    "background-position-y": "string",
    **_BORDERS,
    "border-radius": "string",
    "direction": "enum(ltr,rtl)",
    "full-width": "enum(full-width,false,)",
    **_PADDING,
    "text-align": "enum(left,center,right)",
    "text-padding": "unit(px,%){1,4}",
}

_ATTRIBUTES: dict[str, dict[str, str]] = {
    "mjml": {"owa": "string", "lang": "string", "dir": "enum(ltr,rtl,auto)"},
    "mj-head": {},
    "mj-body": {"width": "unit(px)", "background-color": "color"},
    # Head components.
    "mj-attributes": {},
    "mj-breakpoint": {"width": "unit(px)"},
    "mj-font": {"name": "string", "href": "string"},
    "mj-preview": {},
    "mj-style": {"inline": "string"},
    "mj-title": {},
    "mj-html-attributes": {},
    "mj-selector": {"path": "string"},
    "mj-html-attribute": {"name": "string"},
    # Anywhere.
    "mj-raw": {"position": "enum(file-start)"},
    "mj-include": {"path": "string", "type": "enum(mjml,html,css)", "css-inline": "string"},
    # Layout.
    "mj-section": _SECTION_ATTRS,
    "mj-wrapper": {**_SECTION_ATTRS, "gap": "unit(px)"},
    "mj-group": {
        "background-color": "color",
        "direction": "enum(ltr,rtl)",
        "vertical-align": _VALIGN,
        "width": "unit(px,%)",
    },
    "mj-column": {
        "background-color": "color",
        **_BORDERS,
        "border-radius": "unit(px,%){1,4}",
        "direction": "enum(ltr,rtl)",
        "inner-background-color": "color",
        "inner-border": "string",
        "inner-border-top": "string",
        "inner-border-right": "string",
        "inner-border-bottom": "string",
        "inner-border-left": "string",
        "inner-border-radius": "unit(px,%){1,4}",
        **_PADDING,
        "vertical-align": _VALIGN,
        "width": "unit(px,%)",
    },
    "mj-hero": {
        "mode": "enum(fixed-height,fluid-height)",
        "height": "unit(px,%)",
        "background-url": "string",
        "background-width": "unit(px,%)",
        "background-height": "unit(px,%)",
        "background-position": "string",
        "background-color": "color",
        "border-radius": "string",
        "container-background-color": "color",
        "inner-background-color": "color",
        "inner-padding": "unit(px,%){1,4}",
        "inner-padding-top": "unit(px,%)",
        "inner-padding-right": "unit(px,%)",
        "inner-padding-bottom": "unit(px,%)",
        "inner-padding-left": "unit(px,%)",
        **_PADDING,
        "vertical-align": _VALIGN,
    },
    # Content.
    "mj-text": {
        "align": "enum(left,right,center,justify)",
        "background-color": "color",
        "color": "color",
        "container-background-color": "color",
        **_FONT,
        "height": "unit(px,%)",
        "letter-spacing": "unitWithNegative(px,em)",
        "line-height": "unit(px,%,)",
        **_PADDING,
        "text-decoration": "string",
        "text-transform": "string",
        "vertical-align": _VALIGN,
    },
    "mj-button": {
        "align": "enum(left,center,right)",
        "background-color": "color",
        **_BORDERS,
        "border-radius": "string",
        "color": "color",
        "container-background-color": "color",
        **_FONT,
        "height": "unit(px,%)",
        "href": "string",
        "name": "string",
        "title": "string",
        "inner-padding": "unit(px,%){1,4}",
        "letter-spacing": "unitWithNegative(px,em)",
        "line-height": "unit(px,%,)",
        **_PADDING,
        "rel": "string",
        "target": "string",
        "text-decoration": "string",
        "text-transform": "string",
        "vertical-align": _VALIGN,
        "text-align": "enum(left,right,center)",
        "width": "unit(px,%)",
    },
    "mj-image": {
        "alt": "string",
        "href": "string",
        "name": "string",
        "src": "string",
        "srcset": "string",
        "sizes": "string",
        "title": "string",
        "rel": "string",
        "align": "enum(left,center,right)",
        **_BORDERS,
        "border-radius": "unit(px,%){1,4}",
        "container-background-color": "color",
        "fluid-on-mobile": "boolean",
        **_PADDING,
        "target": "string",
        "width": "unit(px)",
        "height": "unit(px,auto)",
        "max-height": "unit(px,%)",
        "font-size": "unit(px)",
        "usemap": "string",
    },
    "mj-divider": {
        "border-color": "color",
        "border-style": "string",
        "border-width": "unit(px)",
        "container-background-color": "color",
        **_PADDING,
        "width": "unit(px,%)",
        "align": "enum(left,center,right)",
    },
    "mj-spacer": {
        **_BORDERS,
        "container-background-color": "color",
        **_PADDING,
        "height": "unit(px,%)",
    },
    "mj-table": {
        "align": "enum(left,right,center)",
        "border": "string",
        "cellpadding": "integer",
        "cellspacing": "integer",
        "container-background-color": "color",
        "color": "color",
        "font-family": "string",
        "font-size": "unit(px)",
        "font-weight": "string",
        "line-height": "unit(px,%,)",
        **_PADDING,
        "role": "enum(none,presentation)",
        "table-layout": "enum(auto,fixed,initial,inherit)",
        "vertical-align": _VALIGN,
        "width": "unit(px,%)",
    },
    "mj-social": {
        "align": "enum(left,right,center)",
        "border-radius": "unit(px,%)",
        "container-background-color": "color",
        "color": "color",
        **_FONT,
        "icon-size": "unit(px,%)",
        "icon-height": "unit(px,%)",
        "icon-padding": "unit(px,%){1,4}",
        "inner-padding": "unit(px,%){1,4}",
        "line-height": "unit(px,%,)",
        "mode": "enum(horizontal,vertical)",
        **_PADDING,
        "table-layout": "enum(auto,fixed)",
        "text-padding": "unit(px,%){1,4}",
        "text-decoration": "string",
        "vertical-align": _VALIGN,
    },
    "mj-social-element": {
        "align": "enum(left,center,right)",
        "alt": "string",
        "background-color": "color",
        "border-radius": "unit(px)",
        "color": "color",
        "font-family": "string",
        "font-size": "unit(px,%)",
        "font-style": "string",
        "font-weight": "string",
        "href": "string",
        "icon-height": "unit(px,%)",
        "icon-padding": "unit(px,%){1,4}",
        "icon-position": "enum(left,right)",
        "icon-size": "unit(px,%)",
        "line-height": "unit(px,%,)",
        "name": "string",
        **_PADDING,
        "rel": "string",
        "sizes": "string",
        "src": "string",
        "srcset": "string",
        "target": "string",
        "text-decoration": "string",
        "text-padding": "unit(px,%){1,4}",
        "title": "string",
        "vertical-align": _VALIGN,
    },
    "mj-navbar": {
        "align": "enum(left,center,right)",
        "base-url": "string",
        "hamburger": "string",
        "ico-align": "enum(left,center,right)",
        "ico-open": "string",
        "ico-close": "string",
        "ico-color": "color",
        "ico-font-size": "unit(px,%)",
        "ico-font-family": "string",
        "ico-text-transform": "string",
        "ico-padding": "unit(px,%){1,4}",
        "ico-padding-left": "unit(px,%)",
        "ico-padding-top": "unit(px,%)",
        "ico-padding-right": "unit(px,%)",
        "ico-padding-bottom": "unit(px,%)",
        **_PADDING,
        "ico-text-decoration": "string",
        "ico-line-height": "unit(px,%,)",
    },
    "mj-navbar-link": {
        "color": "color",
        **_FONT,
        "href": "string",
        "name": "string",
        "target": "string",
        "rel": "string",
        "letter-spacing": "unitWithNegative(px,em)",
        "line-height": "unit(px,%,)",
        **_PADDING,
        "text-decoration": "string",
        "text-transform": "string",
    },
    "mj-accordion": {
        "container-background-color": "color",
        "border": "string",
        "font-family": "string",
        "icon-align": "enum(top,middle,bottom)",
        "icon-width": "unit(px,%)",
        "icon-height": "unit(px,%)",
        "icon-wrapped-url": "string",
        "icon-wrapped-alt": "string",
        "icon-unwrapped-url": "string",
        "icon-unwrapped-alt": "string",
        "icon-position": "enum(left,right)",
        **_PADDING,
    },
    "mj-accordion-element": {
        "background-color": "color",
        "border": "string",
        "font-family": "string",
        "icon-align": "enum(top,middle,bottom)",
        "icon-width": "unit(px,%)",
        "icon-height": "unit(px,%)",
        "icon-wrapped-url": "string",
        "icon-wrapped-alt": "string",
        "icon-unwrapped-url": "string",
        "icon-unwrapped-alt": "string",
        "icon-position": "enum(left,right)",
    },
    "mj-accordion-title": {
        "background-color": "color",
        "color": "color",
        "font-size": "unit(px)",
        "font-family": "string",
        **_PADDING,
    },
    "mj-accordion-text": {
        "background-color": "color",
        "font-size": "unit(px)",
        "font-family": "string",
        "font-weight": "string",
        "letter-spacing": "unitWithNegative(px,em)",
        "line-height": "unit(px,%,)",
        "color": "color",
        **_PADDING,
    },
    "mj-carousel": {
        "align": "enum(left,center,right)",
        "border-radius": "unit(px,%){1,4}",
        "container-background-color": "color",
        "icon-width": "unit(px,%)",
        "left-icon": "string",
        "right-icon": "string",
        **_PADDING,
        "thumbnails": "enum(visible,hidden)",
        "tb-border": "string",
        "tb-border-radius": "unit(px,%)",
        "tb-hover-border-color": "color",
        "tb-selected-border-color": "color",
        "tb-width": "unit(px,%)",
    },
    "mj-carousel-image": {
        "alt": "string",
        "href": "string",
        "rel": "string",
        "target": "string",
        "title": "string",
        "src": "string",
        "thumbnails-src": "string",
        "border-radius": "unit(px,%){1,4}",
        "tb-border": "string",
        "tb-border-radius": "unit(px,%){1,4}",
    },
}

# Which children each component accepts (mjml-preset-core's dependency table). The parents
# check below is derived from it. mj-include may appear anywhere and is left out.
_CHILDREN: dict[str, tuple[str, ...]] = {
    "mjml": ("mj-head", "mj-body", "mj-raw"),
    "mj-head": (
        "mj-attributes",
        "mj-breakpoint",
        "mj-html-attributes",
        "mj-font",
        "mj-preview",
        "mj-style",
        "mj-title",
        "mj-raw",
    ),
    "mj-html-attributes": ("mj-selector",),
    "mj-selector": ("mj-html-attribute",),
    "mj-body": ("mj-raw", "mj-section", "mj-wrapper", "mj-hero"),
    "mj-wrapper": ("mj-hero", "mj-raw", "mj-section"),
    "mj-section": ("mj-column", "mj-group", "mj-raw"),
    "mj-group": ("mj-column", "mj-raw"),
    "mj-column": (
        "mj-accordion",
        "mj-button",
        "mj-carousel",
        "mj-divider",
        "mj-image",
        "mj-raw",
        "mj-social",
        "mj-spacer",
        "mj-table",
        "mj-text",
        "mj-navbar",
    ),
    "mj-hero": (
        "mj-accordion",
        "mj-button",
        "mj-carousel",
        "mj-divider",
        "mj-image",
        "mj-social",
        "mj-spacer",
        "mj-table",
        "mj-text",
        "mj-navbar",
        "mj-raw",
    ),
    "mj-navbar": ("mj-navbar-link", "mj-raw"),
    "mj-social": ("mj-social-element", "mj-raw"),
    "mj-accordion": ("mj-accordion-element", "mj-raw"),
    "mj-accordion-element": ("mj-accordion-title", "mj-accordion-text", "mj-raw"),
    "mj-carousel": ("mj-carousel-image",),
}

_PARENTS: dict[str, frozenset[str]] = {}
for _parent, _kids in _CHILDREN.items():
    for _kid in _kids:
        _PARENTS[_kid] = _PARENTS.get(_kid, frozenset()) | {_parent}

# Components whose content is HTML or text, not components: MRML copies it as it is.
_ENDING_TAGS = frozenset(
    {
        "mj-text",
        "mj-button",
        "mj-table",
        "mj-raw",
        "mj-navbar-link",
        "mj-social-element",
        "mj-accordion-title",
        "mj-accordion-text",
        "mj-carousel-image",
        "mj-style",
        "mj-title",
        "mj-preview",
    }
)

# Components outside the body do not take css-class / mj-class.
_NOT_BODY = frozenset(
    {
        "mjml",
        "mj-head",
        "mj-attributes",
        "mj-breakpoint",
        "mj-font",
        "mj-preview",
        "mj-style",
        "mj-title",
        "mj-html-attributes",
        "mj-selector",
        "mj-html-attribute",
        "mj-include",
    }
)
_GLOBAL_ATTRS = ("css-class", "mj-class")

# Children of <mj-attributes> besides components: defaults for every component, and classes.
_ATTRIBUTES_CHILDREN = frozenset({"mj-all", "mj-class"})

KNOWN_TAGS = frozenset(_ATTRIBUTES) | _ATTRIBUTES_CHILDREN
"""Every tag name the linter knows."""

_ALL_BODY_ATTRS = frozenset(
    name for tag, attrs in _ATTRIBUTES.items() if tag not in _NOT_BODY for name in attrs
) | frozenset(_GLOBAL_ATTRS)

# CSS named colours (CSS Color Module Level 4), plus the keywords MJML users write.
_NAMED_COLORS = frozenset(
    """
    aliceblue antiquewhite aqua aquamarine azure beige bisque black blanchedalmond blue
    blueviolet brown burlywood cadetblue chartreuse chocolate coral cornflowerblue cornsilk
    crimson cyan darkblue darkcyan darkgoldenrod darkgray darkgreen darkgrey darkkhaki
    darkmagenta darkolivegreen darkorange darkorchid darkred darksalmon darkseagreen
    darkslateblue darkslategray darkslategrey darkturquoise darkviolet deeppink deepskyblue
    dimgray dimgrey dodgerblue firebrick floralwhite forestgreen fuchsia gainsboro ghostwhite
    gold goldenrod gray green greenyellow grey honeydew hotpink indianred indigo ivory khaki
    lavender lavenderblush lawngreen lemonchiffon lightblue lightcoral lightcyan
    lightgoldenrodyellow lightgray lightgreen lightgrey lightpink lightsalmon lightseagreen
    lightskyblue lightslategray lightslategrey lightsteelblue lightyellow lime limegreen linen
    magenta maroon mediumaquamarine mediumblue mediumorchid mediumpurple mediumseagreen
    mediumslateblue mediumspringgreen mediumturquoise mediumvioletred midnightblue mintcream
    mistyrose moccasin navajowhite navy oldlace olive olivedrab orange orangered orchid
    palegoldenrod palegreen paleturquoise palevioletred papayawhip peachpuff peru pink plum
    powderblue purple rebeccapurple red rosybrown royalblue saddlebrown salmon sandybrown
    seagreen seashell sienna silver skyblue slateblue slategray slategrey snow springgreen
    steelblue tan teal thistle tomato turquoise violet wheat white whitesmoke yellow
    yellowgreen transparent none inherit currentcolor
    """.split()
)
_HEX_COLOR = re.compile(r"#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6})")
_RGB_COLOR = re.compile(
    r"rgba?\(\s*\d{1,3}%?\s*,\s*\d{1,3}%?\s*,\s*\d{1,3}%?\s*(?:,\s*(?:\d*\.)?\d+%?\s*)?\)",
    re.IGNORECASE,
)
_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
# "<" that cannot start a tag, comment or declaration: HTMLParser keeps it as text, MRML fails.
_BARE_LT = re.compile(r"<(?![A-Za-z/!?])")
_TAG_IN_COMMENT = re.compile(r"<(/?)([A-Za-z][\w:-]*)(?:\s[^<>]*?)?(/?)>")
# HTML elements without an end tag; MRML knows them too.
_VOID_ELEMENTS = frozenset(
    "area base br col embed hr img input link meta param source track wbr".split()
)
_TYPE_RE = re.compile(r"^(unit|unitWithNegative|enum)\(([^)]*)\)(?:\{(\d+),(\d+)\})?$")


# --- Value checks -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Verdict:
    """Why a value is wrong (``None`` fields mean fine)."""

    reason: str
    code: str = "mjml.invalid-value"


def _check_value(spec: str, value: str) -> _Verdict | None:
    """Check ``value`` against an MJML type ``spec``; ``None`` when it is acceptable."""
    if spec == "string":
        return None
    if spec == "color":
        v = value.strip()
        if _HEX_COLOR.fullmatch(v) or _RGB_COLOR.fullmatch(v) or v.lower() in _NAMED_COLORS:
            return None
        return _Verdict("expected a colour such as #1a4d8f, rgb(26,77,143) or a CSS colour name")
    if spec == "integer":
        return None if re.fullmatch(r"\d+", value.strip()) else _Verdict("expected an integer")
    if spec == "boolean":
        return None if value in ("true", "false") else _Verdict("expected true or false")
    m = _TYPE_RE.match(spec)
    if m is None:  # pragma: no cover - the table above is fixed
        raise ValueError(f"unknown MJML type {spec!r}")
    kind, args, lo, hi = m.group(1), m.group(2).split(","), m.group(3), m.group(4)
    if kind == "enum":
        if value in args:
            return None
        shown = ", ".join(a for a in args if a)
        near = difflib.get_close_matches(value, [a for a in args if a], n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        return _Verdict(f"expected one of {shown}{hint}")
    return _check_units(kind == "unitWithNegative", args, int(lo or 1), int(hi or 1), value)


def _check_units(negative: bool, units: list[str], lo: int, hi: int, value: str) -> _Verdict | None:
    keywords = [u for u in units if u.isalpha() and u not in ("px", "em")]
    suffixes = [u for u in units if u not in keywords]
    sign = "-?" if negative else ""
    unit_alt = "|".join(re.escape(u) for u in suffixes)
    part_re = re.compile(rf"{sign}{_NUMBER}(?:{unit_alt})")
    parts = value.split()
    shown = ", ".join(u or "no unit" for u in units)
    if not lo <= len(parts) <= hi:
        many = f"{lo} to {hi} values" if hi > 1 else "one value"
        return _Verdict(f"expected {many} in {shown}, got {len(parts)}")
    # The trap this linter exists for: MRML reads "0 24px" as an invalid shorthand and drops
    # it from its width arithmetic (the 24px horizontal padding is lost), while "0px 24px"
    # works. A lone "0" is harmless.
    if len(parts) > 1 and "" not in units and any(re.fullmatch(r"-?0+(\.0*)?", p) for p in parts):
        fixed = " ".join(re.sub(r"^(-?0+(\.0*)?)$", r"\g<1>px", p) for p in parts)
        return _Verdict(
            f'a unitless 0 in a shorthand makes MRML ignore the whole value; write 0px ("{fixed}")',
            "mjml.unitless-zero",
        )
    for p in parts:
        if p in keywords or p == "0" or part_re.fullmatch(p):
            continue
        if re.fullmatch(rf"-?{_NUMBER}", p) and "" not in units:
            return _Verdict(f"{p!r} has no unit; expected {shown} (e.g. {p}px)")
        return _Verdict(f"{p!r} is not a length in {shown}")
    return None


# --- Locating findings ----------------------------------------------------------------------


SourceOf = Callable[[str], str | None]
"""Gives a template's text from its ``SourceSpan.template`` name (``None`` if unreadable)."""

_JINJA = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}")


def _template_pattern(template_line: str) -> re.Pattern[str] | None:
    """A template line as a pattern over its output: each ``{{ ... }}`` matches anything."""
    text = template_line.strip()
    if not text or "{{" not in text:
        return None
    parts = _JINJA.split(text)
    if not "".join(parts).strip():
        return None  # nothing but Jinja: it would match any line
    return re.compile(".*?".join(re.escape(p) for p in parts), re.DOTALL)


def source_location(
    line: int,
    column: int | None,
    sources: Sequence[SourceSpan],
    *,
    mjml: str | None = None,
    source_of: SourceOf | None = None,
) -> Location:
    """Where generated MJML line ``line`` came from: the innermost template span covering it.

    The template line is estimated from the span's first line. With the MJML text and
    ``source_of`` it is found instead: the template line that prints the MJML line verbatim,
    or whose literal parts match it around ``{{ ... }}``, nearest to the estimate (Jinja
    block lines print nothing, so the estimate drifts). Without a covering span the location
    is the generated MJML itself.
    """
    best: SourceSpan | None = None
    for span in sources:
        if span.mjml_start <= line <= span.mjml_end:
            size = span.mjml_end - span.mjml_start
            if best is None or size < best.mjml_end - best.mjml_start:
                best = span
    if best is None:
        return Location(MJML_PATH, line, column)
    estimate = best.template_line + (line - best.mjml_start)
    template_text = source_of(best.template) if source_of and mjml is not None else None
    if template_text is not None and mjml is not None:
        lines = mjml.split("\n")
        wanted = lines[line - 1].strip() if 0 < line <= len(lines) else ""
        if wanted:
            found = _find_template_line(template_text, wanted, best.template_line, estimate)
            if found is not None:
                return Location(best.template, found)
    return Location(best.template, estimate)


def _find_template_line(template: str, wanted: str, first: int, estimate: int) -> int | None:
    exact: list[int] = []
    fuzzy: list[int] = []
    for number, text in enumerate(template.split("\n"), 1):
        if text.strip() == wanted:
            exact.append(number)
        else:
            pattern = _template_pattern(text)
            if pattern is not None and pattern.fullmatch(wanted):
                fuzzy.append(number)
    for candidates in (exact, fuzzy):
        if candidates:
            # Lines before the span's start belong to earlier output; prefer those after it.
            after = [n for n in candidates if n >= first] or candidates
            return min(after, key=lambda n: (abs(n - estimate), n))
    return None


def _located(
    message: str,
    line: int,
    column: int,
    sources: Sequence[SourceSpan],
    *,
    code: str,
    severity: Severity = "error",
    mjml: str | None = None,
    source_of: SourceOf | None = None,
) -> Problem:
    loc = source_location(line, column, sources, mjml=mjml, source_of=source_of)
    if loc.path != MJML_PATH:
        message = f"{message} (generated MJML line {line}:{column})"
    return Problem(message, loc, severity, code)


def line_column(text: str, char_offset: int) -> tuple[int, int]:
    """1-based line and column of a character offset in ``text``."""
    char_offset = max(0, min(char_offset, len(text)))
    line = text.count("\n", 0, char_offset) + 1
    start = text.rfind("\n", 0, char_offset) + 1
    return line, char_offset - start + 1


_MRML_POSITION = re.compile(r"at position (\d+):(\d+)")


def mrml_error_location(
    mjml: str,
    exc: ValueError,
    sources: Sequence[SourceSpan] = (),
    source_of: SourceOf | None = None,
) -> Location | None:
    """Line:column of an mjml-python error, whose text carries UTF-8 *byte* offsets.

    mjml-python raises ``ValueError("unexpected element in root template at position 44:62")``
    where 44:62 are byte offsets of the offending token. Returns ``None`` when the message has
    no position (``unexpected end of stream in root template``). With ``sources`` the location
    is the template line; otherwise it is the generated MJML.
    """
    m = _MRML_POSITION.search(str(exc))
    if m is None:
        return None
    raw = mjml.encode("utf-8")
    start = min(int(m.group(1)), len(raw))
    # Count characters, not bytes: Romanian text before the error shifts the two apart.
    char_offset = len(raw[:start].decode("utf-8", errors="ignore"))
    line, column = line_column(mjml, char_offset)
    if sources:
        return source_location(line, column, sources, mjml=mjml, source_of=source_of)
    return Location(MJML_PATH, line, column)


def mrml_error_problem(
    mjml: str,
    exc: ValueError,
    sources: Sequence[SourceSpan] = (),
    source_of: SourceOf | None = None,
) -> Problem:
    """A located :class:`Problem` for an mjml-python error, worded for template authors."""
    text = str(exc)
    m = _MRML_POSITION.search(text)
    detail = ""
    if m is not None:
        raw = mjml.encode("utf-8")
        token = raw[int(m.group(1)) : int(m.group(2))].decode("utf-8", errors="replace")
        if token.strip():
            detail = f" near {token.strip()[:60]!r}"
    message = f"MJML compiler: {_MRML_POSITION.sub('', text).strip()}{detail}"
    if "end of stream" in text:
        message += " (a tag is not closed: check that every <mj-…> has its </mj-…>)"
    loc = mrml_error_location(mjml, exc, sources, source_of)
    if loc is not None and loc.path != MJML_PATH and m is not None:
        char_offset = len(mjml.encode("utf-8")[: int(m.group(1))].decode("utf-8", "ignore"))
        line, column = line_column(mjml, char_offset)
        message += f" (generated MJML line {line}:{column})"
    return Problem(message, loc, "error", "mjml.syntax")


# --- The linter ---------------------------------------------------------------------------


@dataclass
class _Open:
    tag: str
    line: int
    column: int


def _is_mj(tag: str) -> bool:
    return tag == "mjml" or tag.startswith("mj-")


def _suggest(name: str, candidates: Iterable[str]) -> str:
    near = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {near[0]!r}?)" if near else ""


class _Linter(HTMLParser):
    """Walks the MJML with exact positions; every finding is collected, nothing raised."""

    def __init__(
        self, source: str, sources: Sequence[SourceSpan], source_of: SourceOf | None
    ) -> None:
        # Entities stay as written (no charref conversion) so that a bare "<" in text, which
        # MRML cannot parse, is told apart from a correct "&lt;".
        super().__init__(convert_charrefs=False)
        self.source = source
        self.sources = sources
        self.source_of = source_of
        self.problems: list[Problem] = []
        self.stack: list[_Open] = []
        # Inside an ending tag (mj-text...) the content is HTML, copied as it is, but MRML
        # still parses it: its elements must balance or MRML fails without a position.
        self.raw_until: _Open | None = None
        self.html_stack: list[_Open] = []
        self.classes_defined: set[str] = set()
        self.classes_used: list[tuple[str, int, int]] = []
        self.seen_root = False
        # Open elements of a stray HTML block: one report covers the block and its text.
        self.stray_depth = 0

    # Positions ---------------------------------------------------------------------------

    def _pos(self) -> tuple[int, int]:
        line, offset = self.getpos()
        return line, offset + 1

    @staticmethod
    def _advance(at: tuple[int, int], text: str) -> tuple[int, int]:
        """The position reached after ``text`` starting at ``at``."""
        line, column = at
        if "\n" in text:
            return line + text.count("\n"), len(text) - text.rfind("\n")
        return line, column + len(text)

    def _attr_pos(self, name: str) -> tuple[int, int]:
        """Position of attribute ``name`` inside the current start tag (the tag's if unknown)."""
        text = self.get_starttag_text() or ""
        m = re.search(rf"[\s/]({re.escape(name)})\s*(=|[\s/>])", text, re.IGNORECASE)
        if m is None:
            return self._pos()
        return self._advance(self._pos(), text[: m.start(1)])

    def report(
        self,
        message: str,
        at: tuple[int, int],
        code: str,
        severity: Severity = "error",
    ) -> None:
        self.problems.append(
            _located(
                message,
                at[0],
                at[1],
                self.sources,
                code=code,
                severity=severity,
                mjml=self.source,
                source_of=self.source_of,
            )
        )

    # Structure ---------------------------------------------------------------------------

    def _parent(self) -> str | None:
        return self.stack[-1].tag if self.stack else None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._start(tag, attrs, self_closing=False)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._start(tag, attrs, self_closing=True)

    def _start(self, tag: str, attrs: list[tuple[str, str | None]], *, self_closing: bool) -> None:
        at = self._pos()
        if self.raw_until is not None:
            self._raw_start(tag, at, self_closing=self_closing)
            return
        parent = self._parent()
        if not _is_mj(tag):
            if self.stray_depth == 0:
                where = f"<{parent}>" if parent else "the top level"
                self.report(
                    f"HTML <{tag}> directly in {where} is not MJML: MRML copies it unstyled; "
                    "put HTML inside <mj-text> or <mj-raw>",
                    at,
                    "mjml.stray-content",
                )
            if not self_closing and tag not in _VOID_ELEMENTS:
                self.stray_depth += 1
            return
        self.stray_depth = 0
        in_attributes = any(o.tag == "mj-attributes" for o in self.stack)
        self._check_tag(tag, parent, at, in_attributes)
        if tag in KNOWN_TAGS and (in_attributes or tag not in _ATTRIBUTES_CHILDREN):
            self._check_attributes(tag, attrs, in_attributes)
        if self_closing:
            return
        frame = _Open(tag, *at)
        self.stack.append(frame)
        if tag in _ENDING_TAGS and not in_attributes:
            self.raw_until = frame
            self.html_stack = []

    def _raw_start(self, tag: str, at: tuple[int, int], *, self_closing: bool) -> None:
        assert self.raw_until is not None
        host = self.raw_until.tag
        if _is_mj(tag):
            self.report(
                f"<{tag}> inside <{host}> is not compiled: the content of <{host}> is HTML "
                f"and MRML copies <{tag}> into the email as a literal tag; close <{host}> first",
                at,
                "mjml.nesting",
            )
        if not self_closing and tag not in _VOID_ELEMENTS:
            self.html_stack.append(_Open(tag, *at))

    def _raw_end(self, tag: str, at: tuple[int, int]) -> None:
        assert self.raw_until is not None
        if tag in _VOID_ELEMENTS:
            return
        if not any(o.tag == tag for o in self.html_stack):
            self.report(
                f"</{tag}> inside <{self.raw_until.tag}> closes nothing: MRML stops at it "
                f'("unexpected token"); remove it or add the opening <{tag}>',
                at,
                "mjml.html-balance",
            )
            return
        while self.html_stack:
            top = self.html_stack.pop()
            if top.tag == tag:
                return
            self._unclosed_html(top, f"before </{tag}>")

    def _unclosed_html(self, top: _Open, where: str) -> None:
        assert self.raw_until is not None
        self.report(
            f"<{top.tag}> inside <{self.raw_until.tag}> is not closed {where}: MRML parses the "
            f'HTML and fails ("unexpected end of stream"); add </{top.tag}>',
            (top.line, top.column),
            "mjml.html-balance",
        )

    def _end_raw(self, closing: str) -> None:
        """Leave an ending tag's content, reporting its HTML elements left open."""
        for top in self.html_stack:
            self._unclosed_html(top, f"before </{closing}>")
        self.html_stack = []
        self.raw_until = None

    def handle_endtag(self, tag: str) -> None:
        at = self._pos()
        if self.raw_until is not None:
            if tag == self.raw_until.tag:
                self._end_raw(tag)
                self.stack.pop()
                return
            if not _is_mj(tag) or not any(o.tag == tag for o in self.stack):
                self._raw_end(tag, at)
                return
            # An enclosing component closes: this ending tag was never closed.
            self._end_raw(tag)
        if not _is_mj(tag):
            if self.stray_depth:
                self.stray_depth -= 1
            return
        self.stray_depth = 0
        if not any(o.tag == tag for o in self.stack):
            self.report(f"</{tag}> closes nothing: no <{tag}> is open", at, "mjml.unclosed")
            return
        while self.stack:
            top = self.stack.pop()
            if top.tag == tag:
                break
            self.report(
                f"<{top.tag}> is not closed before </{tag}>",
                (top.line, top.column),
                "mjml.unclosed",
            )

    def handle_comment(self, data: str) -> None:
        # MRML parses the HTML inside Outlook conditional comments (<!--[if mso]>...
        # <![endif]-->) of an ending tag, so their elements count towards the balance.
        if self.raw_until is None or not data.startswith("[if"):
            return
        start = data.find("]>")
        if start < 0:
            return
        origin = self._advance(self._pos(), "<!--" + data[: start + 2])
        inner = data[start + 2 :]
        for m in _TAG_IN_COMMENT.finditer(inner):
            at = self._advance(origin, inner[: m.start()])
            closing, name, self_closing = m.group(1), m.group(2).lower(), m.group(3)
            if closing:
                self._raw_end(name, at)
            else:
                self._raw_start(name, at, self_closing=bool(self_closing))

    def handle_data(self, data: str) -> None:
        bare = _BARE_LT.search(data)
        if bare is not None:
            self.report(
                "a bare '<' in text stops MRML (\"unable to parse next template\"); write &lt;",
                self._advance(self._pos(), data[: bare.start()]),
                "mjml.bare-lt",
            )
        if self.raw_until is not None or self.stray_depth or not data.strip():
            return
        parent = self._parent()
        if parent is None or parent not in KNOWN_TAGS or parent in ("mj-attributes", "mj-class"):
            return
        snippet = " ".join(data.split())[:40]
        lead = data[: len(data) - len(data.lstrip())]
        self.report(
            f"text {snippet!r} directly in <{parent}> is not MJML: MRML copies it unstyled; "
            "put it inside <mj-text>",
            self._advance(self._pos(), lead),
            "mjml.stray-content",
        )

    def close(self) -> None:
        super().close()
        if self.raw_until is not None:
            self._end_raw(self.raw_until.tag)
        for top in reversed(self.stack):
            self.report(f"<{top.tag}> is never closed", (top.line, top.column), "mjml.unclosed")
        self.stack.clear()
        for name, line, column in self.classes_used:
            if name not in self.classes_defined:
                self.report(
                    f"mj-class {name!r} is not defined in <mj-attributes>"
                    + _suggest(name, self.classes_defined),
                    (line, column),
                    "mjml.unknown-class",
                )

    # Checks ------------------------------------------------------------------------------

    def _check_tag(self, tag: str, parent: str | None, at: tuple[int, int], in_attrs: bool) -> None:
        if tag == "mj-html-attributes":
            self.report(
                "<mj-html-attributes> is not supported by MRML (mjml-python) and fails the "
                "build; set the attribute in the HTML of an <mj-text>/<mj-raw> instead",
                at,
                "mjml.unsupported",
            )
            return
        if tag not in KNOWN_TAGS:
            self.report(
                f"unknown MJML tag <{tag}>{_suggest(tag, KNOWN_TAGS)}: MRML copies it into "
                "the email as a literal tag",
                at,
                "mjml.unknown-tag",
            )
            return
        if tag == "mjml":
            if parent is not None:
                self.report("<mjml> must be the outermost tag", at, "mjml.nesting")
            self.seen_root = True
            return
        if in_attrs:
            # Inside <mj-attributes> tags name the component whose defaults they set.
            if parent == "mj-attributes" and tag in ("mjml", "mj-head", "mj-body", "mj-include"):
                self.report(f"<{tag}> cannot take defaults in <mj-attributes>", at, "mjml.nesting")
            return
        if tag in _ATTRIBUTES_CHILDREN:
            self.report(f"<{tag}> belongs inside <mj-attributes>", at, "mjml.nesting")
            return
        if tag == "mj-include":
            return
        allowed = _PARENTS.get(tag, frozenset())
        if parent is not None and parent not in KNOWN_TAGS:
            return  # already reported as an unknown tag
        if parent not in allowed:
            where = f"<{parent}>" if parent else "the top level"
            expected = " or ".join(f"<{p}>" for p in sorted(allowed))
            self.report(
                f"<{tag}> is not allowed in {where}; it belongs in {expected}",
                at,
                "mjml.nesting",
            )

    def _check_attributes(
        self, tag: str, attrs: list[tuple[str, str | None]], in_attrs: bool
    ) -> None:
        if tag not in KNOWN_TAGS or tag == "mj-html-attributes":
            return
        if in_attrs and tag == "mj-class":
            allowed: Mapping[str, str] = {"name": "string"}
            for name, value in attrs:
                if name == "name" and value:
                    self.classes_defined.add(value)
            extra: Iterable[str] = _ALL_BODY_ATTRS
        elif in_attrs and tag == "mj-all":
            allowed, extra = {}, _ALL_BODY_ATTRS
        else:
            allowed = _ATTRIBUTES.get(tag, {})
            extra = _GLOBAL_ATTRS if tag not in _NOT_BODY else ()
        extra = frozenset(extra)
        for name, value in attrs:
            at = self._attr_pos(name)
            if name == "mj-class" and value and not in_attrs:
                line, column = at
                for cls in value.split():
                    self.classes_used.append((cls, line, column))
            if name in allowed:
                spec = allowed[name]
            elif name in extra:
                spec = self._spec_anywhere(name)
            else:
                self.report(
                    f"<{tag}> has no attribute {name!r}"
                    + _suggest(name, [*allowed, *(_GLOBAL_ATTRS if extra else ())]),
                    at,
                    "mjml.unknown-attribute",
                )
                continue
            if value is None:
                self.report(
                    f'<{tag}> attribute {name!r} has no value; write {name}="…"',
                    at,
                    "mjml.invalid-value",
                )
                continue
            if tag == "mj-style" and name == "inline" and value == "inline":
                self.report(
                    '<mj-style inline="inline"> is not inlined by MRML (mjml-python): its '
                    "rules only land in the <style> block; use a plain <mj-style> (the CSS "
                    "inlining step applies it) or component attributes",
                    at,
                    "mjml.style-inline",
                    "warning",
                )
                continue
            if spec and "BULLETINSLOT" not in value:
                verdict = _check_value(spec, value)
                if verdict is not None:
                    self.report(f'<{tag}> {name}="{value}": {verdict.reason}', at, verdict.code)

    @staticmethod
    def _spec_anywhere(name: str) -> str:
        """The type of an attribute named outside its component (mj-all, mj-class)."""
        for tag_attrs in _ATTRIBUTES.values():
            if name in tag_attrs:
                return tag_attrs[name]
        return "string"


def lint_mjml(
    mjml: str, sources: Sequence[SourceSpan] = (), source_of: SourceOf | None = None
) -> list[Problem]:
    """Every problem MRML would swallow in ``mjml``, located in the templates via ``sources``.

    Errors: unknown ``mj-*`` tags, attributes and ``mj-class`` names; invalid values and
    units; wrong nesting; a unitless ``0`` in a multi-value shorthand; ``mj-html-attributes``;
    HTML or text outside ending tags; and, inside ending tags (``mj-text``, ``mj-raw``...),
    ``mj-*`` tags, unbalanced HTML elements and bare ``<``, which make MRML fail without
    saying where. Warning: ``mj-style inline="inline"``. With ``source_of`` (template name to
    text) findings point at the exact template line rather than an estimate.
    """
    linter = _Linter(mjml, sources, source_of)
    linter.feed(mjml)
    linter.close()
    if not linter.seen_root and mjml.strip():
        linter.problems.insert(
            0,
            _located("the document has no <mjml> root tag", 1, 1, sources, code="mjml.nesting"),
        )
    return linter.problems
