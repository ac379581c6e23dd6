"""The MJML linter: each rule fires on a bad input and stays quiet on a good one."""

from __future__ import annotations

import mjml
import pytest

from bulletin.errors import Location
from bulletin.render.lint import lint_mjml
from bulletin.render.sourcemap import GENERATED_MJML as MJML_PATH
from bulletin.render.sourcemap import location
from bulletin.render.types import SourceSpan

GOOD = """\
<mjml lang="ro" dir="ltr">
  <mj-head>
    <mj-title>Știri</mj-title>
    <mj-preview>Evenimente și știri</mj-preview>
    <mj-font name="Lato" href="https://fonts.example.org/lato.css" />
    <mj-breakpoint width="480px" />
    <mj-attributes>
      <mj-all font-family="Lato, Arial, sans-serif" />
      <mj-text color="#333333" padding="0px 24px" line-height="1.5" />
      <mj-class name="muted" color="#777" font-size="13px" />
    </mj-attributes>
    <mj-style>
      a { color: #1a4d8f; }
      .footer > p { margin: 0 }
    </mj-style>
  </mj-head>
  <mj-body width="600px" background-color="#f4f4f4" css-class="body">
    <mj-wrapper padding="0px" background-color="white">
      <mj-section padding="20px 0px" text-align="left" full-width="">
        <mj-column width="100%" vertical-align="middle" padding="0px 8px">
          <mj-text mj-class="muted" css-class="intro" align="justify" letter-spacing="-0.5px">
            <h2>Introducere</h2>
            <p>Vă dorim o lectură plăcută, <a href="https://example.org">aici</a>.<br>
            <img src="https://example.org/x.png" alt="x"></p>
            <div>a &amp; b &lt; c</div>
          </mj-text>
          <mj-image src="https://example.org/y.png" alt="Logo" width="300px" height="auto" />
          <mj-button href="https://example.org" inner-padding="10px 24px" border-radius="4px"
                     background-color="rgb(26, 77, 143)" font-size="15px">Citiți</mj-button>
          <mj-divider border-width="1px" border-color="#ddd" width="80%" />
          <mj-spacer height="10px" />
          <mj-table cellpadding="4" width="100%"><tr><td>a</td></tr></mj-table>
          <mj-social mode="horizontal" icon-size="24px">
            <mj-social-element name="facebook" href="https://example.org">Facebook</mj-social-element>
          </mj-social>
          <mj-raw><!--[if mso]><table><tr><td>&nbsp;</td></tr></table><![endif]--></mj-raw>
        </mj-column>
      </mj-section>
      <mj-section>
        <mj-group>
          <mj-column><mj-text>a</mj-text></mj-column>
          <mj-column><mj-text>b</mj-text></mj-column>
        </mj-group>
      </mj-section>
    </mj-wrapper>
    <mj-hero mode="fixed-height" height="200px" background-url="https://example.org/h.png">
      <mj-text>Hero</mj-text>
    </mj-hero>
  </mj-body>
</mjml>
"""


def wrap(body: str, head: str = "") -> str:
    """A complete document with ``body`` inside one column (line 3 onwards)."""
    return (
        f"<mjml>\n<mj-head>{head}</mj-head>\n<mj-body><mj-section><mj-column>\n"
        f"{body}\n</mj-column></mj-section></mj-body>\n</mjml>\n"
    )


def codes(problems: list) -> list[str]:
    return [p.code for p in problems]


def test_good_document_is_clean_and_compiles() -> None:
    assert lint_mjml(GOOD) == []
    assert "Vă dorim o lectură plăcută" in mjml.mjml2html(GOOD)


def test_unknown_tag_with_suggestion() -> None:
    problems = lint_mjml(wrap("<mj-txt>salut</mj-txt>"))
    assert codes(problems) == ["mjml.unknown-tag"]
    assert "<mj-txt>" in problems[0].message
    assert "did you mean 'mj-text'?" in problems[0].message
    # MRML really does pass it through, which is why we lint.
    assert "<mj-txt>" in mjml.mjml2html(wrap("<mj-txt>salut</mj-txt>"))


def test_unknown_attribute_with_suggestion_and_position() -> None:
    src = wrap('<mj-text   colour="red">x</mj-text>')
    (problem,) = lint_mjml(src)
    assert problem.code == "mjml.unknown-attribute"
    assert problem.message.startswith("<mj-text> has no attribute 'colour' (did you mean 'color'?)")
    # Located at the attribute itself: line 4 of the document, column of "colour".
    assert problem.location == Location(MJML_PATH, 4, 12)


def test_global_attributes_and_padding_sides_are_accepted() -> None:
    src = wrap('<mj-text css-class="a" padding-left="4px" padding-top="0">x</mj-text>')
    assert lint_mjml(src) == []


def test_attribute_of_another_component_is_rejected() -> None:
    problems = lint_mjml(wrap('<mj-text href="https://example.org">x</mj-text>'))
    assert codes(problems) == ["mjml.unknown-attribute"]


@pytest.mark.parametrize(
    ("element", "fragment"),
    [
        ('<mj-text color="reed">x</mj-text>', "colour"),
        ('<mj-text font-size="14">x</mj-text>', "has no unit"),
        ('<mj-text font-size="14em">x</mj-text>', "not a length in px"),
        ('<mj-text align="centre">x</mj-text>', "did you mean 'center'?"),
        ('<mj-text padding="1px 2px 3px 4px 5px">x</mj-text>', "1 to 4 values"),
        ('<mj-table cellpadding="4px">x</mj-table>', "integer"),
        ('<mj-image src="https://e.org/a.png" alt="" fluid-on-mobile="yes" />', "true or false"),
        ('<mj-image src="https://e.org/a.png" alt="" width="50%" />', "not a length in px"),
        ('<mj-text letter-spacing="--1px">x</mj-text>', "not a length"),
        ('<mj-button href="#" background-color="#12345">x</mj-button>', "colour"),
    ],
)
def test_invalid_values(element: str, fragment: str) -> None:
    problems = lint_mjml(wrap(element))
    assert codes(problems) == ["mjml.invalid-value"], problems
    assert fragment in problems[0].message


@pytest.mark.parametrize(
    "element",
    [
        '<mj-text color="rgba(0,0,0,0.5)" line-height="22px">x</mj-text>',
        '<mj-text color="Navy" line-height="120%" font-size="13.5px">x</mj-text>',
        '<mj-text letter-spacing="-1px" padding="10px 25px 0px">x</mj-text>',
        '<mj-image src="https://e.org/a.png" alt="" height="120px" border-radius="50%" />',
    ],
)
def test_valid_values(element: str) -> None:
    assert lint_mjml(wrap(element)) == []


def test_unitless_zero_in_padding_shorthand_is_the_trap() -> None:
    bad = wrap('<mj-image padding="0 24px" src="https://e.org/a.png" alt="a" />')
    (problem,) = lint_mjml(bad)
    assert problem.code == "mjml.unitless-zero"
    assert "write 0px" in problem.message
    assert '"0px 24px"' in problem.message
    # The reason for the rule, measured: MRML loses the 24px when computing the image width.
    assert 'width="600"' in mjml.mjml2html(bad)
    good = wrap('<mj-image padding="0px 24px" src="https://e.org/a.png" alt="a" />')
    assert lint_mjml(good) == []
    assert 'width="552"' in mjml.mjml2html(good)


def test_unitless_zero_alone_is_fine_and_other_shorthands_are_checked() -> None:
    assert lint_mjml(wrap('<mj-text padding="0">x</mj-text>')) == []
    problems = lint_mjml(wrap('<mj-button href="#" inner-padding="10px 0">x</mj-button>'))
    assert codes(problems) == ["mjml.unitless-zero"]
    section = '<mjml><mj-body><mj-section padding="0 24px"></mj-section></mj-body></mjml>'
    assert codes(lint_mjml(section)) == ["mjml.unitless-zero"]


@pytest.mark.parametrize(
    ("src", "fragment"),
    [
        (
            "<mjml><mj-body><mj-section><mj-text>x</mj-text></mj-section></mj-body></mjml>",
            "<mj-text> is not allowed in <mj-section>; it belongs in <mj-column> or <mj-hero>",
        ),
        (
            "<mjml><mj-body><mj-column><mj-text>x</mj-text></mj-column></mj-body></mjml>",
            "<mj-column> is not allowed in <mj-body>",
        ),
        (
            "<mjml><mj-body><mj-wrapper><mj-column></mj-column></mj-wrapper></mj-body></mjml>",
            "<mj-column> is not allowed in <mj-wrapper>",
        ),
        (
            "<mjml><mj-head><mj-section></mj-section></mj-head></mjml>",
            "<mj-section> is not allowed in <mj-head>",
        ),
        (
            "<mjml><mj-body><mj-all padding='0px' /></mj-body></mjml>",
            "<mj-all> belongs inside <mj-attributes>",
        ),
    ],
)
def test_wrong_nesting(src: str, fragment: str) -> None:
    problems = lint_mjml(src)
    assert codes(problems) == ["mjml.nesting"], problems
    assert fragment in problems[0].message


def test_mj_tag_inside_ending_tag_content_is_reported_but_html_is_not() -> None:
    problems = lint_mjml(wrap("<mj-text><p>a <b>b</b></p><mj-button>c</mj-button></mj-text>"))
    assert codes(problems) == ["mjml.nesting"]
    assert "<mj-button> inside <mj-text>" in problems[0].message


def test_html_and_text_outside_ending_tags() -> None:
    problems = lint_mjml(wrap("<div><p>hello</p></div>\nloose words"))
    assert codes(problems) == ["mjml.stray-content", "mjml.stray-content"]
    assert "HTML <div>" in problems[0].message
    assert "'loose words'" in problems[1].message
    assert problems[1].location == Location(MJML_PATH, 5, 1)


def test_bare_less_than_is_reported_where_mrml_gives_no_position() -> None:
    src = wrap("<mj-text>\n  1 < 2</mj-text>")
    (problem,) = lint_mjml(src)
    assert problem.code == "mjml.bare-lt"
    assert problem.location == Location(MJML_PATH, 5, 5)
    with pytest.raises(ValueError, match="unable to parse"):
        mjml.mjml2html(src)
    assert lint_mjml(wrap("<mj-text>1 &lt; 2</mj-text>")) == []


@pytest.mark.parametrize(
    ("content", "fragment", "at"),
    [
        ("<p>one<br>two", "<p> inside <mj-text> is not closed before </mj-text>", (4, 10)),
        ("a</p>", "</p> inside <mj-text> closes nothing", (4, 11)),
        ("<!--[if mso]><table><![endif]-->", "<table> inside <mj-text> is not closed", (4, 23)),
    ],
)
def test_unbalanced_html_in_ending_tag_content(
    content: str, fragment: str, at: tuple[int, int]
) -> None:
    src = wrap(f"<mj-text>{content}</mj-text>")
    (problem,) = lint_mjml(src)
    assert problem.code == "mjml.html-balance"
    assert fragment in problem.message
    assert problem.location == Location(MJML_PATH, *at)
    # MRML fails on each of these; the lint finding is what says where.
    with pytest.raises(ValueError):
        mjml.mjml2html(src)


def test_unclosed_tag() -> None:
    src = (
        "<mjml><mj-body><mj-section><mj-column><mj-text>x</mj-column></mj-section></mj-body></mjml>"
    )
    problems = lint_mjml(src)
    assert codes(problems) == ["mjml.unclosed"]
    assert "<mj-text> is not closed before </mj-column>" in problems[0].message


def test_undefined_mj_class() -> None:
    head = '<mj-attributes><mj-class name="muted" color="#777" /></mj-attributes>'
    problems = lint_mjml(wrap('<mj-text mj-class="mutd">x</mj-text>', head))
    assert codes(problems) == ["mjml.unknown-class"]
    assert "did you mean 'muted'?" in problems[0].message
    assert lint_mjml(wrap('<mj-text mj-class="muted">x</mj-text>', head)) == []


def test_attributes_in_mj_attributes_are_checked_per_component() -> None:
    head = '<mj-attributes><mj-text colr="red" /><mj-all padding="0 4px" /></mj-attributes>'
    assert codes(lint_mjml(wrap("", head))) == ["mjml.unknown-attribute", "mjml.unitless-zero"]


def test_mj_html_attributes_is_an_error_and_really_fails_mrml() -> None:
    src = wrap("", "<mj-html-attributes></mj-html-attributes>")
    assert codes(lint_mjml(src)) == ["mjml.unsupported"]
    with pytest.raises(ValueError):
        mjml.mjml2html(src)


def test_mj_style_inline_is_a_warning() -> None:
    src = wrap("", '<mj-style inline="inline">.a { color: red; }</mj-style>')
    (problem,) = lint_mjml(src)
    assert (problem.code, problem.severity) == ("mjml.style-inline", "warning")
    assert lint_mjml(wrap("", "<mj-style>.a { color: red; }</mj-style>")) == []


def test_findings_are_located_in_the_template_via_source_spans() -> None:
    src = wrap('<mj-text colour="red">x</mj-text>')
    spans = [
        SourceSpan(1, 6, "templates/default.mjml.j2", 1),
        SourceSpan(4, 4, "templates/sections/text.mjml.j2", 7),
    ]
    (problem,) = lint_mjml(src, spans)
    assert problem.location == Location("templates/sections/text.mjml.j2", 7)
    assert str(problem) == (
        "templates/sections/text.mjml.j2:7: <mj-text> has no attribute 'colour' "
        "(did you mean 'color'?) (generated MJML line 4:10)"
    )


def test_location_picks_innermost_span_and_offsets_lines() -> None:
    spans = [SourceSpan(1, 100, "outer", 1), SourceSpan(40, 50, "inner", 12)]
    mjml = "\n" * 300
    assert location(spans, mjml, 45, 3) == Location("inner", 17)
    assert location(spans, mjml, 60, 3) == Location("outer", 60)
    assert location(spans, mjml, 200, 3) == Location(MJML_PATH, 200, 3)


def test_source_of_finds_the_exact_template_line_despite_jinja_blocks() -> None:
    template = (
        "<mj-section>\n"  # 1
        "  <mj-column>\n"  # 2
        "    {% if section.title %}\n"  # 3: prints nothing
        "    {% endif %}\n"  # 4: prints nothing
        '    <mj-image src="{{ section.src }}" alt="" />\n'  # 5
        '    <mj-text colour="red">{{ section.body }}</mj-text>\n'  # 6
        "  </mj-column>\n"
        "</mj-section>\n"
    )
    mjml_src = (
        "<mjml><mj-body>\n"
        "<mj-section>\n"
        "  <mj-column>\n"
        '    <mj-image src="https://e.org/a.png" alt="" />\n'
        '    <mj-text colour="red">Salut</mj-text>\n'
        "  </mj-column>\n"
        "</mj-section>\n"
        "</mj-body></mjml>\n"
    )
    spans = [SourceSpan(2, 7, "templates/sections/x.mjml.j2", 1)]
    texts = {"templates/sections/x.mjml.j2": template}
    # Without the template text the estimate is off by the two Jinja-only lines.
    (estimated,) = lint_mjml(mjml_src, spans)
    assert estimated.location == Location("templates/sections/x.mjml.j2", 4)
    (exact,) = lint_mjml(mjml_src, spans, texts.get)
    assert exact.location == Location("templates/sections/x.mjml.j2", 6)
    # A line with {{ }} output is matched on its literal parts.
    assert location(spans, mjml_src, 4, 5, texts.get) == Location("templates/sections/x.mjml.j2", 5)
