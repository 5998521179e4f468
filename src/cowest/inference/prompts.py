"""Every prompt cowest sends, in one place.

The weak model drafts in one of three interaction formats (METHOD.md step 2):
``direct`` (an answer only), ``knowledge`` (background knowledge, no answer) and ``cot`` (a short
explanation, then an initial answer). The strong model answers alone with zero-shot chain of thought,
refines a draft (collaboration), or reads the weak model's prediction and confidence (SuperICL).
All final answers end with the answer line of :mod:`cowest.chat` (``Answer: ...``), which the task's parser reads.
"""

from __future__ import annotations

from cowest.chat import ANSWER, Messages, answer_form, answer_line
from cowest.tasks.base import Example, Task

WEAK_SYSTEM = "You are a careful domain expert."
STRONG_SYSTEM = "You are a helpful, knowledgeable assistant."

_DRAFT_ASK = {
    "direct": "Reply with the answer only, on one line, in the form {form}.",
    "knowledge": (
        "Write the background knowledge (facts, definitions, rules) needed to answer this question, "
        "in one to three sentences. Do not state the answer."
    ),
    "cot": (
        "Explain your reasoning in one or two sentences, then give your answer on the last line "
        "in the form {form}."
    ),
}

_DRAFT_NAME = {
    "direct": "an initial answer",
    "knowledge": "background knowledge",
    "cot": "a short explanation and an initial answer",
}


def _to_strong(content: str) -> Messages:
    """A prompt for the strong model: its system line, then ``content`` as the user turn."""
    return [{"role": "system", "content": STRONG_SYSTEM}, {"role": "user", "content": content}]


def _question_block(task: Task, example: Example) -> str:
    return f"{task.instruction()}\n\n{example.question.strip()}"


def weak_messages(task: Task, example: Example, fmt: str) -> Messages:
    """The weak model's drafting prompt (used identically in SFT, feedback and inference)."""
    ask = _DRAFT_ASK[fmt].format(form=answer_form(task.answer_format()))
    return [
        {"role": "system", "content": WEAK_SYSTEM},
        {"role": "user", "content": f"{_question_block(task, example)}\n\n{ask}"},
    ]


def weak_target(task: Task, example: Example, fmt: str, rationale: str | None) -> str:
    """The SFT target for ``fmt``. ``cot``/``knowledge`` need a rationale; without one, ``direct``."""
    answer = answer_line(task.gold_answer(example))
    rationale = (rationale or "").strip()
    if fmt == "cot" and rationale:
        return f"{rationale}\n{answer}"
    if fmt == "knowledge" and rationale:
        return rationale
    return answer


def strong_alone_messages(task: Task, example: Example) -> Messages:
    """Zero-shot chain of thought: the strong model alone (z in METHOD.md)."""
    return _to_strong(
        f"{task.instruction()} Think step by step in at most three short sentences, then give the "
        f"final answer on the last line in the form {answer_form(task.answer_format())}.\n\n"
        f"{example.question.strip()}"
    )


def collab_messages(task: Task, example: Example, draft: str, fmt: str) -> Messages:
    """The strong model refines the weak model's draft into the final answer (π_s(·|x, y)).

    Fixed text comes first, then the question, then the draft: servers that reuse a cached prompt
    prefix (llama.cpp, OpenAI's prompt caching) then re-read only what changes, and the K drafts of one
    question in feedback share everything up to the draft.
    """
    return _to_strong(
        f"{task.instruction()} A smaller model that was fine-tuned on this domain wrote "
        f"{_DRAFT_NAME[fmt]} for the question below. The draft holds domain knowledge you may lack, "
        "but it can be wrong. Weigh it against your own knowledge, reason briefly, then give the "
        f"final answer on the last line in the form {answer_form(task.answer_format())}.\n\n"
        f"Question:\n{example.question.strip()}\n\n<draft>\n{draft.strip()}\n</draft>"
    )


def supericl_messages(
    task: Task,
    example: Example,
    prediction: str | None,
    confidence: float | None,
    demos: list[tuple[Example, str | None, float | None]] = (),  # type: ignore[assignment]
) -> Messages:
    """SuperICL (Xu et al. 2023): the weak model's prediction and confidence as in-context evidence.

    ``demos`` are training examples shown with the weak model's prediction, its confidence and the
    gold answer, so the strong model can calibrate how far to trust the small model.
    """

    def evidence(pred: str | None, conf: float | None) -> str:
        conf_txt = f" (confidence {conf:.2f})" if conf is not None else ""
        return f"Fine-tuned small model's prediction: {pred if pred is not None else 'none'}{conf_txt}"

    parts = [task.instruction(), ""]
    for ex, pred, conf in demos:
        parts += [
            ex.question.strip(),
            evidence(pred, conf),
            answer_line(task.gold_answer(ex)),
            "",
        ]
    parts += [
        example.question.strip(),
        evidence(prediction, confidence),
        "",
        "Use the small model's prediction as evidence, overriding it when you are confident it is "
        "wrong. Reason briefly, then give the final answer on the last line in the form "
        f"{answer_form(task.answer_format())}.",
    ]
    return _to_strong("\n".join(parts))


def rationale_messages(task: Task, example: Example) -> Messages:
    """Ask the strong model to explain a known gold answer (``cot`` SFT targets where data has none)."""
    return _to_strong(
        f"{_question_block(task, example)}\n\nThe correct answer is: {task.gold_answer(example)}\n\n"
        "Write a one- or two-sentence explanation of why this is the answer, stating the key "
        f"fact. Do not restate the question and do not write '{ANSWER}'."
    )
