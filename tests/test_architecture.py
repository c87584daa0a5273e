"""The layers of ARCHITECTURE.md, checked on the source: every import of every module of
clca_edge (function-level lazy ones included) read with ``ast``, no module imported."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PKG = "clca_edge"
ROOT = Path(__file__).resolve().parents[1] / PKG

# Third-party packages the device (runtime, capture) must run without: the [train] extra.
TRAIN_ONLY = {"torch", "torchvision", "timm", "onnx", "onnxscript", "safetensors", "torch_tensorrt"}

# Tools over the pipeline (measurements, reports, views of models and bundles) may use all of it.
TOOLS = {"core", "bundle", "engines.tensorrt", "runtime", "robustness", "models", "data", "training", "deploy"}

# Layer -> the layers it may import (besides itself and the root package's __version__).
# The device side (runtime, capture, doctor) reaches only core, bundle and the TensorRT wrappers.
ALLOWED = {
    "core": set(),
    "bundle": {"core"},
    "engines.tensorrt": {"core", "bundle"},
    "runtime": {"core", "bundle", "engines.tensorrt"},
    "capture": {"core", "bundle", "engines.tensorrt", "runtime"},
    "doctor": {"core", "bundle", "engines.tensorrt", "runtime"},
    # The fleet link, device side: the uploader reads capture's field log as its outbox.
    "fleet": {"core", "bundle", "engines.tensorrt", "runtime", "capture"},
    # The fleet's centre: collector, store, status, report, harvest (not on the device).
    "centre": {"core", "bundle", "engines.tensorrt", "runtime", "capture", "fleet"},
    # The field-perturbation suite and its scoring over any runner: torch-free, like the gate's scoring.
    "robustness": {"core", "bundle", "runtime", "capture"},
    "models": {"core"},
    "data": {"core"},
    "training": {"core", "models", "data", "robustness"},
    "engines": {"core", "bundle", "engines.tensorrt", "runtime", "training"},
    "deploy": {"core", "bundle", "engines.tensorrt", "engines", "runtime", "capture", "robustness", "models", "data",
               "training"},
    "benchmark": TOOLS,
    "explain": TOOLS,
    "quickstart": {"core", "bundle", "engines.tensorrt", "runtime", "capture", "models", "data", "training",
                   "deploy", "engines", "robustness", "fleet", "centre"},
    "cli": {"core", "bundle", "engines.tensorrt", "runtime", "capture", "doctor", "models", "data", "training",
            "deploy", "engines", "benchmark", "robustness", "explain", "quickstart", "fleet", "centre"},
}
DEVICE_SIDE = ("core", "bundle", "engines.tensorrt", "runtime", "capture", "doctor", "fleet")


def _module_names() -> dict[str, Path]:
    mods = {}
    for path in ROOT.rglob("*.py"):
        parts = (PKG, *path.relative_to(ROOT).with_suffix("").parts)
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return mods


MODULES = _module_names()


def _owning_module(name: str) -> str:
    """The module a dotted import name lands in (``a.b.c`` of a function ``c`` in ``a.b``: ``a.b``)."""
    while name not in MODULES and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(module: str, path: Path, typing_too: bool = False) -> tuple[set[str], set[str]]:
    """(modules of clca_edge, top-level third-party names) that ``module`` imports anywhere in it;
    ``if TYPE_CHECKING:`` blocks only with ``typing_too``."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    inside, outside = set(), set()

    def add(name: str) -> None:
        if name == PKG or name.startswith(PKG + "."):
            target = _owning_module(name)
            if target != module:
                inside.add(target)
        else:
            outside.add(name.split(".")[0])

    tree = ast.parse(path.read_text(), str(path))
    # ``if TYPE_CHECKING:`` imports never run: annotations only, no dependency at run time.
    typing_only = set() if typing_too else {
        id(n) for block in ast.walk(tree) if isinstance(block, ast.If) and _is_type_checking(block.test)
        for stmt in block.body for n in ast.walk(stmt)}
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                # ``from pkg import sub`` imports the module pkg.sub; ``from mod import name``, mod.
                sub = f"{source}.{alias.name}"
                add(sub if sub in MODULES else source)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "import_module" and node.args):
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                add(arg.value)
            else:  # a computed name (e.g. every module of a package): count all of the package's own
                for other in MODULES:
                    if other.startswith(package + ".") and "." not in other[len(package) + 1:]:
                        add(other)
    return inside, outside


GRAPH = {m: _imports(m, p) for m, p in MODULES.items()}
# With the imports under ``if TYPE_CHECKING:``: they never run, but a module that names another
# that names it back is still a cycle for its readers and for tools (type checkers, import sorters).
TYPING_GRAPH = {m: _imports(m, p, typing_too=True)[0] for m, p in MODULES.items()}


def layer_of(module: str) -> str:
    """The ALLOWED key a module belongs to (the longest that prefixes it); the root is 'root',
    a module of no layer '?'."""
    if module == PKG:
        return "root"
    rest = module[len(PKG) + 1:]
    for key in sorted(ALLOWED, key=len, reverse=True):
        if rest == key or rest.startswith(key + "."):
            return key
    return "?"


def test_every_module_belongs_to_a_layer():
    assert len(MODULES) > 50  # the scan found the package
    homeless = sorted(m for m in MODULES if layer_of(m) == "?")
    assert not homeless, f"modules of no layer (add them to ALLOWED here and to ARCHITECTURE.md): {homeless}"


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components over module -> imported module (those of 2 or more)."""
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for m in sorted(graph):
        if m not in index:
            visit(m)
    return sorted(cycles)


def test_no_import_cycles():
    cycles = _cycles({m: inside for m, (inside, _) in GRAPH.items()})
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


# Cycles through ``if TYPE_CHECKING:`` imports still here, each with why (the coordinator prunes
# this at merge; a new entry needs a reason a reviewer accepts).
TYPING_CYCLES_ALLOWED: dict = {}


def test_no_import_cycles_through_type_checking_imports():
    found = _cycles(TYPING_GRAPH)
    cycles = [c for c in found if tuple(c) not in TYPING_CYCLES_ALLOWED]
    assert not cycles, ("import cycles (TYPE_CHECKING imports included; move the shared types to a module "
                        "both import):\n" + "\n".join(" <-> ".join(c) for c in cycles))
    stale = sorted(set(TYPING_CYCLES_ALLOWED) - {tuple(c) for c in found})
    assert not stale, f"no longer a cycle: take them off TYPING_CYCLES_ALLOWED: {stale}"


def test_the_cycle_check_sees_type_checking_imports(tmp_path):
    a = tmp_path / "a.py"
    a.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from clca_edge.core import errors\n")
    probe = f"{PKG}.probe"
    assert _imports(probe, a)[0] == set()
    assert _imports(probe, a, typing_too=True)[0] == {f"{PKG}.core.errors"}
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]


# The longest a function of clca_edge may be (lines from ``def`` to its last line, nested functions
# included), and the ones still longer, each with why. The coordinator prunes this at merge.
MAX_FUNCTION_LINES = 80
LONG_FUNCTIONS_ALLOWED = {
    "clca_edge.quickstart.stages": "the quick start's stages are closures over its folders and console "
                                   "(each short); to become one object with a method per stage",
}


def _long_functions(path: Path, module: str, limit: int) -> dict[str, int]:
    out = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}.{child.name}"
                if not isinstance(child, ast.ClassDef) and child.end_lineno - child.lineno + 1 > limit:
                    out[name] = child.end_lineno - child.lineno + 1
                visit(child, name)

    visit(ast.parse(path.read_text(), str(path)), module)
    return out


def test_no_function_is_longer_than_80_lines():
    found = {}
    for m, path in sorted(MODULES.items()):
        found.update(_long_functions(path, m, MAX_FUNCTION_LINES))
    too_long = {n: lines for n, lines in found.items() if n not in LONG_FUNCTIONS_ALLOWED}
    assert not too_long, "functions over 80 lines (split them into named steps): " + ", ".join(
        f"{n} ({lines} lines)" for n, lines in sorted(too_long.items()))
    stale = sorted(set(LONG_FUNCTIONS_ALLOWED) - set(found))
    assert not stale, f"no longer over 80 lines: take them off LONG_FUNCTIONS_ALLOWED: {stale}"
    assert all(reason.strip() for reason in LONG_FUNCTIONS_ALLOWED.values())


def test_the_length_check_counts_what_it_should(tmp_path):
    def function(name: str, lines: int, indent: str = "") -> list[str]:
        return [f"{indent}def {name}():"] + [f"{indent}    x{i} = {i}" for i in range(lines - 1)]

    src = tmp_path / "m.py"
    src.write_text("\n".join(function("at_the_limit", 80) + ["class K:"] + function("over", 81, "    ")
                             + function("outer", 30) + function("inner", 81, "    ")) + "\n")
    assert _long_functions(src, "m", 80) == {"m.K.over": 81, "m.outer": 111, "m.outer.inner": 81}


# A click command takes a handful of typed configs built by its option groups (cli/options.OptionGroup),
# not one parameter per option. 8 is the project's bound on any function's parameters (its code rules:
# no function of more than 8 or so), and the largest commands left (robustness, fleet promote) are at
# it. Commands taking ``**options`` get every raw value in a dict, so they are listed here with why.
MAX_COMMAND_PARAMS = 8
KWARGS_COMMANDS_ALLOWED = {
    "clca_edge.cli.train_cmds.train": "a recipe must fill every option not given on the command line before "
                                      "any config is built (_apply_recipe), so it sees them all first",
    "clca_edge.cli.quickstart_cmds.quickstart": "**model is the model options, handed whole to QuickstartConfig",
    "clca_edge.cli.model_cmds.flops": "**options is the model options, handed whole to model_config (ModelConfig)",
}


def _command_functions(path: Path, module: str) -> dict[str, ast.FunctionDef]:
    """The functions of ``path`` decorated with ``<group>.command(...)`` (click commands)."""
    def is_command(d: ast.expr) -> bool:
        f = d.func if isinstance(d, ast.Call) else d
        return isinstance(f, ast.Attribute) and f.attr == "command"

    tree = ast.parse(path.read_text(), str(path))
    return {f"{module}.{n.name}": n for n in ast.walk(tree)
            if isinstance(n, ast.FunctionDef) and any(is_command(d) for d in n.decorator_list)}


def _parameter_count(fn: ast.FunctionDef) -> int:
    a = fn.args
    return len(a.posonlyargs) + len(a.args) + len(a.kwonlyargs) + (a.vararg is not None) + (a.kwarg is not None)


def test_no_cli_command_takes_more_than_a_handful_of_parameters():
    commands = {}
    for m, path in sorted(MODULES.items()):
        if m.startswith(f"{PKG}.cli."):
            commands.update(_command_functions(path, m))
    assert len(commands) > 20 and f"{PKG}.cli.deploy_cmds.deploy" in commands   # the scan finds them
    too_many = {n: _parameter_count(f) for n, f in commands.items() if _parameter_count(f) > MAX_COMMAND_PARAMS}
    assert not too_many, (f"commands over {MAX_COMMAND_PARAMS} parameters (give them option groups that build "
                          f"their configs, cli/options.OptionGroup): {too_many}")
    with_kwargs = {n for n, f in commands.items() if f.args.kwarg is not None}
    assert with_kwargs == set(KWARGS_COMMANDS_ALLOWED), "commands taking **options: " + ", ".join(sorted(with_kwargs))


def test_the_command_check_counts_what_it_should(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("@main.command()\ndef a(x, y, *rest, z, **kw): pass\n@fleet.command('b')\ndef b(): pass\n"
                   "@main.group()\ndef g(x): pass\ndef plain(a, b, c): pass\n")
    found = _command_functions(src, "m")
    assert {n: _parameter_count(f) for n, f in found.items()} == {"m.a": 5, "m.b": 0}


def test_layers_import_only_what_they_may():
    wrong = []
    for m, (inside, _) in sorted(GRAPH.items()):
        layer = layer_of(m)
        if layer == "?":
            continue  # test_every_module_belongs_to_a_layer says so
        if layer == "root":
            assert inside == set(), f"{PKG}/__init__.py imports {inside}"
            continue
        for target in sorted(inside):
            other = layer_of(target)
            if other not in (layer, "root") and other not in ALLOWED[layer]:
                wrong.append(f"{m} ({layer}) imports {target} ({other})")
    assert not wrong, "\n".join(wrong)


def test_nothing_but_the_cli_imports_the_cli():
    users = sorted(m for m, (inside, _) in GRAPH.items() if layer_of(m) != "cli"
                   and any(layer_of(t) == "cli" for t in inside))
    assert users == []


def _reachable(start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo.extend(GRAPH[m][0])
    return seen


@pytest.mark.parametrize("layer", DEVICE_SIDE)
def test_device_side_never_reaches_torch_or_the_training_side(layer):
    """Transitively: nothing a runtime/capture module imports, however deep, needs the [train] extra."""
    forbidden_layers = {"training", "models", "data", "deploy", "engines", "benchmark", "explain", "quickstart", "cli",
                       "centre"}
    for m in (m for m in MODULES if layer_of(m) == layer):
        for dep in _reachable(m):
            assert layer_of(dep) not in forbidden_layers, f"{m} reaches {dep}"
            assert not (GRAPH[dep][1] & TRAIN_ONLY), f"{m} reaches {dep}, which imports {GRAPH[dep][1] & TRAIN_ONLY}"


def test_the_rules_hold_the_known_direction():
    """The scan sees lazy imports: a function-level import in the CLI counts like a top-level one."""
    assert "clca_edge.training.trainer" in GRAPH["clca_edge.cli.train_cmds"][0]
    assert "torch" in GRAPH["clca_edge.models.flops"][1]
    assert "clca_edge.engines.tensorrt" in GRAPH["clca_edge.runtime.tensorrt_backend"][0]


def test_one_onnx_runtime_session_factory():
    """Only runtime/sessions.py creates ONNX Runtime sessions or their options."""
    makers = []
    for m, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in ("InferenceSession", "SessionOptions"):
                makers.append(m)
    assert sorted(set(makers)) == ["clca_edge.runtime.sessions"]


REPO = ROOT.parent
DOTTED = re.compile(r"\bclca_edge(?:\.\w+)+")
DOC_FILE = re.compile(r"(?<![\w/.-])([\w-]+\.md)\b")
REPO_FILE = re.compile(r"(?<![\w/.-])((?:clca_edge|tests|scripts|benchmarks|deploy|calibration|train)/[\w/.-]*\.(?:py|md|sh|yaml))\b")


def _defined_names(module: str, seen: frozenset = frozenset()) -> set[str]:
    """Names a module defines or imports at its top level (``from x import *`` followed)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.Import):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - (node.level - 1)] if node.level else []
            source = ".".join(base + ([node.module] if node.module else []))
            for a in node.names:
                if a.name == "*" and source in MODULES and source not in seen:
                    names |= _defined_names(source, seen | {module})
                else:
                    names.add(a.asname or a.name)
    return names


def _resolves(ref: str) -> bool:
    """A dotted reference is a module of the package, or a name defined at the top of one."""
    ref = ref.rstrip(".")
    if ref in MODULES:
        return True
    module, _, name = ref.rpartition(".")
    return module in MODULES and name in _defined_names(module)


def _comment_texts(path: Path):
    import io
    import tokenize

    src = path.read_text()
    for tok in tokenize.generate_tokens(io.StringIO(src).readline):
        if tok.type == tokenize.COMMENT:
            yield tok.string
        elif tok.type == tokenize.STRING:
            yield tok.string  # docstrings and messages both name modules and files


def test_comments_and_docs_cite_only_what_exists():
    """Dotted module paths of the package in comments, docstrings and the docs, and document names
    (``*.md``) and paths of files in the repository or the package, in comments and docstrings, exist."""
    docs = {p.name for p in REPO.rglob("*.md") if ".venv" not in p.parts and "node_modules" not in p.parts}
    missing = []
    for folder in ("clca_edge", "tests", "scripts", "benchmarks"):
        for path in (REPO / folder).rglob("*.py"):
            for text in _comment_texts(path):
                missing += [f"{path.relative_to(REPO)}: {r}" for r in DOTTED.findall(text) if not _resolves(r)]
                missing += [f"{path.relative_to(REPO)}: {d}" for d in DOC_FILE.findall(text) if d not in docs]
                missing += [f"{path.relative_to(REPO)}: {f}" for f in REPO_FILE.findall(text)
                            if not ((REPO / f).exists() or (ROOT / f).exists())]
    for path in REPO.glob("**/*.md"):
        if ".venv" in path.parts or ".pytest_cache" in path.parts:
            continue
        missing += [f"{path.relative_to(REPO)}: {r}" for r in DOTTED.findall(path.read_text()) if not _resolves(r)]
    assert not missing, "\n".join(sorted(set(missing)))


def test_cli_backend_and_precision_choices_are_the_runtime_ones():
    from clca_edge.bundle import PRECISIONS
    from clca_edge.cli.options import BACKEND_CHOICES, PRECISION_CHOICES
    from clca_edge.runtime.backends import BACKENDS

    assert BACKEND_CHOICES == ["auto", *BACKENDS]
    assert PRECISION_CHOICES == ["auto", *PRECISIONS]


def test_session_bundle_fixtures_are_registered_read_only():
    """Every session-scoped fixture of tests/conftest.py that makes a bundle registers it with
    ``read_only``: the session then fails if any test left a file in it changed (issue 21: reading a
    bundle never writes it, and shared fixtures do not accumulate state between tests)."""
    conftest = Path(__file__).with_name("conftest.py")
    tree = ast.parse(conftest.read_text())
    unregistered = []
    for fn in tree.body:
        if not isinstance(fn, ast.FunctionDef) or "bundle" not in fn.name:
            continue
        session = any(isinstance(d, ast.Call) and any(k.arg == "scope" and getattr(k.value, "value", None) == "session"
                                                      for k in d.keywords) for d in fn.decorator_list)
        calls = {n.func.id for n in ast.walk(fn) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
        if session and "read_only" not in calls:
            unregistered.append(fn.name)
    assert not unregistered, f"session bundle fixtures not registered read_only: {unregistered}"
