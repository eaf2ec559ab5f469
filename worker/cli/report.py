"""The short, readable report `inboxcheck validate` prints for a person at a terminal."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from jobs.result import ProtocolResult, ValidationResult


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
        verdict = "[green]ok[/]" if part.status == "ok" else f"[red]{part.error_code}[/] ({part.reason})"
        console.print(
            f"[bold]{part.protocol.upper()}[/] {part.host}:{part.port} ({part.security}): {verdict}",
            highlight=False,
        )
        console.print(_protocol_table(part))
        if part.tls is not None and part.tls.version:
            expiry = (
                f", certificate valid until {part.tls.cert_not_after:%Y-%m-%d}"
                if part.tls.cert_not_after
                else ""
            )
            console.print(f"  TLS: {part.tls.version} {part.tls.cipher}{expiry}")
        if part.status == "failed":
            console.print(f"  {part.detail}", markup=False, highlight=False)
            if part.reply_text:
                code = part.reply_code or part.reply_status or ""
                console.print(f"  server said: {code} {part.reply_text}", markup=False, highlight=False)
        console.print()
    if result.status == "valid":
        console.print(f"[bold green]VALID[/] {result.inbox_id}")
        console.print(
            f"Recommended daily limit: {result.recommended_daily_limit} "
            f"(range {result.recommended_range.low}-{result.recommended_range.high}, "
            f"provider maximum {result.max_daily_limit})"
        )
    else:
        retry = " (transient: worth retrying later)" if result.retryable else ""
        console.print(f"[bold red]INVALID[/] {result.inbox_id}: {result.error_code} / {result.reason}{retry}")
        console.print(f"What to do: {result.resolution}", markup=False, highlight=False)
