"""The house rules of the layout: data_schema at the bottom, collect / annotate / train side by side on it,
pipeline on top. Checked on the source (every import statement, function-local ones included) and on what
importing a package really loads."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("collect", "annotate", "train")
#: What each package may import of the project's own packages.
ALLOWED = {
    "data_schema": {"data_schema"},
    "collect": {"collect", "data_schema"},
    "annotate": {"annotate", "data_schema"},
    "train": {"train", "data_schema"},
    "pipeline": {"pipeline", "data_schema", *STAGES},
}


def project_imports(path: Path) -> set[str]:
    """Top-level project packages that a source file imports, wherever the import statement stands."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found |= {name.split(".")[0] for name in names if name.split(".")[0] in ALLOWED}
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_a_package_imports_only_what_its_floor_allows(package):
    offences = {
        str(path.relative_to(ROOT)): sorted(project_imports(path) - ALLOWED[package])
        for path in sorted((ROOT / package).rglob("*.py"))
    }
    assert {path: bad for path, bad in offences.items() if bad} == {}


def loaded_after(code: str) -> set[str]:
    """The top-level modules loaded once ``code`` has run in a fresh interpreter."""
    script = f"{code}\nimport json, sys\nprint(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, check=True)
    return set(json.loads(result.stdout.strip().splitlines()[-1]))


def test_importing_a_stage_loads_no_other_stage():
    assert loaded_after("import train") & {"collect", "annotate", "pipeline"} == set()
    assert loaded_after("import annotate") & {"collect", "train", "pipeline"} == set()
    assert loaded_after("import collect") & {"annotate", "train", "pipeline"} == set()
    assert loaded_after("import data_schema") & {*STAGES, "pipeline"} == set()


def test_audit_help_loads_no_torch():
    code = "from pipeline.cli import main\ntry:\n    main(['audit', '--help'])\nexcept SystemExit:\n    pass"
    loaded = loaded_after(code)
    assert "click" in loaded and "torch" not in loaded and "train" not in loaded
