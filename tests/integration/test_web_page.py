"""The web page in a real browser (Debian's chromium, headless): draw a digit, see the answer."""

import pytest

from ..serving_helpers import chromium_page, running_service

pytestmark = [pytest.mark.integration, pytest.mark.slow]


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


def test_drawing_a_one_shows_its_prediction(page):
    draw(page, [[(0.5, 0.15), (0.5, 0.85)]])
    page.locator("#confidence").filter(has_text="confidence").wait_for(timeout=15_000)
    assert page.locator("#digit").inner_text() == "1"
    assert page.locator("#top3 li").count() == 3
    assert page.locator("#bars div").count() == 10


def test_drawing_a_seven_shows_its_prediction(page):
    draw(page, [[(0.2, 0.2), (0.8, 0.2), (0.45, 0.85)]])
    page.locator("#confidence").filter(has_text="confidence").wait_for(timeout=15_000)
    assert page.locator("#digit").inner_text() == "7"
