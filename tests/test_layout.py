"""The three rooms import as three packages, each module once, and never as `tflite`/`training`."""
import os
import subprocess
import sys

from conftest import ROOT

PACKAGES = ("kcaps", "kcaps_tflite", "kcaps_training")

# Every module of the three packages imported through the installed package (walk_packages), then
# every source file imported again the way pytest's doctest collection does (`import_path`, the
# `prepend` mode of setup.cfg, rootdir = the repository). A module reached under two names would
# appear twice in sys.modules with one file, and its Keras classes would be registered twice.
IMPORT_EVERYTHING = f"""
import importlib, pkgutil, sys, pathlib, collections
import kcaps
from _pytest.pathlib import import_path, ImportMode
root = pathlib.Path({str(ROOT)!r})
for name in {PACKAGES!r}:
    package = importlib.import_module(name)
    for info in pkgutil.walk_packages(package.__path__, name + "."):
        if info.name.endswith("__main__"):
            continue
        importlib.import_module(info.name)
for folder in ("kcaps", "tflite/kcaps_tflite", "training/kcaps_training"):
    for path in sorted((root / folder).rglob("*.py")):
        if path.name == "__main__.py":
            continue
        import_path(path, mode=ImportMode.prepend, root=root, consider_namespace_packages=False)
rooms = [root / "kcaps", root / "tflite", root / "training"]
files = collections.defaultdict(list)
for module_name, module in list(sys.modules.items()):
    path = getattr(module, "__file__", None)
    if path and any(pathlib.Path(path).resolve().is_relative_to(room) for room in rooms):
        files[str(pathlib.Path(path).resolve())].append(module_name)
twice = {{path: names for path, names in files.items() if len(names) > 1}}
print("TWICE", twice)
from tf_keras.src.saving import object_registration
registered = object_registration._GLOBAL_CUSTOM_OBJECTS
ours = {{key: value.__module__ for key, value in registered.items()
        if getattr(value, "__module__", "").split(".")[0] in {PACKAGES!r}}}
print("REGISTERED", len(ours))
print("MODULES", sorted({{m.split(".")[0] for names in files.values() for m in names}}))
"""


def _python(code, cwd):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("PYTHONPATH", None)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=600)


def test_every_module_imports_once_under_one_name():
    result = _python(IMPORT_EVERYTHING, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines() if " " in line)
    assert lines["TWICE"] == "{}", lines["TWICE"]
    assert int(lines["REGISTERED"]) >= 10          # the capsule layers, losses, metrics, schedules
    assert lines["MODULES"] == repr(sorted(PACKAGES))


def test_import_tflite_and_training_from_the_root_imports_no_project_code():
    code = ("import sys\n"
            "for name in ('tflite', 'training'):\n"
            "    try:\n"
            "        module = __import__(name)\n"
            "    except ImportError:\n"
            "        continue\n"
            "    print(name, getattr(module, '__file__', None))\n"
            "print('LOADED', sorted(m for m in sys.modules if m.split('.')[0] in "
            f"{PACKAGES!r}))\n")
    result = _python(code, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "LOADED []" in result.stdout, result.stdout
    # The rooms are folders, not packages: no __init__.py makes them importable code.
    for room in ("tflite", "training"):
        assert not (ROOT / room / "__init__.py").exists()
        for line in result.stdout.splitlines():
            if line.startswith(room + " "):
                assert line.split(" ", 1)[1] == "None", line   # a namespace at most, no code


def _kcaps_imports():
    """`{module: {imported package or kcaps module}}` for every module of kcaps, read by ast."""
    import ast

    root = ROOT / "kcaps"
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for name, path in modules.items():
        imported = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                # `from kcaps import ops` imports kcaps.ops; `from kcaps.x import f`, kcaps.x
                for alias in node.names:
                    submodule = f"{node.module}.{alias.name}"
                    imported.add(submodule if submodule in modules else node.module)
        graph[name] = imported
    return modules, graph


def test_kcaps_imports_neither_deployment_nor_application_and_has_no_cycle():
    modules, graph = _kcaps_imports()
    outward = {name: sorted(i for i in imported if i.split(".")[0] in PACKAGES[1:])
               for name, imported in graph.items()}
    assert not any(outward.values()), {name: i for name, i in outward.items() if i}
    # Among kcaps' own modules (the package `kcaps` itself, which imports them all, left out):
    edges = {name: sorted(i for i in imported if i in modules and i != "kcaps" and i != name)
             for name, imported in graph.items() if name != "kcaps"}
    state, cycles = {}, []

    def visit(name, stack):
        state[name] = "open"
        for target in edges.get(name, []):
            if state.get(target) == "open":
                cycles.append(stack[stack.index(target):] + [target])
            elif target not in state:
                visit(target, stack + [target])
        state[name] = "done"

    for name in sorted(edges):
        if name not in state:
            visit(name, [name])
    assert len(modules) > 30 and sum(map(len, edges.values())) > 40  # the parse found the graph
    assert cycles == [], cycles
