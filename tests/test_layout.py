"""The package's structure: no import cycles, no private names used across
modules, a short top level, and pure-Python layers that load without _C."""
import ast
import os
import subprocess
import sys

import facenms

ROOT = os.path.dirname(facenms.__file__)


def modules():
    """{dotted name: path} of every module of the package."""
    out = {}
    for d, _, files in os.walk(ROOT):
        for f in files:
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(d, f), os.path.dirname(ROOT))[:-3]
                parts = rel.split(os.sep)
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                out[".".join(parts)] = os.path.join(d, f)
    return out


MODULES = modules()


def imports(name, path):
    """(target module, imported names) for every import in a module, at any depth."""
    tree = ast.parse(open(path).read(), path)
    package = name if path.endswith("__init__.py") else name.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, ()
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            for a in node.names:
                sub = target + "." + a.name
                if sub in MODULES:  # `from package import module`
                    yield sub, ()
                else:
                    yield target, (a.name,)


def graph():
    g = {}
    for name, path in MODULES.items():
        g[name] = {t for t, _ in imports(name, path) if t in MODULES and t != name}
    return g


def test_no_import_cycles():
    g = graph()
    state, stack, cycles = {}, [], []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for t in sorted(g[m]):
            if state.get(t) == 1:
                cycles.append(stack[stack.index(t):] + [t])
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_no_private_names_across_modules():
    bad = []
    for name, path in MODULES.items():
        for target, names in imports(name, path):
            if not target.startswith("facenms"):
                continue
            for n in names:
                if n.startswith("_") and not n.startswith("__"):
                    bad.append("%s imports %s from %s" % (name, n, target))
            if any(p.startswith("_") and not p.startswith("__") for p in target.split(".")[1:]) \
                    and target != "facenms._C":
                bad.append("%s imports the private module %s" % (name, target))
    assert not bad, bad


# README's layer order, bottom up: a package may use the ones on lower rows only
LAYERS = [["io"], ["core", "data", "models"], ["scale", "eval"], ["pipeline"], ["cli"]]
LEVEL = {pkg: i for i, row in enumerate(LAYERS) for pkg in row}
TOP = len(LAYERS)  # the package root and its public aliases re-export from any layer


def level(module):
    parts = module.split(".")
    return LEVEL.get(parts[1], TOP) if len(parts) > 1 else TOP


def test_imports_run_downward():
    bad = []
    for name, path in MODULES.items():
        for target, _ in imports(name, path):
            if target not in MODULES or target == "facenms._C":
                continue
            same = target.split(".")[:2] == name.split(".")[:2]
            if not same and level(name) < TOP and level(target) >= level(name):
                bad.append("%s (%s) imports %s (%s)" % (
                    name, level(name), target, level(target)))
    assert not bad, bad


def test_short_top_level():
    top = [f for f in os.listdir(ROOT) if (f.endswith(".py") or os.path.isfile(
        os.path.join(ROOT, f, "__init__.py")))]
    assert len(top) <= 13, sorted(top)


def test_pure_python_layers_load_without_the_extension():
    code = ("import sys; sys.modules['facenms._C'] = None\n"
            "import facenms.data, facenms.models, facenms.verification, facenms.cli\n"
            "import facenms\n"
            "print(facenms.build_info()['error'])")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "facenms._C" in p.stdout


def test_small_modules_and_signatures():
    """Modules under 400 lines; functions of at most 60 lines and 6 positional parameters
    (more options are keyword-only)."""
    bad = []
    for name, path in MODULES.items():
        src = open(path).read()
        if len(src.splitlines()) > 400:
            bad.append("%s: %d lines" % (name, len(src.splitlines())))
        for node in ast.walk(ast.parse(src, path)):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            args = node.args.posonlyargs + node.args.args
            positional = len(args) - (1 if args and args[0].arg in ("self", "cls") else 0)
            lines = node.end_lineno - node.lineno + 1
            if lines > 60 or positional > 6:
                bad.append("%s.%s: %d lines, %d positional" % (name, node.name, lines,
                                                                positional))
    assert not bad, bad
