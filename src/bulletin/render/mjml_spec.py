"""The MJML 4 components: their attributes and value types, where each may appear.

The table the linter (:mod:`bulletin.render.lint`) checks generated MJML against, and the
value checks for its types. Kept apart from the linter so that adding a component or an
attribute is a change to data, reviewed line by line against mjml's own
``allowedAttributes`` and mjml-preset-core's dependency table.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

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

ATTRIBUTES: dict[str, dict[str, str]] = {
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
CHILDREN: dict[str, tuple[str, ...]] = {
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

PARENTS: dict[str, frozenset[str]] = {}
for _parent, _kids in CHILDREN.items():
    for _kid in _kids:
        PARENTS[_kid] = PARENTS.get(_kid, frozenset()) | {_parent}

# Components whose content is HTML or text, not components: MRML copies it as it is.
ENDING_TAGS = frozenset(
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
NOT_BODY = frozenset(
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
GLOBAL_ATTRS = ("css-class", "mj-class")

# Children of <mj-attributes> besides components: defaults for every component, and classes.
ATTRIBUTES_CHILDREN = frozenset({"mj-all", "mj-class"})

KNOWN_TAGS = frozenset(ATTRIBUTES) | ATTRIBUTES_CHILDREN
"""Every tag name the linter knows."""

ALL_BODY_ATTRS = frozenset(
    name for tag, attrs in ATTRIBUTES.items() if tag not in NOT_BODY for name in attrs
) | frozenset(GLOBAL_ATTRS)

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
# HTML elements without an end tag; MRML knows them too.
VOID_ELEMENTS = frozenset(
    "area base br col embed hr img input link meta param source track wbr".split()
)
_TYPE_RE = re.compile(r"^(unit|unitWithNegative|enum)\(([^)]*)\)(?:\{(\d+),(\d+)\})?$")


# --- Value checks -------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """Why a value is wrong (``None`` fields mean fine)."""

    reason: str
    code: str = "mjml.invalid-value"


def check_value(spec: str, value: str) -> Verdict | None:
    """Check ``value`` against an MJML type ``spec``; ``None`` when it is acceptable."""
    if spec == "string":
        return None
    if spec == "color":
        v = value.strip()
        if _HEX_COLOR.fullmatch(v) or _RGB_COLOR.fullmatch(v) or v.lower() in _NAMED_COLORS:
            return None
        return Verdict("expected a colour such as #1a4d8f, rgb(26,77,143) or a CSS colour name")
    if spec == "integer":
        return None if re.fullmatch(r"\d+", value.strip()) else Verdict("expected an integer")
    if spec == "boolean":
        return None if value in ("true", "false") else Verdict("expected true or false")
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
        return Verdict(f"expected one of {shown}{hint}")
    return _check_units(kind == "unitWithNegative", args, int(lo or 1), int(hi or 1), value)


def _check_units(negative: bool, units: list[str], lo: int, hi: int, value: str) -> Verdict | None:
    keywords = [u for u in units if u.isalpha() and u not in ("px", "em")]
    suffixes = [u for u in units if u not in keywords]
    sign = "-?" if negative else ""
    unit_alt = "|".join(re.escape(u) for u in suffixes)
    part_re = re.compile(rf"{sign}{_NUMBER}(?:{unit_alt})")
    parts = value.split()
    shown = ", ".join(u or "no unit" for u in units)
    if not lo <= len(parts) <= hi:
        many = f"{lo} to {hi} values" if hi > 1 else "one value"
        return Verdict(f"expected {many} in {shown}, got {len(parts)}")
    # The trap this linter exists for: MRML reads "0 24px" as an invalid shorthand and drops
    # it from its width arithmetic (the 24px horizontal padding is lost), while "0px 24px"
    # works. A lone "0" is harmless.
    if len(parts) > 1 and "" not in units and any(re.fullmatch(r"-?0+(\.0*)?", p) for p in parts):
        fixed = " ".join(re.sub(r"^(-?0+(\.0*)?)$", r"\g<1>px", p) for p in parts)
        return Verdict(
            f'a unitless 0 in a shorthand makes MRML ignore the whole value; write 0px ("{fixed}")',
            "mjml.unitless-zero",
        )
    for p in parts:
        if p in keywords or p == "0" or part_re.fullmatch(p):
            continue
        if re.fullmatch(rf"-?{_NUMBER}", p) and "" not in units:
            return Verdict(f"{p!r} has no unit; expected {shown} (e.g. {p}px)")
        return Verdict(f"{p!r} is not a length in {shown}")
    return None
