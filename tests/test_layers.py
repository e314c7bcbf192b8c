"""The layer rule of the design: lower layers never import higher ones.

The package is read top to bottom, tokens -> models -> the training loop -> stage 1 -> stage 2 ->
stage 3 -> the pipeline, and each layer may use only the layers before it: `model/` knows nothing of
the stages, stage 2 may use stage 1 but never the reverse, and the command line sits on top. An
import inside a function counts too: it hides an upward dependency from the top of the file, it
does not remove it.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "minillm"

# Each top-level module or package of minillm/, by layer, lowest first. A module may import its own
# layer and the layers below it. The pipeline and report.py (which writes the pipeline's report) are
# one layer; compare.py, lessons.py (what lessons/ share) and the command line sit on top of it.
LAYERS: list[set[str]] = [
    {"minillm", "errors", "console"},  # (minillm: the package's __init__, its version)
    {"utils", "run_lock", "workers", "config", "provenance"},
    {"tokenizer"},
    {"model"},
    {"datasets"},
    {"train"},
    {"stage1_pretrain"},
    {"stage2_sft"},
    {"stage3_rlhf"},
    {"pipeline", "reuse", "report"},  # (reuse: when a journey's step is redone or copied)
    {"compare", "lessons", "cli", "__main__"},
]
LAYER_OF = {name: i for i, names in enumerate(LAYERS) for name in names}


def part(module: str) -> str:
    """The top-level piece of minillm a dotted module name belongs to: minillm.model.gpt -> model."""
    pieces = module.split(".")
    return pieces[1] if len(pieces) > 1 else pieces[0]


def imports_of(path: Path, package_dir: Path = PACKAGE) -> list[tuple[int, str]]:
    """(line, module) of every minillm module that `path` (a file under `package_dir`) imports, at the
    top or inside a function, in the file's order."""
    module = ".".join(path.relative_to(package_dir.parent).with_suffix("").parts)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # a relative import: from the package, one level up per extra dot
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                found.append((node.lineno, ".".join(base + ([node.module] if node.module else []))))
            else:
                found.append((node.lineno, node.module or ""))
    return sorted((line, name) for line, name in found if name == "minillm" or name.startswith("minillm."))


def test_every_part_of_the_package_has_a_layer():
    """A new module or package must be placed in LAYERS, or the rule below would not see it."""
    parts = {path.stem if path.parent == PACKAGE else path.relative_to(PACKAGE).parts[0]
             for path in PACKAGE.rglob("*.py")}
    parts = {"minillm" if p == "__init__" else p for p in parts}
    assert parts == set(LAYER_OF), sorted(parts ^ set(LAYER_OF))


def test_no_module_imports_a_higher_layer_not_even_inside_a_function():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        here = part(".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__"))
        for line, name in imports_of(path):
            if LAYER_OF[part(name)] > LAYER_OF[here]:
                upward.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {name}")
    assert not upward, upward


def test_the_rule_sees_imports_inside_functions_and_relative_ones(tmp_path):
    """The checker itself: an import in a function body, and a relative one, are both found."""
    fake = tmp_path / "minillm"
    (fake / "model").mkdir(parents=True)
    (fake / "model" / "gpt.py").write_text("def f():\n    from minillm.stage2_sft import sft\n"
                                           "from ..stage1_pretrain import clm\n", encoding="utf-8")
    assert imports_of(fake / "model" / "gpt.py", fake) == [(2, "minillm.stage2_sft"), (3, "minillm.stage1_pretrain")]
