"""The answer-line contract: prompts ask for it, targets write it, and the task parsers read it back."""

from cowest.chat import ANSWER, answer_form, answer_line, answer_line_count, before_answer, drop_answer_lines
from cowest.config import TaskConfig
from cowest.inference.prompts import collab_messages, weak_messages, weak_target
from cowest.tasks import get_task


def test_the_line_a_target_writes_is_the_line_the_parser_reads():
    for name in ("demo", "ifqa"):
        task = get_task(TaskConfig(name=name, data=None if name == "demo" else "tests/fixtures/tasks/ifqa"))
        ex = task.load("dev")[0]
        target = weak_target(task, ex, "cot", "Because of the context.")
        assert target.splitlines()[-1] == answer_line(task.gold_answer(ex))
        assert task.parse_answer(target, example=ex) == task.parse_answer(answer_line(task.gold_answer(ex)), example=ex)
        assert answer_form(task.answer_format()) in weak_messages(task, ex, "cot")[-1]["content"]
        assert answer_form(task.answer_format()) in collab_messages(task, ex, "draft", "cot")[-1]["content"]


def test_before_answer_and_drop_answer_lines():
    text = "Reasoning one.\nanswer: B"
    assert before_answer(text) == "Reasoning one.\n"
    assert before_answer("no marker") == "no marker\n" and before_answer("  ") == ""
    assert drop_answer_lines(f"Why it is so.\n{ANSWER} C\n") == "Why it is so."


def test_answer_line_count_finds_a_draft_that_ran_past_its_answer():
    assert answer_line_count("Why.\nAnswer: Paris") == 1
    assert answer_line_count("Why.\nAnswer: Paris\nanswer: Paris\n  Answer: Par") == 3
    assert answer_line_count("The Answer: is inside a sentence") == 0 and answer_line_count("") == 0
