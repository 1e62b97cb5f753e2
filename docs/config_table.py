"""The README's table of every `golden-ami:*` key, generated from `Pulumi.yaml`.

    python -m docs.config_table           # print the table
    python -m docs.config_table --write   # replace the table in README.md

`Pulumi.yaml` holds each key's type, default and description; `components/config.py` knows which
stack role reads it and which keys a role requires. tests/test_readme.py fails when the README's
table drifts from what this module renders.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from components.config import CONFIG_KEYS, NAMESPACE, REQUIRED

REPO_ROOT = Path(__file__).resolve().parent.parent
PROJECT_FILE = REPO_ROOT / "Pulumi.yaml"
README = REPO_ROOT / "README.md"
START_MARKER = "<!-- config-table:start (python -m docs.config_table --write) -->"
END_MARKER = "<!-- config-table:end -->"
HEADER = (
    "| key | stack | type | default | description |",
    "|---|---|---|---|---|",
)


@dataclass(frozen=True)
class KeyRow:
    key: str  # golden-ami:<name>
    stack: str  # infra | workload | both
    type: str
    default: str
    description: str

    def render(self) -> str:
        cells = (f"`{self.key}`", self.stack, self.type, self.default, _escape(self.description))
        return "| " + " | ".join(cells) + " |"


def key_rows(project_file: Path = PROJECT_FILE) -> list[KeyRow]:
    """One row per key declared in `project_file`, in declaration order."""
    declared: dict[str, dict[str, Any]] = yaml.safe_load(project_file.read_text())["config"]
    unknown = sorted(set(declared) - set(CONFIG_KEYS))
    if unknown:
        raise ValueError(f"{project_file.name} declares keys components/config.py lacks: {unknown}")
    return [_row(name, declaration) for name, declaration in declared.items()]


def _row(name: str, declaration: dict[str, Any]) -> KeyRow:
    key = CONFIG_KEYS[name]
    stack = "both" if len(key.roles) > 1 else key.roles[0]
    # `targets` is declared without a type (Pulumi's schema cannot type objects): ask the model.
    pulumi_type = declaration.get("type", key.pulumi_type)
    item_type = declaration.get("items", {}).get("type", key.item_type)
    type_name = f"{item_type}[]" if pulumi_type == "array" else pulumi_type
    return KeyRow(
        key=f"{NAMESPACE}:{name}",
        stack=stack,
        type=type_name,
        default="required" if key.default is REQUIRED else _show(declaration["default"]),
        description=declaration["description"],
    )


def _show(default: Any) -> str:
    if isinstance(default, str) and default:
        return f"`{default}`"
    return f"`{json.dumps(default)}`"


def _escape(text: str) -> str:
    # `<prefix>` would be read as an HTML tag and vanish; `|` would end the cell.
    return text.replace("<", "&lt;").replace(">", "&gt;").replace("|", r"\|")


def render_table(rows: list[KeyRow]) -> str:
    return "\n".join((*HEADER, *(row.render() for row in rows)))


def replace_table(readme_text: str, table: str) -> str:
    """`readme_text` with the text between the markers replaced by `table`."""
    start, end = readme_text.find(START_MARKER), readme_text.find(END_MARKER)
    if start < 0 or end < start:
        raise ValueError(f"README lacks the markers {START_MARKER!r} ... {END_MARKER!r}")
    return readme_text[: start + len(START_MARKER)] + "\n" + table + "\n" + readme_text[end:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m docs.config_table", description=__doc__)
    parser.add_argument("--write", action="store_true", help="update the table in README.md")
    args = parser.parse_args(argv)
    table = render_table(key_rows())
    if args.write:
        README.write_text(replace_table(README.read_text(), table))
    else:
        print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
