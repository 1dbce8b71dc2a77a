"""Committed notebooks show their progress bars where they ended (tools/finish_progress_bars.py), not at 0 %."""

import copy
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
spec = importlib.util.spec_from_file_location("finish_progress_bars", ROOT / "tools" / "finish_progress_bars.py")
finish_progress_bars = importlib.util.module_from_spec(spec)
spec.loader.exec_module(finish_progress_bars)


def notebook_with_a_bar(value: float, total: float) -> dict:
    """A notebook whose one output is a tqdm widget at ``value`` of ``total``, its plain-text copy still at 0 %."""
    state = {
        "box": {"model_name": "HBoxModel", "state": {"children": ["IPY_MODEL_left", "IPY_MODEL_bar", "IPY_MODEL_right"]}},
        "left": {"model_name": "HTMLModel", "state": {"value": "training:\u2007\u200750%"}},
        "bar": {"model_name": "FloatProgressModel", "state": {"value": value, "max": total}},
        "right": {"model_name": "HTMLModel", "state": {"value": "\u20074/8\u2007[00:02&lt;00:02,\u2007\u20071.9it/s]"}},
    }
    output = {
        "output_type": "display_data",
        "metadata": {},
        "data": {finish_progress_bars.VIEW: {"model_id": "box"}, "text/plain": ["training:   0%|"]},
    }
    return {"cells": [{"cell_type": "code", "outputs": [output]}], "metadata": {"widgets": {finish_progress_bars.STATE: {"state": state}}}}


def test_a_bar_is_given_the_text_of_its_last_update():
    notebook = notebook_with_a_bar(4, 8)
    assert finish_progress_bars.finish(notebook) == 1
    assert notebook["cells"][0]["outputs"][0]["data"]["text/plain"] == ["training:  50%|█████     | 4/8 [00:02<00:02,  1.9it/s]"]
    assert finish_progress_bars.finish(notebook) == 0  # done once


@pytest.mark.parametrize("path", sorted((ROOT / "notebooks").glob("[0-9]*.ipynb")), ids=lambda path: path.name)
def test_committed_progress_bars_show_where_they_ended(path):
    notebook = json.loads(path.read_text())
    assert finish_progress_bars.finish(copy.deepcopy(notebook)) == 0, f"run python tools/finish_progress_bars.py {path.relative_to(ROOT)}"
