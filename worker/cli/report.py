"""The short, readable report `inboxcheck validate` prints for a person at a terminal."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from jobs.result import ProtocolResult, ValidationResult
from worker.cli.terminal_text import plain


def _protocol_table(part: ProtocolResult) -> Table:
    table = Table(show_header=True, box=None, pad_edge=False)
    table.add_column("step")
    table.add_column("ms", justify="right")
    table.add_column("")
    for timing in part.steps:
        table.add_row(timing.step, f"{timing.ms:.1f}", "ok" if timing.ok else "[red]failed[/]")
    return table


def render(result: ValidationResult, console: Console) -> None:
    for part in (result.smtp, result.imap):
        verdict = (
            Text("ok", style="green")
            if part.status == "ok"
            else Text.assemble((str(part.error_code), "red"), f" ({part.reason})")
        )
        heading = Text.assemble(
            (part.protocol.upper(), "bold"),
            " ",
            plain(f"{part.host}:{part.port} ({part.security}): "),
            verdict,
        )
        console.print(heading, highlight=False)
        console.print(_protocol_table(part))
        if part.tls is not None and part.tls.version:
            expiry = (
                f", certificate valid until {part.tls.cert_not_after:%Y-%m-%d}"
                if part.tls.cert_not_after
                else ""
            )
            console.print(plain(f"  TLS: {part.tls.version} {part.tls.cipher}{expiry}"), highlight=False)
        if part.status == "failed":
            console.print(plain(f"  {part.detail}"), highlight=False)
            if part.reply_text:
                code = part.reply_code or part.reply_status or ""
                console.print(plain(f"  server said: {code} {part.reply_text}"), highlight=False)
        console.print()
    if result.provider is not None:
        # Whose servers these are: what the advice below is specific to.
        console.print(f"Provider: {result.provider}", highlight=False)
    if result.status == "valid":
        console.print(Text.assemble(("VALID", "bold green"), " ", plain(result.inbox_id)), highlight=False)
        console.print(
            f"Recommended daily limit: {result.recommended_daily_limit} "
            f"(range {result.recommended_range.low}-{result.recommended_range.high}, "
            f"provider maximum {result.max_daily_limit})"
        )
    else:
        retry = " (transient: worth retrying later)" if result.retryable else ""
        console.print(
            Text.assemble(
                ("INVALID", "bold red"),
                " ",
                plain(f"{result.inbox_id}: {result.error_code} / {result.reason}{retry}"),
            ),
            highlight=False,
        )
        console.print(plain(f"What to do: {result.resolution}"), highlight=False)
