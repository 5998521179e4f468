import pytest

from cowest.feedback.judge import judge_messages, normalise, parse_judge_score

CASES = [
    ("The reasoning is sound and matches the gold answer.\nScore: 8", 8.0),
    ("Score: 8/10", 8.0),
    ("**Score:** 9/10", 9.0),
    ("The candidate picked the wrong team.\n\n**3**", 3.0),
    ("Rating: 7.5", 7.5),
    ('{"score": 8, "reason": "correct"}', 8.0),
    ('```json\n{"reasoning": "wrong letter", "score": 2}\n```', 2.0),
    ("I would give this response a 6 out of 10 because the explanation is thin.", 6.0),
    ("Justification: correct final answer but muddled reasoning. Final score: 6.", 6.0),
    ("score = 10", 10.0),
    ("Step 1: check the answer (correct). Step 2: check coherence (fine).\nScore: 9 / 10", 9.0),
    ("First impression: 4/10. After re-reading, the logic holds.\nFinal Score: 7/10", 7.0),
    ("7", 7.0),
    ("  **5**.  ", 5.0),
    ("Grade: 1", 1.0),
    # unparseable: no score, out of scale, empty
    ("The answer agrees with the gold answer and the reasoning is coherent.", None),
    ("I cannot grade this response.", None),
    ("Score: 11", None),
    ("Score: 0/10", None),
    ("", None),
    (None, None),
    ("Score: N/A", None),
]


@pytest.mark.parametrize("text,want", CASES)
def test_parse_judge_score(text, want):
    assert parse_judge_score(text) == want


def test_parser_never_guesses_zero():
    assert all(parse_judge_score(t) != 0 for t, _ in CASES)


def test_normalise_maps_scale_to_unit_interval():
    assert normalise(1) == 0.0 and normalise(10) == 1.0 and normalise(5.5) == pytest.approx(0.5)


def test_judge_prompt_shows_question_gold_candidate_and_scale():
    from cowest.config import TaskConfig
    from cowest.tasks import get_task

    task = get_task(TaskConfig(name="demo"))
    ex = task.load("train")[0]
    msgs = judge_messages(task, ex, "Because it is theirs.\nAnswer: B")
    user = msgs[-1]["content"]
    assert ex.question.strip() in user
    assert f"Gold answer: {ex.gold[0]}" in user
    assert "Because it is theirs." in user
    assert "1 to 10" in user and "Score:" in user
