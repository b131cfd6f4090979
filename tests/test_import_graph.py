"""Imports run one way (docs/architecture.md, "Which way the imports run"): leaves (backbones, data, the
lens, checkpoints, ...) → pretext tasks → the lens game (``adversary.py``) → ``build.py`` → evaluators →
training → ``api.py`` → the command line and its config checks; no file imports a floor above its own,
and the evaluators never import the pretext tasks' modules. And ``import shortcutlens`` is lazy: it
loads no submodule (not even torch) until a public name is used.

The graph is read from the source with ``ast`` (every ``import`` statement, also those inside functions),
so a forbidden edge fails here even when no test happens to execute it.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# The floors of docs/architecture.md, lowest first; each floor's files must not import a floor above it.
TRAIN, CLI, API, SCHEMA = "shortcutlens.train", "shortcutlens.cli", "shortcutlens.api", "shortcutlens.config_schema"
ABOVE_EVAL = (TRAIN, CLI, API, SCHEMA)
ABOVE_BUILD = ("shortcutlens.eval", *ABOVE_EVAL)
ABOVE_PRETEXTS = ("shortcutlens.adversary", "shortcutlens.build", *ABOVE_BUILD)
# rule -> (file globs, module prefixes they must not import)
RULES = {
    "leaves": (["shortcutlens/backbones/**/*.py", "shortcutlens/data/**/*.py", "shortcutlens/lens*.py",
                "shortcutlens/lens/**/*.py", "shortcutlens/registry.py", "shortcutlens/checkpoint.py",
                "shortcutlens/distributed.py", "shortcutlens/flops.py", "shortcutlens/visualize.py",
                "shortcutlens/scaling.py", "shortcutlens/run_lock.py"],
               ("pretexts", *ABOVE_PRETEXTS)),
    "pretext tasks": (["pretexts/**/*.py"], ABOVE_PRETEXTS),
    "the lens game": (["shortcutlens/adversary.py"], ("shortcutlens.build", *ABOVE_BUILD)),
    "the builder": (["shortcutlens/build.py"], ABOVE_BUILD),
    "evaluators": (["shortcutlens/eval/**/*.py"], ("pretexts", *ABOVE_EVAL)),  # a task's hooks, never its module
    "training": (["shortcutlens/train/**/*.py"], (CLI, API, SCHEMA)),
    "api": (["shortcutlens/api.py"], (TRAIN, CLI, SCHEMA)),
}


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports (absolute names; relative imports resolved against its package)."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            out.add(base)
            out.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import submodule`
    return out


def forbidden_edges(files: list[str], banned: tuple[str, ...]) -> list[str]:
    edges = []
    for pattern in files:
        for path in sorted(ROOT.glob(pattern)):
            for module in sorted(imported_modules(path)):
                if any(module == b or module.startswith(b + ".") for b in banned):
                    edges.append(f"{path.relative_to(ROOT)} imports {module}")
    return edges


@pytest.mark.parametrize("rule", sorted(RULES))
def test_imports_run_one_way(rule: str) -> None:
    files, banned = RULES[rule]
    # the globs still find the code (``lens/`` is where the lens would go if it grows into a package)
    assert all(list(ROOT.glob(p)) for p in files if p != "shortcutlens/lens/**/*.py")
    assert forbidden_edges(files, banned) == []


def test_the_checker_sees_a_forbidden_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The rule is not vacuous: a function-local and a relative import of the loop are both caught."""
    package = tmp_path / "shortcutlens" / "eval"
    package.mkdir(parents=True)
    (package / "bad.py").write_text("def f():\n    from shortcutlens.train.loop import Trainer\n"
                                    "from ..train import loop\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert forbidden_edges(["shortcutlens/eval/*.py"], ("shortcutlens.train",)) == [
        "shortcutlens/eval/bad.py imports shortcutlens.train",
        "shortcutlens/eval/bad.py imports shortcutlens.train.loop",
        "shortcutlens/eval/bad.py imports shortcutlens.train.loop.Trainer",
    ]


def test_import_shortcutlens_is_lazy_and_every_public_name_resolves() -> None:
    code = ("import sys, shortcutlens\n"
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('shortcutlens.')))\n"
            "print(all(callable(getattr(shortcutlens, n)) for n in shortcutlens.__all__))\n"
            "print('shortcutlens.train' in sys.modules)\n"
            "import shortcutlens.eval\n"
            "from shortcutlens.train.loop import NonFiniteLossError\n"
            "from shortcutlens.checkpoint import NonFiniteLossError as Moved\n"
            "print(NonFiniteLossError is Moved)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True,
                         env={"OMP_NUM_THREADS": "1", "PATH": ""}).stdout.split("\n")
    assert out[0] == "[]"          # nothing imported yet, torch included
    assert out[1] == "True"        # create_*, list_*, load
    assert out[2] == "False"       # the public names never pull in the training loop
    assert out[3] == "True"        # old imports of the loop's error still work


def test_public_names_are_listed_and_unknown_ones_fail() -> None:
    import shortcutlens

    assert {"create_backbone", "create_dataset", "create_lens", "create_shortcut", "list_backbones", "list_datasets",
            "list_lenses", "list_shortcuts", "load"} <= set(shortcutlens.__all__) <= set(dir(shortcutlens))
    with pytest.raises(AttributeError, match="has no attribute 'create_bakbone'"):
        shortcutlens.create_bakbone  # noqa: B018
