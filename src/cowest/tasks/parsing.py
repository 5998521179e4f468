"""Reading the answer out of a model's free-form output.

Models write answers in many shapes: ``Answer: (C)``, ``the answer is C.``, ``**C**``, ``C) text``,
the option text instead of the letter, reasoning before or after. The rules, in order:

1. An explicit marker (``Answer:``, ``the answer is``, ``correct option is``, ``Label:`` ...): the LAST
   marker whose line (or, if the line ends there, the next non-empty line) holds an answer wins.
2. No marker: scan lines from the last up; in each, a letter/label mention (the last one in the line).
   Multiple-choice options given as text are tried only after no line has a letter, and letters
   inside option texts ('Vitamin C') never count as letters.

Every parser returns None when nothing can be read, never a guess.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

# "Answer:", "the answer is", "final answer would be", "correct option:", "Label -", ...
_MARKER = re.compile(
    r"\b(?:final\s+answer|answer|correct\s+(?:answer|option|choice|letter|label)|safety\s+label|label"
    r"|classification|category)\b(?:\s*\([^)\n]{0,20}\))?\s*(?:would\s+be|should\s+be|is|:|=|-|–|—)\s*:?",
    re.IGNORECASE,
)
_FREEFORM_MARKER = re.compile(r"\b(?:final\s+)?answer\b\s*(?::|is\b\s*:?)", re.IGNORECASE)
# Capital A followed by one of these is still the letter ("A is correct"), otherwise an article.
_A_NOT_ARTICLE = {"is", "was", "would", "seems", "appears", "because", "since", "as", "and", "or", "fits", "matches"}
_QUOTES = "\"'`“”‘’"


def clean_markdown(text: str) -> str:
    """Drop bold/italic stars, backticks and heading hashes; they never carry an answer."""
    text = text.replace("*", "").replace("`", "")
    return re.sub(r"^[ \t]*#+[ \t]*", "", text, flags=re.MULTILINE)


def marker_spans(text: str, marker: re.Pattern[str] = _MARKER) -> list[tuple[int, int]]:
    """For each answer marker, last first: the span of the text after it up to the end of its line,
    or of the next non-empty line when the marker ends its line."""
    spans = []
    for m in reversed(list(marker.finditer(text))):
        start = m.end()
        end = text.find("\n", start)
        end = len(text) if end < 0 else end
        if not text[start:end].strip():
            for line in re.finditer(r"[^\n]*\S[^\n]*", text[end:]):
                start, end = end + line.start(), end + line.end()
                break
        spans.append((start, end))
    return spans


def marker_segments(text: str, marker: re.Pattern[str] = _MARKER) -> list[str]:
    """The stripped text of each :func:`marker_spans` span, last marker first."""
    return [text[a:b].strip() for a, b in marker_spans(text, marker)]


def nonempty_lines(text: str) -> list[str]:
    return [ln.strip() for ln in text.splitlines() if ln.strip()]


# ----------------------------------------------------------------------------------------------
# multiple choice


def _letter_class(letters: Sequence[str]) -> str:
    return "".join(re.escape(x) for x in letters if len(x) == 1)


def _is_article(text: str, end: int) -> bool:
    """Is the capital 'A' ending at ``end`` an article ("A patient ...")?"""
    m = re.match(r"\s+([a-z]+)", text[end:])
    return bool(m) and m.group(1) not in _A_NOT_ARTICLE


def leading_letter(segment: str, letters: Sequence[str]) -> str | None:
    """A letter at the very start of ``segment``: 'C', '(C)', 'C) text', 'option C', 'c.'"""
    cls = _letter_class(letters)
    if not cls:
        return None
    m = re.match(
        rf"[\s\"'\[(<{{]*(?:(?:option|choice|letter)\s*)?[\[(]?\s*([{cls}{cls.lower()}])(?=$|[\]\)}}>.:,;!?\s\"'\-–])",
        segment,
        re.IGNORECASE,
    )
    if not m:
        return None
    letter, end = m.group(1), m.end(1)
    tail = segment[end:]
    if letter.islower():
        # 'a'/'c' in prose are words; accept a lower-case letter only when punctuated or alone.
        if tail.strip() and not re.match(r"[\]\).:]", tail):
            return None
        letter = letter.upper()
    elif letter == "A" and _is_article(segment, end):
        return None
    return letter if letter in letters else None


def letter_mentions(line: str, letters: Sequence[str]) -> list[str]:
    """Standalone capital letters in ``line`` that name an option, in order."""
    cls = _letter_class(letters)
    if not cls:
        return []
    found = []
    for m in re.finditer(rf"(?<![\w'’\-])([{cls}])(?![\w'’])", line):
        if m.group(1) == "A" and _is_article(line, m.end(1)):
            continue
        found.append(m.group(1))
    return found


def option_text_match(segment: str, choices: Mapping[str, str]) -> str | None:
    """The letter whose option text occurs in ``segment`` (case-insensitive); the longest match wins,
    then the later one."""
    low = " ".join(segment.lower().split())
    best: tuple[int, int, str] | None = None
    for letter, option in choices.items():
        opt = " ".join(str(option).lower().split()).rstrip(".")
        if not opt:
            continue
        for m in re.finditer(rf"(?<!\w){re.escape(opt)}(?!\w)", low):
            key = (len(opt), m.start(), letter)
            if best is None or key[:2] > best[:2]:
                best = key
    return best[2] if best else None


def mask_options(text: str, choices: Mapping[str, str]) -> str:
    """``text`` with every occurrence of a multi-character option text blanked out (same length), so
    that letters inside options ('Vitamin C', 'Apo B-100') are not read as the chosen letter."""
    for option in sorted(choices.values(), key=len, reverse=True):
        words = str(option).split()
        if len("".join(words)) < 2:
            continue  # a one-character option ('A' in blood groups) is indistinguishable from a letter
        pattern = r"(?<!\w)" + r"\s+".join(re.escape(w) for w in words) + r"(?!\w)"
        text = re.sub(pattern, lambda m: re.sub(r"[^\n]", " ", m.group(0)), text, flags=re.IGNORECASE)
    return text


def _letter_in(segment: str, letters: Sequence[str], first: bool) -> str | None:
    letter = leading_letter(segment, letters)
    if letter is None:
        mentions = letter_mentions(segment, letters)
        letter = (mentions[0] if first else mentions[-1]) if mentions else None
    return letter


def parse_choice(text: str | None, letters: Sequence[str], choices: Mapping[str, str] | None = None) -> str | None:
    """The option letter a model chose, or None. ``choices`` (letter -> text) enables text matching."""
    if not text:
        return None
    text = clean_markdown(text)
    masked = mask_options(text, choices) if choices else text
    for a, b in marker_spans(masked):
        # right after a marker, the first mention is the answer
        letter = _letter_in(masked[a:b].strip(), letters, first=True)
        if letter is None and choices:
            letter = option_text_match(text[a:b], choices)
        if letter is not None:
            return letter
    lines = [(ln, mk) for ln, mk in zip(text.splitlines(), masked.splitlines()) if ln.strip()]
    for _, mk in reversed(lines):
        letter = _letter_in(mk.strip(), letters, first=False)
        if letter is not None:
            return letter
    if choices:
        for line, _ in reversed(lines):
            letter = option_text_match(line, choices)
            if letter is not None:
                return letter
    return None


# ----------------------------------------------------------------------------------------------
# closed label sets


def label_phrase(label: str) -> str:
    """How a label reads in prose: '__needs_caution__' -> 'needs caution'."""
    return " ".join(re.sub(r"[_\-]+", " ", label).lower().split())


def _fold(text: str) -> str:
    # Same length as ``text``, so match offsets stay valid.
    return re.sub(r"[_\-]", " ", text.lower())


def label_mentions(text: str, phrases: Mapping[str, str]) -> list[str]:
    """Labels mentioned in ``text``, in order. ``phrases`` maps a spelling ('needs caution') to its
    label. A mention inside a longer one ('needs caution' in 'probably needs caution') is dropped."""
    folded = _fold(text)
    spans: list[tuple[int, int, str]] = []
    for phrase, label in phrases.items():
        words = phrase.split()
        if not words:
            continue
        pattern = r"(?<![a-z0-9])" + r"\s+".join(re.escape(w) for w in words) + r"(?![a-z0-9])"
        spans += [(m.start(), m.end(), label) for m in re.finditer(pattern, folded)]
    kept = [
        s for s in spans if not any(o[0] <= s[0] and s[1] <= o[1] and (o[1] - o[0]) > (s[1] - s[0]) for o in spans)
    ]
    kept.sort(key=lambda s: (s[0], -(s[1] - s[0])))
    return [label for _, _, label in kept]


def label_phrases(labels: Sequence[str], aliases: Mapping[str, str] | None = None) -> dict[str, str]:
    """Spelling -> label for ``labels`` (their prose form) plus extra ``aliases``."""
    phrases = {label_phrase(lab): lab for lab in labels}
    for alias, lab in (aliases or {}).items():
        phrases[label_phrase(alias)] = lab
    return phrases


def parse_label(text: str | None, labels: Sequence[str], aliases: Mapping[str, str] | None = None) -> str | None:
    """The label a model chose, in any spelling ('Needs_Intervention', 'needs intervention'), or None."""
    if not text:
        return None
    text = clean_markdown(text)
    phrases = label_phrases(labels, aliases)
    for seg in marker_segments(text):
        found = label_mentions(seg, phrases)
        if found:
            return found[0]
    for line in reversed(nonempty_lines(text)):
        found = label_mentions(line, phrases)
        if found:
            return found[-1]
    return None


# ----------------------------------------------------------------------------------------------
# free-form


def _strip_answer(seg: str) -> str:
    seg = seg.strip()
    if seg.startswith("<") and seg.endswith(">"):  # the prompt's 'Answer: <...>' echoed literally
        seg = seg[1:-1]
    seg = seg.strip().strip(_QUOTES).strip()
    while seg.endswith((".", ",", ";")):
        seg = seg[:-1].rstrip().strip(_QUOTES).strip()
    return seg


def parse_freeform(text: str | None) -> str | None:
    """The text after the last 'Answer:' / 'answer is' marker up to the end of its line (or the last
    non-empty line without a marker), stripped of quotes and a trailing period; None if empty."""
    if not text:
        return None
    text = clean_markdown(text)
    segments = marker_segments(text, _FREEFORM_MARKER)
    for seg in segments:
        ans = _strip_answer(seg)
        if ans:
            return ans
    if segments:  # markers with nothing after them: the model gave no answer
        return None
    lines = nonempty_lines(text)
    if not lines:
        return None
    return _strip_answer(lines[-1]) or None
