"""Does a core set train as good a model as the full set? The Face-NMS recipe end to end.

For each seed: train a proxy on 10% of the identities, embed every training
face with it, select core sets (Face-NMS and the baselines) at each ratio,
train a fresh model on each core set and on the full set for the same number
of epochs (a 60% set gets 60% of the steps), and evaluate verification TAR at
FAR=1e-3 and 1e-4 on held-out identities, 10-fold as insightface does.

    python bench/quality/run.py                      # simulated world, full run
    python bench/quality/run.py --quick              # CI-sized check
    python bench/quality/run.py --data faces/ --pairs lfw.bin --image-size 112 112

--data takes anything facenms.data.open_dataset opens (an image folder with
one folder per identity, a .rec with its .idx, or a directory with
train.rec); --pairs an insightface verification .bin.
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))  # bench/: which.py; facenms is the installed one

import which  # noqa: E402
import facenms  # noqa: E402
from facenms import baselines  # noqa: E402
from facenms.io import AtomicFiles  # noqa: E402
from facenms.verification import evaluate, load_bin  # noqa: E402
from train import ArraySource, ImageSource, embed, train  # noqa: E402
from world import WorldConfig, make_world  # noqa: E402

METHODS = ("facenms", "random", "kcenter", "semdedup", "diffprob")
FARS = (1e-3, 1e-4)


class Task:
    """Training faces, their labels and the verification pairs of one run."""

    def __init__(self, source, labels, eval_x, pairs, issame, name, world=None):
        self.source, self.labels, self.eval_x = source, np.asarray(labels, np.int64), eval_x
        self.pairs, self.issame, self.name, self.world = pairs, issame, name, world
        self.num_classes = int(self.labels.max()) + 1


def sim_task(seed, quick):
    cfg = WorldConfig()
    if quick:
        cfg = cfg.scaled(0.1)
    w = make_world(cfg, seed=seed)
    return Task(ArraySource(w.images), w.labels, torch.from_numpy(w.eval_images), w.pairs,
                w.issame, "simulated world (seed %d): %s" % (seed, w.describe()), world=w)


def real_task(args):
    from facenms.data import open_dataset
    ds = open_dataset(args.data)
    images, issame = load_bin(args.pairs, image_size=tuple(args.image_size))
    x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
    pairs = np.arange(len(images)).reshape(-1, 2)
    return Task(ImageSource(ds, args.image_size, args.workers, args.backbone), ds.labels, x, pairs, issame,
                "%s: %d faces of %d identities; %s: %d pairs" % (
                    args.data, len(ds), ds.num_classes, args.pairs, len(issame)))


@torch.no_grad()
def eval_embed(model, x, batch=512):
    out = []
    for a in range(0, len(x), batch):
        xb = x[a:a + batch]
        e = model(xb)
        if xb.dim() == 4:  # images: add the flipped image's embedding, as insightface does
            e = e + model(xb.flip(3))
        out.append(torch.nn.functional.normalize(e.float(), dim=1))
    return torch.cat(out).numpy()


def verify(model, task):
    e = eval_embed(model, task.eval_x)
    scores = np.einsum("ij,ij->i", e[task.pairs[:, 0]], e[task.pairs[:, 1]])
    return evaluate(scores, task.issame, fars=FARS)


THRESHOLDS = {}  # Face-NMS's threshold per (seed, ratio), for the report


def select(method, feats, labels, ratio, seed):
    if method == "facenms":
        keep, info = facenms.select(feats, labels, ratio=ratio, return_info=True)
        THRESHOLDS[(seed, ratio)] = info.threshold
        return keep
    if method == "random":
        return baselines.random_subset(feats, labels, ratio=ratio, seed=seed)
    return baselines.METHODS[method](feats, labels, ratio=ratio)


def run_seed(task, seed, args, log):
    rng = np.random.default_rng(seed)
    tk = dict(epochs=args.epochs, emb_dim=args.emb_dim, batch_size=args.batch_size,
              lr=args.lr, head=args.head, scale=args.scale, margin=args.margin)
    rows = []

    # 1-2. proxy on a tenth of the identities, then embed every training face
    ids = np.unique(task.labels)
    proxy_ids = np.sort(rng.choice(ids, max(2, round(args.proxy_fraction * len(ids))),
                                   replace=False))
    pidx = np.flatnonzero(np.isin(task.labels, proxy_ids))
    plabels = np.zeros_like(task.labels)
    plabels[pidx] = np.searchsorted(proxy_ids, task.labels[pidx])
    proxy, st = train(task.source, plabels, pidx, len(proxy_ids), seed=seed + 1000, **tk)
    t = time.perf_counter()
    feats = embed(proxy, task.source)
    t_extract = time.perf_counter() - t
    rp = verify(proxy, task)
    log("  proxy on %d identities (%d faces): %.1f s train, %.1f s extract; "
        "its own TAR@1e-4 %.4f" % (len(proxy_ids), len(pidx), st["wall_s"], t_extract, rp.tar[1e-4]))

    def final(name, ratio, keep, t_sel):
        model, st = train(task.source, task.labels, keep, task.num_classes, seed=seed, **tk)
        r = verify(model, task)
        row = dict(seed=seed, method=name, ratio=ratio, kept=int(len(keep)),
                   kept_ratio=len(keep) / len(task.labels),
                   identities_kept=int(len(np.unique(task.labels[keep]))),
                   select_s=t_sel, train_s=st["cpu_s"], train_wall_s=st["wall_s"], steps=st["steps"], tar=r.tar, tar_std=r.tar_std,
                   accuracy=r.accuracy, fpr=r.fpr.tolist(), tpr=r.tpr.tolist())
        if task.world is not None:  # what the selection kept, by the world's ground truth
            w = task.world
            row["mislabeled"] = float(np.mean(w.labels[keep] != w.true_labels[keep]))
            row["low_quality"] = float(np.mean(w.low_quality[keep]))
            row["sessions"] = float(len(np.unique(w.burst[keep])) / len(np.unique(w.burst)))
        rows.append(row)
        log("  %-9s %.1f  kept %5.1f%%  TAR@1e-3 %.4f  TAR@1e-4 %.4f  train %.1f s CPU  select %.2f s%s"
            % (name, ratio, 100 * row["kept_ratio"], r.tar[1e-3], r.tar[1e-4], st["cpu_s"], t_sel,
               "  sessions %.1f%% mislabeled %.1f%%" % (100 * row["sessions"],
                                                      100 * row["mislabeled"])
               if "sessions" in row else ""))
        return row, keep

    final("full", 1.0, np.arange(len(task.labels)), 0.0)
    kept_sets = {}
    for ratio in args.ratios:
        for m in args.methods:
            t = time.perf_counter()
            keep = np.asarray(select(m, feats, task.labels, ratio, seed))
            _, kept_sets[(m, ratio)] = final(m, ratio, keep, time.perf_counter() - t)
    return rows, feats, kept_sets


# ------------------------------------------------------------- summary ----

def summarise(rows):
    """Mean and spread over seeds per (method, ratio), and the paired difference to full."""
    full = {r["seed"]: r for r in rows if r["method"] == "full"}
    out = {}
    for r in rows:
        out.setdefault((r["method"], r["ratio"]), []).append(r)
    table = []
    for (m, ratio), rs in out.items():
        def stat(f):
            v = np.array([f(r) for r in rs], dtype=float)
            return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0
        e = dict(method=m, ratio=ratio, n=len(rs), kept_ratio=stat(lambda r: r["kept_ratio"]),
                 train_s=stat(lambda r: r["train_s"]), select_s=stat(lambda r: r["select_s"]))
        for f in FARS:
            e["tar_%g" % f] = stat(lambda r: 100 * r["tar"][f])
            e["delta_%g" % f] = stat(lambda r: 100 * (r["tar"][f] - full[r["seed"]]["tar"][f]))
        for k in ("mislabeled", "sessions"):
            if k in rs[0]:
                e[k] = stat(lambda r: 100 * r[k])
        table.append(e)
    order = {m: i for i, m in enumerate(("full",) + METHODS)}
    table.sort(key=lambda e: (-e["ratio"] if e["method"] == "full" else e["ratio"],
                              order.get(e["method"], 99)))
    table.sort(key=lambda e: e["method"] != "full")
    return table


def _pm(s, fmt="%.2f"):
    return (fmt + " ± %.2f") % s


def markdown(table, header):
    has_truth = "sessions" in table[0]
    cols = ["method", "ratio", "kept %", "TAR@FAR=1e-3 (%)", "TAR@FAR=1e-4 (%)",
            "Δ@1e-4 vs full", "train CPU s", "select s"]
    if has_truth:
        cols += ["sessions kept %", "mislabeled %"]
    lines = [header, "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for e in table:
        best = e["method"] == "facenms"
        cells = [("**%s**" if best else "%s") % e["method"], "%.1f" % e["ratio"],
                 "%.1f" % (100 * e["kept_ratio"][0]), _pm(e["tar_0.001"]), _pm(e["tar_0.0001"]),
                 "—" if e["method"] == "full" else _pm(e["delta_0.0001"], "%+.2f"),
                 "%.1f" % e["train_s"][0], "%.2f" % e["select_s"][0]]
        if has_truth:
            cells += ["%.1f" % e["sessions"][0], "%.2f" % e["mislabeled"][0]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def paired_markdown(rows, far=1e-4):
    """Face-NMS minus each other model, same seed (same world and initialisation)."""
    by = {(r["method"], r["ratio"], r["seed"]): 100 * r["tar"][far] for r in rows}
    ratios = sorted({r["ratio"] for r in rows if r["method"] == "facenms"})
    others = ["full"] + [m for m in METHODS[1:] if any(k[0] == m for k in by)]
    lines = ["Face-NMS minus each model at TAR@FAR=%g, paired by seed: mean ± standard error "
             "(wins / seeds)." % far, "",
             "| ratio | " + " | ".join("vs " + m for m in others) + " |",
             "|---|" + "---|" * len(others)]
    for ratio in ratios:
        cells = []
        for m in others:
            d = np.array([v - by[(m, 1.0 if m == "full" else ratio, k[2])]
                          for k, v in by.items() if k[:2] == ("facenms", ratio)
                          and (m, 1.0 if m == "full" else ratio, k[2]) in by])
            se = d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else 0.0
            cells.append("%+.2f ± %.2f (%d/%d)" % (d.mean(), se, (d > 0).sum(), len(d)))
        lines.append("| %.1f | %s |" % (ratio, " | ".join(cells)))
    return "\n".join(lines) + "\n"


def plot(table, path_png, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    full = next(e for e in table if e["method"] == "full")
    fig, axes = plt.subplots(1, 4, figsize=(19, 4.4))
    for ax, key, lab in ((axes[0], "tar_0.001", "TAR@FAR=1e-3 (%)"),
                         (axes[1], "tar_0.0001", "TAR@FAR=1e-4 (%)")):
        ax.axhline(full[key][0], color="k", ls="--", lw=1, label="full data")
        ax.axhspan(full[key][0] - full[key][1], full[key][0] + full[key][1], color="k", alpha=0.08)
        for m in METHODS:
            es = [e for e in table if e["method"] == m]
            if es:
                ax.errorbar([e["ratio"] for e in es], [e[key][0] for e in es],
                            yerr=[e[key][1] for e in es], marker="o", capsize=3, label=m,
                            lw=2.5 if m == "facenms" else 1.2)
        ax.set_xlabel("core-set ratio")
        ax.set_ylabel(lab)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    ax = axes[2]  # paired: the same seed's world and initialisation as its full-data model
    ax.axhline(0, color="k", ls="--", lw=1)
    for m in METHODS:
        es = [e for e in table if e["method"] == m]
        if es:
            ax.errorbar([e["ratio"] for e in es], [e["delta_0.0001"][0] for e in es],
                        yerr=[e["delta_0.0001"][1] / np.sqrt(e["n"]) for e in es], marker="o",
                        capsize=3, label=m, lw=2.5 if m == "facenms" else 1.2)
    ax.set_xlabel("core-set ratio")
    ax.set_ylabel("TAR@FAR=1e-4 minus full data (points)\nmean ± standard error, paired by seed")
    ax.grid(alpha=0.3)
    ax = axes[3]
    for m in METHODS:
        es = [e for e in table if e["method"] == m]
        if es:
            ax.plot([e["train_s"][0] for e in es], [e["tar_0.0001"][0] for e in es], marker="o",
                    label=m)
    ax.plot([full["train_s"][0]], [full["tar_0.0001"][0]], "k*", ms=12, label="full")
    ax.set_xlabel("training CPU time (s, mean)")
    ax.set_ylabel("TAR@FAR=1e-4 (%)")
    ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with AtomicFiles() as out:
        with out.open(path_png, "wb") as f:
            fig.savefig(f, format="png", dpi=110)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small world, one seed, one ratio")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--ratios", type=float, nargs="+", default=[0.4, 0.6, 0.8])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--emb-dim", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--head", default="cosface", choices=["cosface", "arcface"])
    p.add_argument("--scale", type=float, default=32.0)
    p.add_argument("--margin", type=float, default=0.3)
    p.add_argument("--proxy-fraction", type=float, default=0.1)
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (1 is fastest for these small models on a busy machine)")
    p.add_argument("--data", help="a real training set (image folder or RecordIO)")
    p.add_argument("--pairs", help="an insightface verification .bin (with --data)")
    p.add_argument("--image-size", type=int, nargs=2, default=[112, 112])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--backbone", default="small-cnn",
                   help="with --data: small-cnn, or a facenms.models backbone (mobilefacenet, "
                        "iresnet18, ...)")
    p.add_argument("--out", default=os.path.join(HERE, "results"))
    p.add_argument("--render", nargs="+", metavar="JSON",
                   help="only redraw results.md/.png from the results.json of earlier runs "
                        "(several: their rows are pooled, e.g. runs over different seeds)")
    p.add_argument("--report", action="store_true",
                   help="also write a facenms report of the Face-NMS 0.6 set (first seed)")
    args = p.parse_args(argv)
    if (args.data is None) != (args.pairs is None):
        p.error("--data and --pairs go together")
    if args.render:
        return render(args.render, args.out)
    if args.quick:
        args.seeds, args.ratios, args.epochs = args.seeds[:1], [0.6], min(args.epochs, 3)
    torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    t_all = time.perf_counter()

    def log(msg):
        print(msg, flush=True)

    rows = []
    for seed in args.seeds:
        task = sim_task(seed, args.quick) if args.data is None else real_task(args)
        log("seed %d: %s" % (seed, task.name))
        r, feats, kept = run_seed(task, seed, args, log)
        rows += r
        if args.report and seed == args.seeds[0] and ("facenms", 0.6) in kept:
            from facenms.pipeline.report import write_report
            evals = {"%s %.1f" % (x["method"], x["ratio"]): x for x in r
                     if x["ratio"] in (1.0, 0.6) and x["method"] in ("full", "facenms", "random")}
            write_report(os.path.join(args.out, "report"), feats, task.labels,
                         kept[("facenms", 0.6)], threshold=THRESHOLDS.get((seed, 0.6)),
                         eval_results=evals)
    cmd = ("python bench/quality/run.py " + " ".join(
        sys.argv[1:] if argv is None else argv)).strip()
    doc = {"command": cmd, "args": vars(args), "total_s": time.perf_counter() - t_all,
           "rows": [{k: ({str(a): b for a, b in v.items()} if isinstance(v, dict) else v)
                     for k, v in r.items() if k not in ("fpr", "tpr")} for r in rows]}
    with AtomicFiles() as out:
        with out.open(os.path.join(args.out, "results.json"), "w") as f:
            json.dump(doc, f, indent=1)
    return _write_tables(rows, [doc], args.out, log)


def _write_tables(rows, docs, out_dir, log=print):
    table = summarise(rows)
    a = docs[0]["args"]
    seeds = sorted({r["seed"] for r in rows})
    header = ("Command%s: %s  \n%d seed(s) %s, %d epochs, %s head, %d threads; total %s.  \n"
              "Mean ± sample std over seeds; Δ is the paired difference to full data, same seed."
              % ("s" if len(docs) > 1 else "", ", ".join("`%s`" % d["command"] for d in docs),
                 len(seeds), seeds, a["epochs"], a["head"], a["threads"],
                 " + ".join("%.0f s" % d["total_s"] for d in docs)))
    md = markdown(table, header)
    if any(r["method"] == "facenms" for r in rows):
        md += "\n" + paired_markdown(rows)
    with AtomicFiles() as out:
        with out.open(os.path.join(out_dir, "results.md"), "w") as f:
            f.write(md)
    plot(table, os.path.join(out_dir, "results.png"), "quality vs core-set ratio (%s, %d seeds)"
         % ("simulated world" if a.get("data") is None else a["data"], len(seeds)))
    log(md)
    log("wrote %s/results.md and results.png" % out_dir)
    return table


def render(paths, out_dir):
    """results.md/.png again from results.json files (rows pooled across them)."""
    docs, rows = [], []
    for p in paths:
        with open(p) as f:
            d = json.load(f)
        docs.append(d)
        for r in d["rows"]:
            r = dict(r)
            r["tar"] = {float(k): v for k, v in r["tar"].items()}
            rows.append(r)
    seeds = [r["seed"] for r in rows if r["method"] == "full"]
    if len(seeds) != len(set(seeds)):
        raise SystemExit("--render: seed(s) %s appear in more than one file"
                         % sorted({s for s in seeds if seeds.count(s) > 1}))
    os.makedirs(out_dir, exist_ok=True)
    return _write_tables(rows, docs, out_dir)


if __name__ == "__main__":
    which.announce()
    main()
