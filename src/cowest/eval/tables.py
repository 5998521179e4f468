"""Tables as the eval reports show them: markdown lines, and a rich table on the terminal with its notes."""

from __future__ import annotations

from typing import Any


def markdown(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|",
            *("| " + " | ".join(r) + " |" for r in rows)]


def print_rich(title: str, head: list[str], rows: list[list[str]], notes: dict[str, str] | None = None,
               console: Any = None) -> Any:
    """Print the table (first column left-aligned, the rest right) and its notes; returns the console."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for i, h in enumerate(head):
        table.add_column(h, justify="left" if i == 0 else "right")
    for r in rows:
        table.add_row(*r)
    console = console or Console()
    console.print(table)
    for k, v in (notes or {}).items():
        console.print(f"[yellow]{k}[/yellow]: {v}")
    return console
