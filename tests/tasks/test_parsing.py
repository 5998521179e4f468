import pytest

from cowest.tasks.parsing import (
    label_mentions,
    label_phrases,
    parse_choice,
    parse_freeform,
    parse_label,
)

LETTERS = ("A", "B", "C", "D")
CHOICES = {"A": "Antegrade", "B": "Retrograde", "C": "Antegrade and retrograde", "D": "None"}


@pytest.mark.parametrize(
    "text, want",
    [
        ("Answer: (C)", "C"),
        ("the answer is C.", "C"),
        ("**C**", "C"),
        ("C) Antegrade and retrograde", "C"),
        ("c", "C"),
        ("Answer: b) Retrograde", "B"),
        ("Axonal transport uses kinesin and dynein.\nAnswer: C", "C"),
        ("Answer: C\n\nExplanation: B would be only half the story, and A as well.", "C"),
        ("Kinesin moves cargo forward and dynein back, so both directions occur. The answer is C. "
         "Option A and B are each incomplete.", "C"),
        ("First I thought the answer is A, but dynein also works.\nFinal answer: **C**", "C"),
        ("The correct option is (B) Retrograde.", "B"),
        ("Answer: Antegrade and retrograde", "C"),  # option text, longest match beats 'Antegrade'
        ("I think it is antegrade and retrograde transport.", "C"),
        ("Answer: retrograde", "B"),
        ("A patient question. Both directions happen, so I pick C", "C"),  # 'A patient' is an article
        ("A", "A"),
        ("A is correct because kinesin is anterograde.", "A"),
        ("Answer:\n\nD", "D"),
        ("Answer: <B>", "B"),
        ("The correct answer is C: Antegrade and retrograde", "C"),
        ("I think the best answer would be (D).", "D"),
        ("Answer: A patient like this has both (C)", "C"),
        ("The answer is option D, none of these.", "D"),
        ("### Answer\nThe answer is (a).", "A"),
        ("I cannot tell from the question.", None),
        ("", None),
        ("Answer: E", None),  # not an option
        ("Let's think. A motor protein moves things.", None),  # only an article 'A'
    ],
)
def test_parse_choice(text, want):
    assert parse_choice(text, LETTERS, CHOICES) == want


def test_parse_choice_letter_in_line_beats_option_text_elsewhere():
    # A letter is an explicit choice; option text in trailing prose is weaker evidence.
    assert parse_choice("C\nRetrograde transport alone is by dynein.", LETTERS, CHOICES) == "C"


def test_parse_choice_without_choices_ignores_text():
    assert parse_choice("Answer: Antegrade and retrograde", LETTERS) is None


def test_parse_choice_more_letters():
    assert parse_choice("Answer: (E)", ("A", "B", "C", "D", "E")) == "E"


PROSOCIAL = (
    "__casual__",
    "__possibly_needs_caution__",
    "__probably_needs_caution__",
    "__needs_caution__",
    "__needs_intervention__",
)
ALIASES = {"need caution": "__needs_caution__", "need intervention": "__needs_intervention__"}


@pytest.mark.parametrize(
    "text, want",
    [
        ("__needs_intervention__", "__needs_intervention__"),
        ("Answer: needs intervention", "__needs_intervention__"),
        ("Label: Needs_Intervention", "__needs_intervention__"),
        ("casual", "__casual__"),
        ("The speaker is chatting about laundry.\nAnswer: __casual__", "__casual__"),
        ("Answer: possibly needs caution", "__possibly_needs_caution__"),
        ("Answer: Probably Needs Caution", "__probably_needs_caution__"),  # not 'needs caution'
        ("This is rude but not dangerous. The label is probably-needs-caution.", "__probably_needs_caution__"),
        ("Putting urine on a briefcase is harmful.\nAnswer: **__needs_caution__**", "__needs_caution__"),
        ("It is not casual at all; it needs caution.", "__needs_caution__"),  # last mention in line
        ("Answer: __needs_caution__\nReason: it is not casual talk.", "__needs_caution__"),
        ("I first thought the answer is casual, but no.\nFinal answer: needs intervention", "__needs_intervention__"),
        ("The user needs immediate help; this needs intervention.", "__needs_intervention__"),
        ("Safety label: NEEDS CAUTION", "__needs_caution__"),
        ("the context does not need caution? no — it does need caution", "__needs_caution__"),
        ("I am not sure.", None),
        ("", None),
    ],
)
def test_parse_label_prosocial(text, want):
    assert parse_label(text, PROSOCIAL, ALIASES) == want


def test_label_mentions_drop_contained():
    phrases = label_phrases(PROSOCIAL)
    assert label_mentions("probably needs caution, needs caution", phrases) == [
        "__probably_needs_caution__",
        "__needs_caution__",
    ]


def test_parse_label_generic_labels():
    assert parse_label("Sentiment: Positive.", ("negative", "positive")) == "positive"
    assert parse_label("it is unacceptable", ("acceptable", "unacceptable")) == "unacceptable"


@pytest.mark.parametrize(
    "text, want",
    [
        ("Answer: fixed exchange rate system", "fixed exchange rate system"),
        ('The answer is "Paris".', "Paris"),
        ("If Soros had not shorted the baht, it would stay pegged.\nAnswer: a fixed exchange rate.", "a fixed exchange rate"),
        ("Answer: London\nThis is because the capital would not move.", "London"),
        ("First guess, answer: Rome. On reflection:\nFinal answer: **Milan**", "Milan"),
        ("Answer:\n1945", "1945"),
        ("George Washington", "George Washington"),
        ("Reasoning line one.\n\nJohn Adams.\n", "John Adams"),
        ("answer is 'blue whale'", "blue whale"),
        ("Answer: `42`.", "42"),
        ("Answer: <Bonn>", "Bonn"),
        ("The final answer is: the Treaty of Paris", "the Treaty of Paris"),
        ("", None),
        ("   \n  ", None),
        ('Answer: ""', None),
    ],
)
def test_parse_freeform(text, want):
    assert parse_freeform(text) == want
