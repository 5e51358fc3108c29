"""`facenms run CONFIG`: every stage from one TOML/YAML config."""
from .common import CommandError, progress


def add(sub):
    from ..pipeline.run import STAGES
    r = sub.add_parser("run", help="run every stage from a TOML/YAML config")
    r.add_argument("config")
    r.add_argument("--stages", help="comma-separated subset of %s" % ",".join(STAGES))
    r.set_defaults(func=run)


def run(args):
    from ..pipeline.run import STAGES, run as run_config
    stages = args.stages.split(",") if args.stages else STAGES
    bad = set(stages) - set(STAGES)
    if bad:
        raise CommandError("unknown stage(s) %s; stages are %s"
                           % (", ".join(sorted(bad)), ",".join(STAGES)))
    run_config(args.config, stages=stages, progress=progress())
