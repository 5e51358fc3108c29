"""Subprocess entry point for the proxy / extraction tests that need real
separate processes: torchrun ranks, and an extraction that gets SIGKILLed.

    python pipeline_worker.py proxy   DATA OUT_DIR [--then-extract OUT.npy]
    python pipeline_worker.py extract DATA OUT.npy MODEL [--delay S]

DATA: a tinyfaces .npz, or a dataset path (RecordIO, image folders).

MODEL "tiny" is a seeded tiny iresnet built here (same weights in every
process); --delay sleeps that long per batch so a test can kill mid-run.
"""
import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import torch  # noqa: E402

import tinyfaces  # noqa: E402
from facenms.pipeline.extract import extract  # noqa: E402
from facenms.models import IResNet  # noqa: E402
from facenms.pipeline.proxy import train_proxy  # noqa: E402

TINY = dict(layers=(1, 1, 1, 1), width=8)


class SlowNet(IResNet):
    """A tiny iresnet whose forward may sleep; the delay is not part of its weights."""
    delay = 0.0

    def forward(self, x):
        time.sleep(self.delay)
        return super().forward(x)


def tiny_model(delay=0.0):
    torch.manual_seed(0)
    m = SlowNet(embedding_size=16, input_size=32, **TINY)
    m.delay = delay
    return m


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("stage", choices=("proxy", "extract"))
    ap.add_argument("data")
    ap.add_argument("out")
    ap.add_argument("model", nargs="?")
    ap.add_argument("--then-extract", metavar="OUT.npy")
    ap.add_argument("--delay", type=float, default=0.0)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--amp", default="bf16")
    a = ap.parse_args()
    # a .npz of tinyfaces, or any dataset path for facenms.data.open_dataset
    ds = tinyfaces.load(a.data) if a.data.endswith(".npz") else a.data
    if a.stage == "proxy":
        ck = train_proxy(ds, a.out, fraction=1.0, backbone="iresnet", model_kwargs=TINY,
                         embedding_size=16, input_size=32, epochs=3,
                         batch_size=a.batch_size, lr=0.1, workers=0, progress=False)
        if a.then_extract:  # a second stage in the same processes and process group
            extract(ds, ck, a.then_extract, batch_size=a.batch_size, workers=0,
                    progress=False)
    else:
        model = tiny_model(a.delay) if a.model == "tiny" else a.model
        extract(ds, model, a.out, batch_size=a.batch_size, workers=0,
                amp=None if a.amp == "none" else a.amp, progress=False,
                sync_every=0.0)


if __name__ == "__main__":
    main()
