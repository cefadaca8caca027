"""Every URL and text the kernel puts into HTML is escaped: a URL cannot close its attribute or open a tag."""

from __future__ import annotations

from html.parser import HTMLParser

from mlflow_oidc_jupyter.kernel.markup import link

HOSTILE_URL = """https://idp.example.org/logout?next="><script>alert(1)</script>&x='y'"""


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text += data


def test_a_link_keeps_a_hostile_url_and_text_inside_one_anchor():
    parsed = _Tags()
    parsed.feed(link(HOSTILE_URL, "<b>Sign & 'out'</b>"))
    assert parsed.tags == [("a", {"href": HOSTILE_URL, "target": "_blank", "rel": "noopener noreferrer"})]
    assert parsed.text == "<b>Sign & 'out'</b>"


def test_no_quote_or_angle_bracket_of_the_url_stands_unescaped():
    markup = link(HOSTILE_URL, "x")
    href = markup.split('href="', 1)[1].split('"', 1)[0]
    assert not set("\"'<>") & set(href)
    assert "&amp;x=" in href
