"""The web page in a real browser (Debian's chromium, headless): draw a digit, see the answer."""

import pytest

from ..serving_helpers import chromium_page, running_service

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ONE = [[(0.5, 0.15), (0.5, 0.85)]]
# One stroke (one prediction) zigzagging over the pad: ink, but no digit.
SCRIBBLE = [[(0.15, 0.2), (0.85, 0.3), (0.2, 0.45), (0.8, 0.55), (0.15, 0.7), (0.85, 0.85)]]


@pytest.fixture(scope="module")
def page_url(tmp_path_factory: pytest.TempPathFactory, trained):
    with running_service(trained.model_dir, tmp_path_factory.mktemp("page")) as url:
        yield url


@pytest.fixture
def page(page_url: str):
    with chromium_page(page_url) as page:
        yield page


def draw(page, strokes: list[list[tuple[float, float]]]) -> None:
    """Drag the mouse along each stroke (points as fractions of the pad)."""
    box = page.locator("#pad").bounding_box()
    for stroke in strokes:
        x, y = stroke[0]
        page.mouse.move(box["x"] + x * box["width"], box["y"] + y * box["height"])
        page.mouse.down()
        for x, y in stroke[1:]:
            page.mouse.move(box["x"] + x * box["width"], box["y"] + y * box["height"], steps=8)
        page.mouse.up()


def wait_for_prediction(page) -> None:
    page.locator("#confidence").filter(has_text="confidence").wait_for(timeout=15_000)


def test_drawing_a_one_shows_its_prediction(page):
    draw(page, ONE)
    wait_for_prediction(page)
    assert page.locator("#digit").inner_text() == "1"
    assert page.locator("#top3 li").count() == 3
    assert page.locator("#bars div").count() == 10


def test_drawing_a_seven_shows_its_prediction(page):
    draw(page, [[(0.2, 0.2), (0.8, 0.2), (0.45, 0.85)]])
    wait_for_prediction(page)
    assert page.locator("#digit").inner_text() == "7"


def test_a_clear_one_is_not_called_unsure(page):
    draw(page, ONE)
    wait_for_prediction(page)
    assert page.locator("#digit").inner_text() == "1"
    assert page.locator("#unsure").is_hidden()
    assert page.locator("#unsure").inner_text() == ""


def test_the_explanation_lies_over_the_drawn_digit(page):
    draw(page, ONE)
    overlay = page.locator("#overlay")
    overlay.wait_for(state="visible", timeout=15_000)
    assert overlay.get_attribute("src").startswith("data:image/png;base64,")
    assert overlay.evaluate("img => img.complete && img.naturalWidth") > 0
    pad, shown = page.locator("#pad").bounding_box(), overlay.bounding_box()
    assert pad["x"] <= shown["x"] and shown["x"] + shown["width"] <= pad["x"] + pad["width"]
    assert pad["y"] <= shown["y"] and shown["y"] + shown["height"] <= pad["y"] + pad["height"]
    assert shown["width"] > 0.9 * pad["width"] and shown["height"] > 0.9 * pad["height"]
    assert "made it a 1" in page.locator("#explanation").inner_text()


def test_clearing_the_pad_or_a_new_stroke_hides_the_explanation(page):
    overlay = page.locator("#overlay")
    draw(page, ONE)
    overlay.wait_for(state="visible", timeout=15_000)
    page.locator("#clear").click()
    assert overlay.is_hidden()
    assert page.locator("#explanation").inner_text() == ""

    draw(page, ONE)
    overlay.wait_for(state="visible", timeout=15_000)
    box = page.locator("#pad").bounding_box()
    page.mouse.move(box["x"] + 0.3 * box["width"], box["y"] + 0.5 * box["height"])
    page.mouse.down()  # drawing starts on the pad: the overlay lets the pointer through
    assert overlay.is_hidden()
    page.mouse.up()


def test_a_service_with_a_high_confidence_floor_shows_unsure(
    tmp_path_factory: pytest.TempPathFactory, trained
):
    work = tmp_path_factory.mktemp("unsure")
    with (
        running_service(trained.model_dir, work, "--confidence-floor", "1") as url,
        chromium_page(url) as page,
    ):
        draw(page, SCRIBBLE)
        wait_for_prediction(page)
        unsure = page.locator("#unsure")
        assert unsure.is_visible()
        assert unsure.inner_text().startswith("unsure: maybe ")
        assert not any(c.isdigit() for c in page.locator("#digit").inner_text())
        assert page.locator("#top3 li").count() == 3
        assert page.locator("#bars div").count() == 10
