"""Face datasets: image folders and insightface / im2rec RecordIO, behind one interface.

    ds = facenms.data.open_dataset("faces_webface/")   # or a .rec, or a folder tree
    len(ds), ds.labels, ds.num_classes
    ds.read_bytes(i), ds.decode(i), ds.name(i)
    img, label = ds[i]            # uint8 3 x H x W tensor, int
"""
import os

from ..io import recover
from .base import FaceDataset, decode_image
from .imagefolder import ImageFolderDataset, natural_key
from .recdataset import RecordDataset, read_property, write_face_recordio
from .recindex import build_index
from .recordio import IRHeader, RecordIO, RecordIOWriter, pack, unpack

__all__ = ["open_dataset", "FaceDataset", "ImageFolderDataset", "RecordDataset",
           "RecordIO", "RecordIOWriter", "IRHeader", "pack", "unpack", "read_property",
           "write_face_recordio", "decode_image", "natural_key", "build_index"]


def open_dataset(path, require_property=False):
    """A FaceDataset for `path`:

    - a .rec file (its .idx beside it), or a directory holding train.rec and
      train.idx -> RecordDataset (insightface or im2rec layout, detected);
    - any other directory -> ImageFolderDataset (one folder per identity).
    """
    path = os.fspath(path)
    # a folder swap that a dead process left half done (only where renameat2 is missing)
    recover(os.path.dirname(os.path.abspath(path)))
    if not os.path.exists(path):
        raise FileNotFoundError("dataset %s not found" % path)
    if os.path.isdir(path):
        rec = os.path.join(path, "train.rec")
        if os.path.isfile(rec):
            return RecordDataset(rec, require_property=require_property)
        if os.path.exists(os.path.join(path, "train.idx")):
            raise FileNotFoundError("%s has train.idx but no train.rec: the RecordIO data file "
                                    "%s is missing" % (path, rec))
        return ImageFolderDataset(path)
    if path.endswith(".rec"):
        return RecordDataset(path, require_property=require_property)
    if path.endswith(".idx"):
        return RecordDataset(path[:-4] + ".rec", path, require_property=require_property)
    raise ValueError("%s: expected a directory of identity folders, a .rec file or a "
                     "directory with train.rec" % path)
