"""pytest-benchmark: facenms against numpy, torch and faiss on one synthetic set.

    pytest bench/test_speed.py            # 200k faces, d=512
    FACENMS_BENCH_FACES=50000 pytest bench/test_speed.py

The closing table gives the speed-up of facenms over each baseline measured
in the same run. facenms is timed on the whole select() (grouping, ranking,
suppression). Each baseline is timed twice: on the whole job (grouping and
ranking in plain numpy first), and on the similarity + suppression alone,
given facenms's ranking.
"""
import os

import numpy as np
import pytest
import torch

import facenms
import speed_baselines as sb
from facenms.eval.embeddings import webface_like

FACES = int(os.environ.get("FACENMS_BENCH_FACES", 200_000))
T = 0.7


@pytest.fixture(scope="module")
def data():
    x, labels = webface_like(FACES, dim=512, seed=0)
    return x, labels, sb.ranked_groups(x, labels)


def _as(x, dtype):
    return {"fp32": x, "fp16": x.astype(np.float16),
            "bf16": torch.from_numpy(x).bfloat16()}[dtype]


@pytest.mark.parametrize("dtype", ["fp32", "fp16", "bf16"])
def test_facenms_threshold(benchmark, record, data, dtype):
    x, labels, _ = data
    xs = _as(x, dtype)
    keep = benchmark.pedantic(facenms.select, args=(xs, labels), kwargs=dict(threshold=T),
                              rounds=3, warmup_rounds=1)
    benchmark.extra_info["kept"] = len(keep)
    record(benchmark, "threshold %.2f" % T, "facenms %s" % dtype)


@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
def test_facenms_ratio(benchmark, record, data, dtype):
    x, labels, _ = data
    keep, info = benchmark.pedantic(facenms.select, args=(_as(x, dtype), labels),
                                    kwargs=dict(ratio=0.6, return_info=True), rounds=3,
                                    warmup_rounds=1)
    assert abs(info.ratio - 0.6) <= 0.001
    benchmark.extra_info.update(passes=info.passes, ratio=info.ratio)
    record(benchmark, "ratio 0.60", "facenms %s" % dtype)


@pytest.mark.parametrize("whole", [True, False], ids=["whole job", "given the ranking"])
@pytest.mark.parametrize("name", ["numpy", "torch", "faiss"])
def test_baseline_threshold(benchmark, record, data, name, whole):
    if name == "faiss":
        pytest.importorskip("faiss")
    x, labels, groups = data
    fn = {"numpy": sb.numpy_nms, "torch": sb.torch_nms, "faiss": sb.faiss_nms}[name]
    if whole:
        keep = benchmark.pedantic(sb.whole_job(fn), args=(x, labels, T), rounds=2)
    else:
        keep = benchmark.pedantic(fn, args=(x, groups, T), rounds=2)
    want = facenms.select(x, labels, threshold=T)
    # the same rule: the kept sets agree up to float rounding at the threshold
    assert len(np.setxor1d(keep, want)) <= 1e-4 * len(x)
    record(benchmark, "threshold %.2f" % T, "%s per identity, %s" % (
        name, "whole job" if whole else "given the ranking"))
