"""The fault suite's bookkeeping (faults/run.py): what counts as lost and duplicated, and the table."""

from __future__ import annotations

from faults.run import Row, count, table


def test_lost_and_duplicated_are_counted_per_sent_message_and_strays_are_ignored() -> None:
    assert count(["a", "b", "c"], ["a", "a", "b", "stray", "stray"]) == (2, 1, 1)
    assert count(["a"], []) == (0, 1, 0)
    assert count([], ["x"]) == (0, 0, 0)


def test_a_row_is_ok_only_with_nothing_lost_and_nothing_twice_and_the_table_shows_every_column() -> None:
    rows = [Row("clean", 3, 3, 0, 0, "none"), Row("bad", 3, 2, 1, 0, "1 dead-lettered: x")]
    assert rows[0].ok and not rows[1].ok
    text = table(rows)
    head = text.splitlines()[1]
    for column in ("case", "messages in", "delivered", "lost", "duplicated", "user-visible error"):
        assert column in head
    assert "| bad " in text and "1 dead-lettered: x" in text
