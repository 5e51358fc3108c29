"""Image folders: natural sort, labels, decoding, bad input; the synthetic generator."""
import io
import os

import numpy as np
import pytest
import torch
from PIL import Image

from facenms.data import ImageFolderDataset, natural_key, open_dataset, synthetic


def png(color, size=(5, 4), mode="RGB"):
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, format="PNG")
    return buf.getvalue()


def tree(root, spec):
    for rel, data in spec.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if data is None:
            p.mkdir(exist_ok=True)
        else:
            p.write_bytes(data)
    return root


def test_natural_sort_and_labels(tmp_path):
    tree(tmp_path, {
        "id10/a.png": png((1, 2, 3)),
        "id2/img10.png": png((4, 5, 6)),
        "id2/img2.PNG": png((7, 8, 9)),
        "id2/.hidden.png": b"x", "id2/notes.txt": b"x",
        "id1/x.png": png((0, 0, 0)),
        "README": b"not an identity",
        ".cache/y.png": png((0, 0, 0)),
    })
    ds = open_dataset(tmp_path)
    assert isinstance(ds, ImageFolderDataset)
    assert ds.classes == ["id1", "id2", "id10"] and ds.num_classes == 3
    assert [ds.name(i) for i in range(len(ds))] == \
        ["id1/x.png", "id2/img2.PNG", "id2/img10.png", "id10/a.png"]
    assert ds.labels.tolist() == [0, 1, 1, 2] and ds.labels.dtype == np.int64
    assert ds.decode(1)[0, 0].tolist() == [7, 8, 9]
    x, y = ds[3]
    assert x.dtype == torch.uint8 and x.shape == (3, 4, 5) and y == 2
    assert x[:, 0, 0].tolist() == [1, 2, 3]
    assert ds.read_bytes(0) == (tmp_path / "id1/x.png").read_bytes()


def test_natural_key():
    names = ["b", "a10", "a2", "A1", "a02", "10", "9"]
    assert sorted(names, key=natural_key) == ["9", "10", "A1", "a02", "a2", "a10", "b"]


def test_gray_and_rgba_become_rgb(tmp_path):
    tree(tmp_path, {"p/g.png": png(200, mode="L"), "p/r.png": png((1, 2, 3, 4), mode="RGBA")})
    ds = ImageFolderDataset(tmp_path)
    assert ds.decode(0).shape == (4, 5, 3) and ds.decode(0)[0, 0].tolist() == [200] * 3
    assert ds.decode(1)[0, 0].tolist() == [1, 2, 3]


def test_empty_identity_folder(tmp_path):
    tree(tmp_path, {"a/1.png": png(0), "b/notes.txt": b"x", "c": None})
    with pytest.raises(ValueError, match=r"/b: identity folder has no images"):
        open_dataset(tmp_path)


def test_no_identity_folders(tmp_path):
    tree(tmp_path, {"1.png": png(0)})
    with pytest.raises(ValueError, match="no identity folders"):
        open_dataset(tmp_path)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        open_dataset(tmp_path / "nowhere")


def test_image_fails_to_decode(tmp_path):
    tree(tmp_path, {"a/1.png": png(0), "a/2.jpg": b"\xff\xd8garbage"})
    ds = open_dataset(tmp_path)
    with pytest.raises(ValueError, match=r"a/2\.jpg: image fails to decode"):
        ds[1]
    with pytest.raises(IndexError):
        ds.decode(2)


def test_synthetic_folder_and_recordio_agree(tmp_path):
    kw = dict(num_identities=11, images_per_identity=(2, 4), size=16, seed=3)
    folder = open_dataset(synthetic.make_image_folder(tmp_path / "img", **kw))
    rec = open_dataset(synthetic.make_recordio(tmp_path / "rec", **kw))
    assert rec.layout == "insightface" and rec.image_size == (16, 16)
    assert folder.num_classes == rec.num_classes == 11
    np.testing.assert_array_equal(folder.labels, rec.labels)
    assert folder.classes[:3] == ["id0", "id1", "id2"] and folder.classes[-1] == "id10"
    for i in range(len(folder)):
        assert folder.read_bytes(i) == rec.read_bytes(i)
    assert {os.path.splitext(folder.name(i))[1] for i in range(len(folder))} == {".png", ".jpg"}
    assert folder.decode(0).shape == (16, 16, 3)
    # near-duplicates exist: some pair of one identity is much closer than identities are
    x = np.stack([folder.decode(i).astype(np.float32).ravel() for i in range(len(folder))])
    d = np.linalg.norm(x[:, None] - x[None], axis=2)
    same = folder.labels[:, None] == folder.labels[None]
    np.fill_diagonal(d, np.inf)
    assert d[same].min() < 0.25 * d[~same].min()
