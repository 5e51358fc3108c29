"""`facenms run CONFIG`: every stage from one TOML/YAML config."""
from .common import progress


def add(sub):
    from ..pipeline.runconfig import STAGES  # not pipeline.run: torch loads only when run
    r = sub.add_parser("run", help="run every stage from a TOML/YAML config")
    r.add_argument("config")
    r.add_argument("--stages", help="comma-separated subset of %s" % ",".join(STAGES))
    r.add_argument("--check", action="store_true",
                   help="check the whole config (every section, key, path and format) and "
                        "open the dataset, naming every problem at once; run nothing")
    r.set_defaults(func=run)


def run(args):
    from ..pipeline.run import STAGES, check, run as run_config
    stages = args.stages.split(",") if args.stages else STAGES
    if args.check:
        cfg, ds = check(args.config, stages)
        print("facenms run: %s is valid: %s, %d faces, %d identities; stages %s" % (
            args.config, cfg["data"]["dataset"], len(ds), ds.num_classes, ",".join(stages)))
        return
    run_config(args.config, stages=stages, progress=progress())
