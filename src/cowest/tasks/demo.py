"""The embedded offline demo task: Acme Robotics ticket routing.

Acme Robotics (fictional) sells twelve products with invented names, each owned by one of four teams.
Company policy: a support ticket goes to the team that OWNS THE PRODUCT, whatever the complaint is
about. Most complaints sound like another team's business (a double charge sounds like Billing), so a
general strong model that cannot know the ownership routes by complaint and is right only when the
complaint happens to match the owner; a small model fine-tuned on the training tickets learns the
product -> team map. That is the weak-knows/strong-reasons split CoWest is built for.

The data is generated deterministically in code (no files needed). ``DemoTask.write(dir)`` writes it
in the MedMCQA row format, and ``DemoTask(data=dir)`` reads such a directory instead.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from cowest.errors import ConfigError, DataError
from cowest.tasks.base import Example
from cowest.tasks.data import Row, load_rows
from cowest.tasks.medmcqa import LETTERS, OPTION_FIELDS, ChoiceTask, medmcqa_examples

TEAMS = ("Firmware", "Logistics", "Billing", "Safety")  # options A-D, always in this order

# Interleaved by owner (A, B, C, D, A, ...) so that any prefix of the list is label-balanced.
PRODUCTS: tuple[tuple[str, str], ...] = (
    ("Quillon-7", "Firmware"),
    ("Brask Mk II", "Logistics"),
    ("Vextra-4", "Billing"),
    ("Orrin S2", "Safety"),
    ("Tessel X", "Firmware"),
    ("Palo-9", "Logistics"),
    ("Kestrel Mk I", "Billing"),
    ("Lumo-12", "Safety"),
    ("Zephin Q", "Firmware"),
    ("Halden R3", "Logistics"),
    ("Mirth-5", "Billing"),
    ("Cobalt V", "Safety"),
)

# (complaint, the team the complaint itself suggests; None = no obvious team)
COMPLAINTS: tuple[tuple[str, str | None], ...] = (
    ("my {p} froze halfway through the last software update and will not boot", "Firmware"),
    ("the {p} keeps rebooting every few minutes since the latest patch", "Firmware"),
    ("the companion app can no longer connect to my {p}", "Firmware"),
    ("the {p} shows error code E-17 on its display after startup", "Firmware"),
    ("the voice commands on my {p} stopped working after the update", "Firmware"),
    ("the {p} forgets all its settings whenever it is switched off", "Firmware"),
    ("the sensors of my {p} report nonsense readings since the firmware upgrade", "Firmware"),
    ("my {p} arrived three weeks after the promised delivery date", "Logistics"),
    ("the box with my {p} was crushed in transit and the casing is dented", "Logistics"),
    ("I ordered one {p} but received two and cannot find out how to return the extra one", "Logistics"),
    ("the tracking number for my {p} shipment has not updated in ten days", "Logistics"),
    ("the courier left my {p} at the wrong address", "Logistics"),
    ("my {p} was delivered without its charging dock", "Logistics"),
    ("I need to send my {p} back but the return label never arrived", "Logistics"),
    ("I was charged twice for my {p}", "Billing"),
    ("the invoice for my {p} shows the wrong company VAT number", "Billing"),
    ("my refund for the returned {p} has not arrived after a month", "Billing"),
    ("the subscription fee for my {p} went up without any notice", "Billing"),
    ("my discount code was not applied when I bought the {p}", "Billing"),
    ("I was billed for an extended warranty on my {p} that I never ordered", "Billing"),
    ("the monthly payment plan for my {p} was cancelled by mistake", "Billing"),
    ("the battery of my {p} got so hot that it melted the plastic around it", "Safety"),
    ("my {p} gave me a small electric shock when I touched the casing", "Safety"),
    ("the emergency stop button on the {p} does nothing", "Safety"),
    ("my {p} started moving on its own while my child was next to it", "Safety"),
    ("there is a burning smell coming from the {p}", "Safety"),
    ("a sharp edge on the {p} cut my hand", "Safety"),
    ("the arm of the {p} swung out and knocked over a shelf", "Safety"),
    ("the {p} makes a loud clicking noise when it runs", None),
    ("I have a general question about my {p} and could not find a phone number", None),
)

_NAMES = ("Dana Whitfield", "Ravi Menon", "Olga Petrova", "Tomás Ruiz", "Mei Chen", "Kwame Asante",
          "Ingrid Holm", "Sam O'Neill", "Yuki Tanaka", "Lena Vogel", "Omar Haddad", "Priya Das")
_GREETINGS = ("Hi,", "Hello,", "Dear Acme support,", "Good morning,", "Hey there,")
_CLOSINGS = ("Please sort this out.", "Can someone help?", "I expect a quick answer.",
             "Thanks in advance.", "This is really frustrating.", "What should I do?")

SPLITS = ("train", "dev")
OWNER = dict(PRODUCTS)


def _per_product(n: int) -> list[int]:
    """How many tickets each product gets in a split of ``n`` (as even as possible)."""
    base, extra = divmod(n, len(PRODUCTS))
    return [base + (1 if i < extra else 0) for i in range(len(PRODUCTS))]


def generate_rows(n_train: int = 240, n_dev: int = 120, seed: int = 0) -> dict[str, list[dict[str, Any]]]:
    """The demo splits as MedMCQA-format rows. Each (product, complaint) pair is used at most once,
    so train and dev tickets never overlap; every product appears in both splits."""
    if min(n_train, n_dev) < len(PRODUCTS) or n_train + n_dev > len(PRODUCTS) * len(COMPLAINTS):
        raise ConfigError(
            f"demo task: need {len(PRODUCTS)} <= n per split and n_train + n_dev <= "
            f"{len(PRODUCTS) * len(COMPLAINTS)}, got {n_train} + {n_dev}"
        )
    rng = random.Random(seed)
    ticket_numbers = rng.sample(range(10000, 100000), n_train + n_dev)
    pairs: dict[str, list[tuple[int, int]]] = {"train": [], "dev": []}
    for p, (k_train, k_dev) in enumerate(zip(_per_product(n_train), _per_product(n_dev))):
        order = list(range(len(COMPLAINTS)))
        rng.shuffle(order)
        pairs["train"] += [(p, c) for c in order[:k_train]]
        pairs["dev"] += [(p, c) for c in order[k_train : k_train + k_dev]]
    out: dict[str, list[dict[str, Any]]] = {}
    for split in SPLITS:
        rng.shuffle(pairs[split])  # mix products and labels through the file
        out[split] = [
            _row(split, i, p, c, ticket_numbers.pop(), rng) for i, (p, c) in enumerate(pairs[split])
        ]
    return out


def _row(split: str, i: int, p: int, c: int, ticket: int, rng: random.Random) -> dict[str, Any]:
    product, owner = PRODUCTS[p]
    complaint, suggested = COMPLAINTS[c]
    body = complaint.format(p=product)
    text = f"{rng.choice(_GREETINGS)} {body[0].upper()}{body[1:]}. {rng.choice(_CLOSINGS)}"
    stem = f'Support ticket #{ticket} from {rng.choice(_NAMES)}:\n"{text}"\nWhich team must handle this ticket?'
    row: dict[str, Any] = {"id": f"{split}-{i:04d}", "question": stem}
    row.update(dict(zip(OPTION_FIELDS, TEAMS)))
    row["cop"] = TEAMS.index(owner)
    row["exp"] = f"Per Acme policy tickets go to the product's owner; the {product} is owned by the {owner} team."
    row["product"] = product
    row["complaint"] = c  # index into COMPLAINTS
    row["complaint_team"] = suggested
    return row


class DemoTask(ChoiceTask):
    name = "demo"
    labels = LETTERS

    def __init__(self, data: str | Path | None = None, *, n_train: int = 240, n_dev: int = 120, seed: int = 0):
        self.data = data
        self.n_train, self.n_dev, self.seed = n_train, n_dev, seed
        self._rows: dict[str, list[dict[str, Any]]] | None = None

    def instruction(self) -> str:
        return (
            "Route the Acme Robotics support ticket: by company policy a ticket goes to the team that owns "
            "the product it mentions, whatever the complaint is about."
        )

    def rows(self) -> dict[str, list[dict[str, Any]]]:
        """The generated splits (cached)."""
        if self._rows is None:
            self._rows = generate_rows(self.n_train, self.n_dev, self.seed)
        return self._rows

    def load(self, split: str) -> list[Example]:
        if self.data is not None:
            return medmcqa_examples(load_rows(self.data, split, task=self.name, hub_name=None))
        if split not in SPLITS:
            raise DataError(f"demo task: no split {split!r}; splits: {', '.join(SPLITS)}")
        return medmcqa_examples([Row(i, f"demo[{split}] row {i}", r) for i, r in enumerate(self.rows()[split])])

    def write(self, directory: str | Path) -> list[Path]:
        """Write the generated splits as ``<split>.jsonl`` files (MedMCQA row format)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        paths = []
        for split, rows in self.rows().items():
            path = directory / f"{split}.jsonl"
            path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
            paths.append(path)
        return paths


__all__ = ["DemoTask", "generate_rows", "PRODUCTS", "TEAMS", "COMPLAINTS"]
