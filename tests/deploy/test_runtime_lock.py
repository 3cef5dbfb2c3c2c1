"""The Bento's runtime lock: current, a subset of the dev lock, and covering what src/ imports."""

from __future__ import annotations

import ast
import importlib.util
import sys
from importlib import metadata
from pathlib import Path

import yaml
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [*sorted((ROOT / "src").rglob("*.py")), ROOT / "service.py"]
FIRST_PARTY = {"espnet_serve"}
# Development tools of requirements.in that must never reach the image.
DEV_ONLY = {"pytest", "pytest-timeout", "hypothesis", "ruff", "helm-python-sdk", "openai"}
DEV_ONLY |= {"kubernetes-validate", "matplotlib"}


def _load_generator():
    path = ROOT / "requirements" / "runtime_lock.py"
    spec = importlib.util.spec_from_file_location("runtime_lock", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


runtime_lock = _load_generator()


def imported_top_level_modules() -> set[str]:
    """Top-level names of every absolute import in the served sources, nested ones included."""
    names: set[str] = set()
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {alias.name.partition(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.partition(".")[0])
    return names


def third_party_modules() -> set[str]:
    stdlib = sys.stdlib_module_names | {"__future__"}
    return {m for m in imported_top_level_modules() if m not in stdlib | FIRST_PARTY}


def test_runtime_lock_is_the_current_closure_of_the_declared_dependencies():
    closure = runtime_lock.runtime_closure(runtime_lock.declared_requirements())
    expected = runtime_lock.render(closure, runtime_lock.read_pins(runtime_lock.DEV_LOCK))
    assert runtime_lock.RUNTIME_LOCK.read_text() == expected, "run `make lock-runtime`"


def test_runtime_pins_are_dev_lock_pins():
    runtime = runtime_lock.read_pins(runtime_lock.RUNTIME_LOCK)
    dev = runtime_lock.read_pins(runtime_lock.DEV_LOCK)
    assert runtime, "empty runtime lock"
    assert {name: dev.get(name) for name in runtime} == runtime


def test_runtime_lock_holds_no_development_tool():
    runtime = runtime_lock.read_pins(runtime_lock.RUNTIME_LOCK)
    assert runtime_lock.read_pins(runtime_lock.DEV_LOCK).keys() >= DEV_ONLY
    assert not DEV_ONLY & runtime.keys()


def test_every_third_party_import_of_src_is_declared_and_locked():
    modules = third_party_modules()
    assert {"torch", "bentoml", "espnet2"} <= modules  # the scan sees nested imports too
    declared = {canonicalize_name(r.name) for r in runtime_lock.declared_requirements()}
    runtime = runtime_lock.read_pins(runtime_lock.RUNTIME_LOCK).keys()
    providers = metadata.packages_distributions()
    undeclared = {}
    for module in sorted(modules):
        dists = {canonicalize_name(d) for d in providers.get(module, [])}
        if not dists & declared or not dists <= runtime:
            undeclared[module] = sorted(dists)
    assert not undeclared, f"imported by src/ but not declared in pyproject.toml: {undeclared}"


def test_bento_installs_the_runtime_lock():
    bentofile = yaml.safe_load((ROOT / "bentofile.yaml").read_text())
    assert bentofile["python"]["requirements_txt"] == "requirements/runtime-lock.txt"
