"""The tolerant comparison of notebook outputs that come from training (cell metadata ``tolerance``)."""

import math
from pathlib import Path

import nbformat
from nbval_tolerance import NUMBER, _tolerant, within_tolerance

NOTEBOOK_03 = Path(__file__).parents[1] / "notebooks" / "03_training.ipynb"
RUNS_03 = [
    # Notebook 03 at its defaults (fss 0.3.0: the clinical generator, validation on the box fss segment sees), where the seed
    # or the CPU's instruction set differs: (machine, PyTorch's kernels, seed, final mean validation Dice, best). Each run's
    # command: python benchmarks/training_spread.py --seeds 0 1 2 --instruction-sets native avx2 (the seed and kernels it
    # names), except where the machine says otherwise. The committed notebook is the first run's machine and seed.
    ("2-core AMD EPYC with AVX-512 and AVX512-BF16, family 26", "AVX512", 0, 0.641, 0.641),
    ("2-core AMD EPYC with AVX-512 and AVX512-BF16, family 26", "AVX512", 1, 0.631, 0.631),
    ("2-core AMD EPYC with AVX-512 and AVX512-BF16, family 26", "AVX512", 2, 0.637, 0.637),
    ("2-core AMD EPYC with AVX-512 and AVX512-BF16, family 26", "AVX2", 0, 0.661, 0.661),
    ("2-core AMD EPYC with AVX-512 and AVX512-BF16, family 26", "AVX2", 1, 0.603, 0.603),
    ("2-core AMD EPYC with AVX-512 and AVX512-BF16, family 26", "AVX2", 2, 0.634, 0.634),
    ("2-core AMD EPYC with AVX-512 and AVX512-BF16, family 26 (--seeds 0 --instruction-sets default)", "DEFAULT", 0, 0.659, 0.659),
]
MARGIN = 0.01
"""What a tolerance adds to the farthest measured run, before it is rounded up to the next hundredth."""

TABLE = """           dice_eCSF  dice_GM  mean_dice
iteration                              
100            0.134    0.000      0.072
300            0.463    0.149      0.254"""


def test_numbers_within_the_tolerance_pass_and_beyond_it_fail():
    moved = TABLE.replace("0.463", "0.471").replace("0.254", "0.247")
    assert within_tolerance(moved, TABLE, 0.03)
    assert not within_tolerance(moved, TABLE, 0.005)
    assert not within_tolerance(TABLE.replace("0.254", "0.300"), TABLE, 0.03)


def test_integers_and_words_must_be_the_same():
    assert not within_tolerance(TABLE.replace("300", "301"), TABLE, 0.03)  # iterations are counted, not measured
    assert not within_tolerance(TABLE.replace("dice_GM", "dice_WM"), TABLE, 0.03)
    assert not within_tolerance("300 iterations, 1,402,088 parameters", "300 iterations, 1,402,089 parameters", 0.03)
    assert not within_tolerance(TABLE + "\n400            0.5    0.1      0.2", TABLE, 0.03)  # a row more


def test_a_table_realigned_by_a_longer_number_passes():
    assert within_tolerance("dice  0.0   0.5", "dice  0.01  0.5", 0.03)
    assert within_tolerance("a 0.1 b", "a 0.1 b", 0.0)


def test_nbval_sees_the_committed_text_only_where_the_numbers_are_within_tolerance():
    seen = []

    def compare(test, ref, skip_compare=None):
        seen.append([o.get("text") or o["data"]["text/plain"] for o in test])
        return True

    committed = [
        nbformat.v4.new_output("stream", name="stdout", text="final Dice 0.247\n"),
        nbformat.v4.new_output("execute_result", data={"text/plain": "0.5"}),
    ]
    close = [
        nbformat.v4.new_output("stream", name="stdout", text="final Dice 0.254\n"),
        nbformat.v4.new_output("execute_result", data={"text/plain": "0.51"}),
    ]
    far = [
        nbformat.v4.new_output("stream", name="stdout", text="final Dice 0.354\n"),
        nbformat.v4.new_output("execute_result", data={"text/plain": "0.5"}),
    ]
    _tolerant(compare, 0.03)(close, committed)
    _tolerant(compare, 0.03)(far, committed)
    assert seen == [["final Dice 0.247\n", "0.5"], ["final Dice 0.354\n", "0.5"]]  # nbval then reports the far one


def test_notebook_03s_tolerance_is_derived_from_the_measured_runs_and_its_text_gives_the_range_it_accepts():
    book = nbformat.read(NOTEBOOK_03, as_version=4)
    [cell] = [cell for cell in book.cells if "tolerance" in cell.metadata and "final mean validation Dice" in cell.source]
    final, best = (float(n) for n in NUMBER.findall(cell.outputs[0]["text"].splitlines()[1]))
    farthest = max(max(abs(run[3] - final), abs(run[4] - best)) for run in RUNS_03)
    assert len({run[2] for run in RUNS_03}) >= 3 and len({run[1] for run in RUNS_03}) >= 2  # three seeds, two instruction sets
    assert cell.metadata["tolerance"] == math.ceil(round((farthest + MARGIN) * 100, 6)) / 100
    low, high = final - cell.metadata["tolerance"], final + cell.metadata["tolerance"]
    text = "".join(cell.source for cell in book.cells if cell.cell_type == "markdown")
    assert f"between {low:.2f}\nand {high:.2f}" in text or f"between {low:.2f} and {high:.2f}" in text, "the range its checks accept"
    measured = [run[3] for run in RUNS_03]
    assert f"from {min(measured):.3f} to {max(measured):.3f}" in text, "the range the runs gave"
