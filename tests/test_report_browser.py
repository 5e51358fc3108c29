"""The report page in a real browser (headless Chromium, driven over WebDriver): every image
loads from disk, the console stays clean, nothing is fetched from a network, the filter
works, and a 1280x800 screenshot is saved ($FACENMS_ARTIFACTS, default tests/artifacts/).
Skips, with the reason, where Chromium or chromedriver is missing."""
import os

import numpy as np
import pytest
from PIL import Image

import facenms
from facenms.data import open_dataset, synthetic
from facenms.pipeline.report import write_report

from webdriver import Browser, find

TOOLS, WHY = find()
pytestmark = pytest.mark.skipif(TOOLS is None, reason=str(WHY))
ARTIFACTS = os.environ.get("FACENMS_ARTIFACTS") or os.path.join(os.path.dirname(__file__),
                                                                 "artifacts")

ALL_LOADED = """
return Array.from(document.images).filter(function (i) { return !i.complete; }).length;
"""
IMAGES = """
return Array.from(document.images).map(function (i) {
  return [i.getAttribute('src'), i.naturalWidth, i.alt]; });
"""
VISIBLE = """
return Array.from(document.querySelectorAll('#galleries article')).filter(function (a) {
  return a.offsetParent !== null; }).map(function (a) { return a.id; });
"""


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser")
    imgs = synthetic.make_image_folder(str(root / "imgs"), num_identities=16,
                                       images_per_identity=(3, 10), size=48)
    ds = open_dataset(imgs)
    with open(ds.path(5), "wb") as f:  # one undecodable image: its placeholder must load
        f.write(b"not an image")
    labels = np.asarray(ds.labels)
    rng = np.random.default_rng(1)
    x = (rng.normal(size=(labels.max() + 1, 16))[labels]
         + 0.5 * rng.normal(size=(len(labels), 16))).astype(np.float32)
    keep, info = facenms.select(x, labels, threshold=0.9, return_info=True)
    issues = np.array([3, int(np.flatnonzero(labels == 4)[0])])
    paths = write_report(root / "report", x, labels, keep, threshold=0.9, info=info,
                         dataset=ds, label_issues=issues, sample_pairs=1000,
                         sample=(3, 3, 4))
    return paths["index"], labels


@pytest.fixture(scope="module")
def browser():
    b = Browser(*TOOLS, size=(1280, 800))
    yield b
    b.close()


def _load(browser, path):
    browser.get("file://" + os.path.abspath(path))
    for _ in range(200):
        if browser.js("return document.readyState") == "complete" and \
                browser.js(ALL_LOADED) == 0:
            return
    raise AssertionError("the page did not finish loading")


def test_page_in_chromium(browser, page):
    index, labels = page
    _load(browser, index)
    images = browser.js(IMAGES)
    assert len(images) > 20
    broken = [src for src, w, _ in images if not w]
    assert broken == [], "images that did not load: %s" % broken[:5]
    assert all(alt for _, _, alt in images)
    errors = [e for e in browser.console() if e.get("level") in ("SEVERE", "ERROR")]
    assert errors == [], errors
    fetched = browser.js("return performance.getEntriesByType('resource')"
                         ".map(function (e) { return e.name; })")
    assert all(u.startswith("file://") for u in fetched), fetched  # (file:// is not timed)
    assert all(src.startswith("file://") for src in browser.js(
        "return Array.from(document.querySelectorAll('[src],[href]')).map(function (e) {"
        " return e.src || e.href; })") if not src.startswith("file://" + index))
    shot = browser.screenshot(os.path.join(ARTIFACTS, "report_1280x800.png"))
    with Image.open(shot) as im:
        assert im.size == (1280, 800)


def test_filter(browser, page):
    index, labels = page
    _load(browser, index)
    every = browser.js(VISIBLE)
    assert len(every) >= 5
    assert browser.js("return document.getElementById('filterbox').hidden") is False
    assert browser.js("return document.getElementById('filter').tabIndex") >= 0
    browser.type("#filter", "random")
    shown = browser.js(VISIBLE)
    assert 0 < len(shown) < len(every)
    assert all("random" in browser.js("return document.getElementById(arguments[0])"
                                      ".getAttribute('data-filter')", a) for a in shown)
    assert browser.js("return document.getElementById('filtercount').textContent") == \
        "%d identities shown" % len(shown)
    browser.clear("#filter")
    browser.type("#filter", browser.js("return document.getElementById(arguments[0])"
                                       ".getAttribute('data-filter')", every[0]))
    assert browser.js(VISIBLE) == [every[0]]
    browser.clear("#filter")
    browser.type("#filter", "no such identity")
    assert browser.js(VISIBLE) == []
    browser.clear("#filter")  # clear fires no input event: the count may lag; typing does not
    browser.type("#filter", " ")
    assert browser.js(VISIBLE) == every


def test_readable_with_javascript_off(page):
    index, _ = page
    b = Browser(*TOOLS, size=(1280, 800), scripts=False)
    try:
        _load(b, index)
        assert b.js("return document.getElementById('filtercount').textContent") == ""
        assert b.js("return document.getElementById('filterbox').hidden") is True
        assert len(b.js(VISIBLE)) >= 5  # every gallery shown, no control that cannot work
        assert [src for src, w, _ in b.js(IMAGES) if not w] == []
    finally:
        b.close()
