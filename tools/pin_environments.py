"""Pin binder/requirements.txt and environment.yml to the versions installed here (the ones the tests ran with).

Run after `make test` in the same virtual environment: `make pins`. Every package that
pyproject.toml lists (binder: core and notebooks extras; conda: those and the test extras)
gets `==` the version installed in this environment; comments and other lines stay as they are.
"""

import re
import sys
import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NAME = re.compile(r"^(\s*(?:- )?)([A-Za-z0-9_.\-]+)\s*(?:[<>=!~].*)?$")


def pinned(path: Path, names: set[str]) -> str:
    """The file's text with every requirement line of ``names`` pinned to the installed version."""
    lines = []
    for line in path.read_text().splitlines():
        match = NAME.match(line)
        name = match.group(2).lower().replace("_", "-") if match else None
        if name in names:
            try:
                public = version(name).split("+")[0]  # without a local label such as +cpu
                line = f"{match.group(1)}{match.group(2)}=={public}"
            except PackageNotFoundError:
                sys.exit(f"{name} is not installed here: run `make test` first, then pin")
        lines.append(line)
    return "\n".join(lines) + "\n"


def main() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    def names(requirements):
        return {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower().replace("_", "-") for r in requirements}

    core, extras = names(project["dependencies"]), {k: names(v) for k, v in project["optional-dependencies"].items()}
    targets = {
        ROOT / "binder" / "requirements.txt": core | extras["notebooks"],
        ROOT / "environment.yml": core | extras["notebooks"] | extras["test"],
    }
    for path, wanted in targets.items():
        path.write_text(pinned(path, wanted))
        print(f"pinned {len(wanted)} packages in {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
