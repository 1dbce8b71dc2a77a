"""Give executed notebooks' progress bars the text of where they ended.

A progress bar in an executed notebook is a widget: Jupyter draws it from the widget state saved
in the notebook's metadata (where it ended: "800/800 [01:29<00:00, 9.01it/s]"), but a viewer
without widgets (GitHub, nbviewer, a diff) shows its plain-text copy, which tqdm wrote when the
bar started ("0%| | 0/800"), as if the work never ran. This script replaces that copy with the
bar's final state, in place:

    python tools/finish_progress_bars.py notebooks/*.ipynb

Run it after executing a notebook (``jupyter execute --inplace``); nbval compares progress bars
through a sanitizing pattern (``tests/nbval_sanitize.cfg``), so either text passes.
"""

from __future__ import annotations

import argparse
import html
import json
from pathlib import Path

from fss.paths import atomic_path

VIEW = "application/vnd.jupyter.widget-view+json"
STATE = "application/vnd.jupyter.widget-state+json"
BAR_WIDTH = 10


def final_text(hbox: str, state: dict) -> str | None:
    """The plain text of the tqdm bar whose widget is the HBox model ``hbox``, as tqdm prints it at its last update.

    None when the model is not a tqdm bar (an HBox of text, progress and text).
    """
    model = state.get(hbox, {})
    children = [state.get(child.removeprefix("IPY_MODEL_"), {}) for child in model.get("state", {}).get("children", [])]
    names = [child.get("model_name") for child in children]
    if model.get("model_name") != "HBoxModel" or names[:1] != ["HTMLModel"] or names[2:] != ["HTMLModel"] or "Progress" not in str(names[1:2]):
        return None
    left, bar, right = (child["state"] for child in children)
    total = bar.get("max") or 0
    filled = round(BAR_WIDTH * bar.get("value", 0) / total) if total else 0
    return f"{_plain(left.get('value'))}|{'█' * filled}{' ' * (BAR_WIDTH - filled)}| {_plain(right.get('value')).lstrip()}"


def _plain(widget_html: str | None) -> str:
    """A tqdm widget's HTML text as tqdm prints it (entities decoded, figure spaces as spaces)."""
    return html.unescape(widget_html or "").replace("\u2007", " ")


def finish(notebook: dict) -> int:
    """Replace the plain-text copy of every finished progress bar of ``notebook`` (in place); how many changed."""
    state = notebook.get("metadata", {}).get("widgets", {}).get(STATE, {}).get("state", {})
    changed = 0
    for cell in notebook["cells"]:
        for output in cell.get("outputs", []):
            view = output.get("data", {}).get(VIEW)
            text = final_text(view["model_id"], state) if view else None
            if text is not None and output["data"].get("text/plain") != [text]:
                output["data"]["text/plain"] = [text]
                changed += 1
    return changed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    for path in parser.parse_args().notebooks:
        notebook = json.loads(path.read_text())
        changed = finish(notebook)
        if changed:
            with atomic_path(path, overwrite=True) as temporary:
                temporary.write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n")
        print(f"{path}: {changed} progress bar(s) given their final text")


if __name__ == "__main__":
    main()
