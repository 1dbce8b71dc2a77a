"""The workshop's slide deck: one HTML page, a screen per slide, figures embedded."""

import base64
import importlib.util
import re
from pathlib import Path

import matplotlib.pyplot as plt

spec = importlib.util.spec_from_file_location("slides", Path(__file__).parents[1] / "tools" / "slides.py")
slides = importlib.util.module_from_spec(spec)
spec.loader.exec_module(slides)


def test_the_deck_is_one_page_with_a_section_per_slide_its_figures_embedded_and_its_text_escaped(tmp_path):
    figure, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    path = slides.write_deck([("Title", "a < b & c", None), ("A figure", "its text", figure)], tmp_path / "deck" / "slides.html", "Deck")
    page = path.read_text(encoding="utf-8")
    assert page.count("<section>") == 2 and "<h1>Title</h1>" in page and "<h2>A figure</h2>" in page
    assert "<p>a &lt; b &amp; c</p>" in page  # text is text, never markup
    [data] = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert base64.b64decode(data).startswith(b"\x89PNG")  # nothing to fetch: the figure is in the page
    assert not plt.fignum_exists(figure.number)  # closed once drawn
