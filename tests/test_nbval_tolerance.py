"""The tolerant comparison of notebook outputs that come from training (cell metadata ``tolerance``)."""

import nbformat
from nbval_tolerance import _tolerant, within_tolerance

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
