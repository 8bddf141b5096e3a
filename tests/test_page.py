"""The page at / in a real browser (the system's Chromium, headless, driven by Selenium): a
sentence typed in comes back translated, its attention and each layer's gates drawn with a row per
token, labels as text (no SentencePiece "▁"), colour scales whose ends are the data's, every line
selectable, and two models side by side."""

from __future__ import annotations

import shutil
from contextlib import contextmanager

import httpx
import pytest
from conftest import multi30k_lines, serving

from nmt.serving.serve import Limits, create_app
from nmt.translate import Translator

LIMITS = Limits(
    max_lines=8,
    max_gate_lines=4,
    max_chars=400,
    max_body_bytes=8000,
    max_beam=6,
    max_output_len=80,
    max_output_ratio=2.0,
    max_work=20_000,
    max_decode_s=60.0,
    preempt_after_s=60.0,
    timeout_s=60.0,
    window_ms=5.0,
    batch_tokens=4000,
)


@contextmanager
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    options.add_argument("--window-size=1600,1200")
    options.binary_location = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))
    try:
        yield driver
    finally:
        driver.quit()


def translate_on(driver, url: str, lines: list[str], models: int = 1) -> None:
    """Load the page, type ``lines`` and translate; wait for every model's answer."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(f"{url}/")
    wait = WebDriverWait(driver, 60)
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "section.model p.about")) == models)
    box = driver.find_element(By.ID, "text")
    box.clear()
    box.send_keys("\n".join(lines))
    driver.find_element(By.ID, "go").click()
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "section.model ol.out")) == models)


def figures(driver, kind: str, within=None):
    from selenium.webdriver.common.by import By

    return (within or driver).find_elements(By.CSS_SELECTOR, f'figure.map[data-kind="{kind}"]')


# What a heatmap holds, read in one round trip to the browser (an attribute at a time would be
# one each): its rows' pieces, its columns' labels, its cells' values, its scale's ends.
READ = """
const figure = arguments[0];
const heads = [...figure.querySelectorAll("thead th")].slice(1);
const rows = [...figure.querySelectorAll("tbody tr")];
const scale = figure.querySelector(".scale");
return {
  rows: rows.map((r) => r.querySelector("th").dataset.piece),
  shown: rows.map((r) => r.querySelector("th").textContent),
  columns: heads.map((h) => h.dataset.piece || h.textContent),
  values: rows.map((r) => [...r.querySelectorAll("td")].map((td) => Number(td.dataset.value))),
  low: Number(scale.dataset.min),
  high: Number(scale.dataset.max),
};
"""


def table_of(figure) -> tuple[list[str], list[str], list[list[float]]]:
    """A heatmap's row pieces, column labels and cell values, as the page holds them."""
    got = figure.parent.execute_script(READ, figure)
    return got["rows"], got["columns"], got["values"]


def extremes(figure) -> tuple[float, float]:
    got = figure.parent.execute_script(READ, figure)
    return got["low"], got["high"]


def labels(figure) -> list[str]:
    return figure.parent.execute_script(READ, figure)["shown"]


@pytest.fixture(scope="module")
def page(tiny_run, tiny_run_b):
    """(URL of one model's page, URL of two models' page, translators by name): PyTorch models
    (the gates are traced in PyTorch), fp32 (the page's numbers are compared with the API's)."""
    first = Translator.from_run_dir(tiny_run, device="cpu", precision="fp32", backend="torch")
    second = Translator.from_run_dir(tiny_run_b, device="cpu", precision="fp32", backend="torch")
    models = {"gru": first, "gru seed 2": second}
    with (
        serving(create_app({"gru": first}, LIMITS)) as one,
        serving(create_app(models, LIMITS)) as two,
    ):
        yield one, two, models


def test_attention_and_gates_of_a_sentence(page):
    """One model: the translation as the translator gives it; attention with a row per output
    piece and a column per source piece, shown as text; each layer's gates with a row per source
    piece (encoder) or output piece (decoder) and a column per gate of the cell, with their
    meanings; every colour scale's ends the smallest and largest value drawn; a gate opened unit
    by unit."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, _, models = page
    translator = models["gru"]
    sentence = multi30k_lines("test_2016_flickr", "en", 1)[0]
    (expected,) = translator.translate_full([sentence])
    with browser() as driver:
        translate_on(driver, url, [sentence])
        (item,) = driver.find_elements(By.CSS_SELECTOR, "section.model ol.out li")
        assert item.text == " ".join(expected.texts[0].split())  # as HTML shows white space

        (attention,) = figures(driver, "attention")
        rows, columns, weights = table_of(attention)
        assert rows == translator.target_pieces(expected.hyps[0])  # every output piece, </s>
        assert columns == expected.src_pieces + ["</s>"]
        assert not any("▁" in label for label in labels(attention))  # a boundary, not a glyph
        assert attention.find_element(By.CLASS_NAME, "axis-x").text == "source pieces"
        assert attention.find_element(By.CLASS_NAME, "axis-y").text == "translation pieces"
        low, high = extremes(attention)
        assert (low, high) == (min(map(min, weights)), max(map(max, weights)))

        gates = figures(driver, "gates")
        assert [g.find_element(By.TAG_NAME, "figcaption").text.split(":")[0] for g in gates] == [
            "encoder layer 1, forward",
            "encoder layer 1, backward",
            "decoder layer 1",
        ]
        for figure, side_rows in zip(
            gates, [columns, columns, rows], strict=True
        ):  # the encoder's rows: source pieces; the decoder's: output pieces
            got_rows, names, values = table_of(figure)
            assert got_rows == side_rows and names == ["update", "reset"]
            low, high = extremes(figure)
            assert (low, high) == (min(map(min, values)), max(map(max, values)))
            assert all(0 < v < 1 for row in values for v in row)
        meanings = driver.find_element(By.CSS_SELECTOR, "dl.meanings").text
        assert "share of the old state kept" in meanings and "share of h the candidate" in meanings

        gates[2].find_elements(By.CSS_SELECTOR, "thead th.gate")[0].click()  # decoder, update
        WebDriverWait(driver, 10).until(lambda d: figures(d, "units"))
        (units,) = figures(driver, "units")
        unit_rows, unit_columns, unit_values = table_of(units)
        assert unit_rows == rows and len(unit_columns) == 64  # the tiny run's decoder units
        means = table_of(gates[2])[2]
        for row, mean in zip(unit_values, means, strict=True):
            assert sum(row) / len(row) == pytest.approx(mean[0], abs=2e-3)


def test_every_line_can_be_drawn(page):
    """Two lines: the line chooser draws line 2's attention and gates, not line 1's."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    url, _, models = page
    lines = multi30k_lines("test_2016_flickr", "en", 2)
    second = models["gru"].translate_full(lines)[1]
    with browser() as driver:
        translate_on(driver, url, lines)
        Select(driver.find_element(By.ID, "line")).select_by_index(1)
        (attention,) = figures(driver, "attention")
        assert "line 2" in attention.find_element(By.TAG_NAME, "figcaption").text
        rows, columns, _ = table_of(attention)
        assert rows == models["gru"].target_pieces(second.hyps[0])
        assert columns == second.src_pieces + ["</s>"]
        encoder = figures(driver, "gates")[0]
        assert table_of(encoder)[0] == second.src_pieces + ["</s>"]


def test_two_models_side_by_side(page):
    """Two models served together: two columns, each with its model's translation, attention
    and gates for the same sentence."""
    from selenium.webdriver.common.by import By

    _, url, models = page
    sentence = multi30k_lines("test_2016_flickr", "en", 3)[2]
    with browser() as driver:
        translate_on(driver, url, [sentence], models=2)
        columns = driver.find_elements(By.CSS_SELECTOR, "section.model")
        assert [c.get_attribute("data-name") for c in columns] == list(models)
        for column, translator in zip(columns, models.values(), strict=True):
            (expected,) = translator.translate_full([sentence])
            (item,) = column.find_elements(By.CSS_SELECTOR, "ol.out li")
            assert item.text == " ".join(expected.texts[0].split())
            (attention,) = figures(driver, "attention", column)
            assert table_of(attention)[0] == translator.target_pieces(expected.hyps[0])
            assert len(figures(driver, "gates", column)) == 3
    assert httpx.get(f"{url}/models").json()[1]["name"] == "gru seed 2"


def test_an_empty_translation_is_marked_not_left_blank(page):
    """A model may end a sentence at once: an empty best translation, or an empty hypothesis in
    the n-best, shows as "(empty translation)" with its score, not as a bare number."""
    from selenium.webdriver.common.by import By

    url, _, _ = page
    with browser() as driver:
        translate_on(driver, url, ["A dog runs."])
        driver.execute_script(  # the answer as the service gives it for such a model
            "answers[0].translations = [[{text: '', score: -1.25}, {text: 'Ein Hund.', score: -2.5}]];"
            "render();"
        )
        items = driver.find_elements(By.CSS_SELECTOR, "section.model ol.out ul li")
        assert [i.text for i in items] == ["(empty translation) -1.250", "Ein Hund. -2.500"]
        driver.execute_script("answers[0].translations = ['']; render();")
        (item,) = driver.find_elements(By.CSS_SELECTOR, "section.model ol.out li")
        assert item.text == "(empty translation)"
