"""Dependencies by use: the library installs and imports without the application's and the
deployment's packages (pyproject's extras), and every pin is one version."""
import os
import re
import subprocess
import sys
import tomllib

from conftest import ROOT

LIBRARY = ["larq", "numpy", "tensorflow", "tensorflow-model-optimization", "tf-keras"]
APPLICATION = ["ai-edge-litert", "larq-compute-engine", "matplotlib", "scikit-learn",
               "tensorboard", "tensorflow-datasets", "tflite-micro"]

# Every module of `kcaps` imported in a process where the extras' distributions cannot be
# imported: a meta-path finder raises ImportError for each of their top-level modules (found
# through the installed distributions' own file lists), as if they were not installed.
IMPORT_WITHOUT_EXTRAS = """
import importlib, importlib.metadata, pkgutil, re, sys
blocked_dists = set(sys.argv[1].split(","))
normal = lambda name: re.sub(r"[-_.]+", "-", name).lower()
blocked = {module for module, dists in importlib.metadata.packages_distributions().items()
           if any(normal(d) in blocked_dists for d in dists)}
missing = blocked_dists - {normal(d) for dists in importlib.metadata.packages_distributions().values()
                           for d in dists}
print("MISSING", sorted(missing))

class NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            raise ImportError(f"No module named {name!r} (blocked: an extra)")
        return None

sys.meta_path.insert(0, NotInstalled())
for name in sorted(blocked):
    try:
        importlib.import_module(name)
        print("NOT BLOCKED", name)
    except ImportError:
        pass
import kcaps
modules = ["kcaps"]
for info in pkgutil.walk_packages(kcaps.__path__, "kcaps."):
    importlib.import_module(info.name)
    modules.append(info.name)
print("IMPORTED", len(modules))
print("LOADED", sorted({m.split(".")[0] for m in sys.modules} & blocked))
"""


def _project():
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]


def _name(requirement):
    return re.sub(r"[-_.]+", "-", re.split(r"[=<>!~\[; ]", requirement, maxsplit=1)[0]).lower()


def test_the_library_needs_only_its_own_packages_and_extras_hold_the_rest():
    project = _project()
    assert sorted(_name(r) for r in project["dependencies"]) == LIBRARY
    extras = project["optional-dependencies"]
    assert sorted({_name(r) for group, reqs in extras.items() if group != "test"
                   for r in reqs}) == APPLICATION
    pins = {}
    for requirement in project["dependencies"] + [r for reqs in extras.values() for r in reqs]:
        assert "==" in requirement, requirement  # every version pinned ...
        pins.setdefault(_name(requirement), set()).add(requirement.split("==")[1])
    assert {name: v for name, v in pins.items() if len(v) > 1} == {}  # ... to one version


def test_every_library_module_imports_without_the_extras():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, "-c", IMPORT_WITHOUT_EXTRAS, ",".join(APPLICATION)],
                            capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines() if " " in line)
    assert lines["MISSING"] == "[]"  # each extra is installed here, so blocking it means something
    assert "NOT BLOCKED" not in result.stdout, result.stdout
    assert int(lines["IMPORTED"]) > 15
    assert lines["LOADED"] == "[]"
