"""The report's HTML page: the faces, the suppressor pairing (against facenms.reference),
the bounds, the label issues, bad input, atomic writes and the CLI."""
import os
import re
from html.parser import HTMLParser

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import facenms
from facenms import cli
from facenms import reference
from facenms.data import open_dataset, synthetic
from facenms.pipeline import gallery, html_report
from facenms.pipeline.report import write_report

T = 0.9


class Page(HTMLParser):
    """The <img> tags (their attributes) and the text of a page."""

    def __init__(self, text):
        super().__init__()
        self.imgs, self.text, self.ids = [], [], set()
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.imgs.append(a)
        if "id" in a:
            self.ids.add(a["id"])

    def handle_data(self, data):
        self.text.append(data)


def features_for(labels, seed=0, dim=16, noise=0.5):
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(int(labels.max()) + 1, dim))
    return (c[labels] + noise * rng.normal(size=(len(labels), dim))).astype(np.float32)


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("faces") / "imgs")
    synthetic.make_image_folder(root, num_identities=14, images_per_identity=(3, 12), size=32)
    ds = open_dataset(root)
    labels = np.asarray(ds.labels)
    x = features_for(labels)
    keep, info = facenms.select(x, labels, threshold=T, return_info=True)
    return root, ds, x, labels, keep, info


def _page(paths):
    return open(paths["index"], encoding="utf-8").read()


def test_page_without_dataset(tmp_path, faces):
    _, _, x, labels, keep, info = faces
    paths = write_report(tmp_path / "r", x, labels, keep, threshold=T, info=info,
                         sample_pairs=1000)
    text = _page(paths)
    page = Page(text)
    body = " ".join(page.text)
    assert "faces" in body and str(len(labels)) in body and "%.4f" % T in body
    assert "passes" in body and str(info.passes) in body
    srcs = sorted(i["src"] for i in page.imgs)
    assert srcs == sorted(os.path.basename(p) for k, p in paths.items() if p.endswith(".png"))
    assert "galleries" not in page.ids and not (tmp_path / "r" / "thumbs").exists()
    assert not re.search(r"(src|href)=\"(https?:)?//", text)  # nothing from the network


def test_page_with_dataset(tmp_path, faces):
    _, ds, x, labels, keep, info = faces
    out = tmp_path / "r"
    paths = write_report(out, x, labels, keep, threshold=T, info=info, dataset=ds,
                         sample_pairs=1000, identities=[int(labels[-1])])
    page = Page(_page(paths))
    thumbs = [i for i in page.imgs if i["src"].startswith("thumbs/")]
    assert thumbs and len({i["src"] for i in thumbs}) == len(os.listdir(out / "thumbs"))
    for i in page.imgs:
        assert os.path.isfile(out / i["src"]) and i["alt"]
    for i in thumbs:  # alt text names the face's dataset index and its label
        idx = int(re.match(r"thumbs/(\d+)\.jpg", i["src"]).group(1))
        assert i["alt"].startswith("face %d (label %d)" % (idx, labels[idx]))
    assert "id-%d" % labels[-1] in page.ids and "named" in " ".join(page.text)
    assert 'id="filter"' in _page(paths) and "<noscript" not in _page(paths)


def _reference_pairs(x, labels, keep, order_rows):
    """For each suppressed face of an identity ranked `order_rows`: the most similar kept
    face ranked before it, computed face by face with facenms.reference's similarity."""
    y = reference.unit_rows(x)
    kept = set(keep.tolist())
    out = {}
    for p, r in enumerate(order_rows):
        if r in kept:
            continue
        earlier = [q for q in order_rows[:p] if q in kept]
        if earlier:
            sims = [reference.similarity(y[r], y[q]) for q in earlier]
            out[int(r)] = (int(earlier[int(np.argmax(sims))]), max(sims))
    return out


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10 ** 6), rank=st.sampled_from(["sparsity", "centrality", "random"]),
       t=st.floats(0.3, 0.95))
def test_suppressors_match_reference(seed, rank, t):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 6, 60)
    x = features_for(labels, seed, dim=8, noise=rng.uniform(0.2, 1.0))
    keep = reference.select(x, labels, threshold=t, rank=rank, seed=seed)
    index = gallery.IdentityIndex(labels)
    kept_mask = np.zeros(len(labels), bool)
    kept_mask[keep] = True
    chosen = [(c, ["test"]) for c in range(0, len(index.uniq), 2)]  # a subset of identities
    gals = gallery.galleries(x, kept_mask, index, chosen, kept_shown=100, pairs_shown=100,
                             rank=rank, seed=seed)
    ref_order = reference.rank_order(x, labels, rank, None, seed)
    for (c, _), g in zip(chosen, gals):
        want = _reference_pairs(x, labels, keep, list(ref_order[c]))
        assert {r: by for r, by, _ in g.pairs} == {r: v[0] for r, v in want.items()}
        for r, by, sim in g.pairs:
            assert sim == pytest.approx(want[r][1], abs=1e-5) and sim > t - 1e-5


def test_suppressor_is_ranked_before_not_merely_most_similar():
    # ranked a, b, c (scores): a kept; b ~ a (0.7 > t) suppressed; c kept (0.45 to a);
    # b is more similar to c (0.8) but c comes later: b's suppressor is a.
    a = np.array([1.0, 0.0, 0.0])
    b = np.array([0.7, np.sqrt(0.51), 0.0])
    y = (0.8 - 0.7 * 0.45) / np.sqrt(0.51)
    c = np.array([0.45, y, np.sqrt(1 - 0.45 ** 2 - y ** 2)])
    x = np.stack([a, b, c]).astype(np.float32)
    labels = np.zeros(3, np.int64)
    scores = np.array([3.0, 2.0, 1.0])
    keep = reference.select(x, labels, threshold=0.6, scores=scores)
    assert keep.tolist() == [0, 2]
    y = reference.unit_rows(x)
    assert y[1] @ y[2] > y[1] @ y[0] > 0.6
    index = gallery.IdentityIndex(labels)
    mask = np.array([True, False, True])
    (g,) = gallery.galleries(x, mask, index, [(0, ["t"])], rank="scores", scores=scores)
    assert [p[:2] for p in g.pairs] == [(1, 0)]


def test_bounds(tmp_path, faces):
    _, ds, x, labels, keep, info = faces
    out = tmp_path / "r"
    paths = write_report(out, x, labels, keep, threshold=T, dataset=ds, sample_pairs=500,
                         max_thumbnails=10)
    assert len(os.listdir(out / "thumbs")) == 10
    assert "within 10 thumbnails" in _page(paths)
    plots = sum(os.path.getsize(p) for p in paths.values() if p.endswith(".png"))
    write_report(out, x, labels, keep, threshold=T, dataset=ds, sample_pairs=500,
                 max_bytes=plots + 5000)
    n = len(os.listdir(out / "thumbs"))  # the earlier report's other thumbnails are gone
    assert 0 < n < 10 and "within %d bytes" % (plots + 5000) in _page(paths)


def test_undecodable_image_gets_a_placeholder(tmp_path, faces):
    root, _, x, labels, keep, _ = faces
    import shutil
    copy = tmp_path / "imgs"
    shutil.copytree(root, copy)
    ds = open_dataset(str(copy))
    bad = int(keep[0])
    with open(ds.path(bad), "wb") as f:
        f.write(b"\xff\xd8 not a jpeg")
    paths = write_report(tmp_path / "r", x, labels, keep, threshold=T, dataset=ds,
                         identities=[int(labels[bad])], sample_pairs=500)
    page = _page(paths)
    assert "could not be decoded" in page and ds.name(bad) in page
    assert os.path.getsize(tmp_path / "r" / "thumbs" / ("%d.jpg" % bad)) > 0


def test_label_issues(tmp_path, faces):
    _, ds, x, labels, keep, _ = faces
    x = x.copy()
    i = int(np.flatnonzero(labels == 0)[0])
    x[i] = x[labels == 3].mean(axis=0)  # face i, labelled 0, looks like identity 3
    csv = tmp_path / "issues.csv"
    csv.write_text("index,label,score\n%d,0,0.9\n" % i)
    paths = write_report(tmp_path / "r", x, labels, keep, threshold=T, dataset=ds,
                         label_issues=str(csv), sample_pairs=500)
    page = Page(_page(paths))
    assert "label-issues" in page.ids
    body = " ".join(page.text)
    assert "face %d, labelled 0" % i in body and "most like 3" in body
    alts = [im["alt"] for im in page.imgs]
    assert sum("typical of 3" in a for a in alts) == 3 and any("flagged" in a for a in alts)
    paths = write_report(tmp_path / "r2", x, labels, keep, label_issues=np.array([i]),
                         sample_pairs=500)  # no dataset: a table
    assert "<table><tr><th>face</th>" in _page(paths) and "1 flagged" in _page(paths)


def test_bad_input_writes_nothing(tmp_path, faces):
    root, ds, x, labels, keep, _ = faces
    out = tmp_path / "r"
    cases = [
        (dict(dataset=ds), x[:-1], labels[:-1], keep[:-1], "has %d faces" % len(ds)),
        ({}, x, labels, np.array([0, len(labels)]), "outside"),
        ({}, x, labels, np.array(3), "1-D"),
        ({}, x, labels, keep.astype(np.float32), "integer"),
        (dict(label_issues=np.array([len(labels)])), x, labels, keep, "outside"),
        (dict(identities=[10 ** 6]), x, labels, keep, "not among the labels"),
    ]
    for kw, xx, ll, kk, msg in cases:
        if "dataset" in kw or "identities" in kw:
            kw = dict(kw, dataset=ds)
        with pytest.raises((ValueError, TypeError), match=msg):
            write_report(out, xx, ll, kk, sample_pairs=100, **kw)
    assert not out.exists()
    with pytest.raises(ValueError, match="inside the input"):
        write_report(os.path.join(root, "report"), x, labels, keep, dataset=ds)
    np.save(tmp_path / "keep.npy", keep)
    with pytest.raises(ValueError, match="must be a folder"):
        write_report(tmp_path / "keep.npy", x, labels, keep)
    issues = tmp_path / "index.html"
    issues.write_text("index\n1\n")
    with pytest.raises(ValueError, match="the output is the input"):
        write_report(tmp_path, x, labels, keep, label_issues=str(issues))


def test_failure_midway_leaves_no_file(tmp_path, faces, monkeypatch):
    _, ds, x, labels, keep, _ = faces

    def boom(*a, **k):
        raise RuntimeError("boom")
    monkeypatch.setattr(html_report, "make_thumbnails", boom)
    with pytest.raises(RuntimeError, match="boom"):
        write_report(tmp_path, x, labels, keep, dataset=ds, sample_pairs=100)
    assert os.listdir(tmp_path) == []


def test_cli(tmp_path, faces, capsys):
    root, _, x, labels, keep, info = faces
    for name, a in (("f.npy", x), ("l.npy", labels), ("k.npy", keep)):
        np.save(tmp_path / name, a)
    argv = ["report", "--features", str(tmp_path / "f.npy"), "--labels",
            str(tmp_path / "l.npy"), "--keep", str(tmp_path / "k.npy"), "--out",
            str(tmp_path / "out"), "--threshold", str(T), "--dataset", root,
            "--identity", "2", "--max-thumbnails", "50", "--sample-pairs", "500"]
    cli.main(argv)
    printed = capsys.readouterr().out
    assert "open %s" % (tmp_path / "out" / "index.html") in printed
    assert 0 < len(os.listdir(tmp_path / "out" / "thumbs")) <= 50
    np.save(tmp_path / "l.npy", labels[:-1])
    np.save(tmp_path / "f.npy", x[:-1])
    np.save(tmp_path / "k.npy", keep[keep < len(labels) - 1])
    with pytest.raises(SystemExit, match="facenms report: error: the dataset .* has"):
        cli.main(argv)


def test_rows_in_another_order_than_the_dataset(tmp_path, faces):
    """Features sorted away from the dataset's order (sort-features): each thumbnail is the
    image of its row's dataset position."""
    _, ds, x, labels, keep, _ = faces
    perm = np.random.default_rng(0).permutation(len(labels))  # row r is dataset face perm[r]
    where = np.empty_like(perm)
    where[perm] = np.arange(len(perm))
    out = tmp_path / "r"
    write_report(out, x[perm], labels[perm], np.sort(where[keep]), threshold=T, dataset=ds,
                 dataset_index=perm, sample_pairs=500)
    page = Page(_page({"index": str(out / "index.html")}))
    kept = set(keep.tolist())
    faces = [i for i in page.imgs if i["src"].startswith("thumbs/")]
    assert len(faces) > 20
    for im in faces:  # the face named is the dataset's, with the dataset's label and fate
        i, lab = map(int, re.match(r"face (\d+) \(label (\d+)\)", im["alt"]).groups())
        assert im["src"] == "thumbs/%d.jpg" % i and lab == ds.labels[i]
        if im["alt"].endswith(", kept") or "kept, suppressed it" in im["alt"]:
            assert i in kept
        elif "suppressed" in im["alt"]:
            assert i not in kept


def test_the_report_reads_the_label_issues_file_the_cleaning_writes(tmp_path):
    """label_issues.csv as facenms label-issues and facenms run write it is what the
    report's label-issue section reads, column for column."""
    from facenms.eval.embeddings import webface_like
    from facenms.pipeline.cleaning import write_label_issues
    from facenms.pipeline.html_report import load_label_issues
    from facenms.scale.dispatch import label_issues
    x, labels = webface_like(3000, dim=32, seed=3)
    x[::97] = x[np.roll(np.arange(3000), 1500)[::97]]  # other people's faces
    issues, info = label_issues(x, labels, return_info=True)
    assert len(issues)
    write_label_issues(tmp_path / "issues.csv", issues, labels, info)
    got = load_label_issues(str(tmp_path / "issues.csv"), labels)
    assert np.array_equal(got["index"], issues)
    assert np.array_equal(got["other_label"], info.other_label)
    assert np.allclose(got["other_similarity"], info.other_similarity, atol=1e-6)
