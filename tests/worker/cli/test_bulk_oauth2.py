"""OAuth2 inboxes in a bulk CSV: the oauth2 object's fields as oauth2.<name> columns."""

from __future__ import annotations

from pathlib import Path

from worker.cli.bulk_file import read_rows

HEADER = "inbox_type,email,auth,oauth2.client_id,oauth2.refresh_token,oauth2.client_secret,oauth2.scopes\n"


def test_oauth2_columns_make_the_oauth2_object_and_secrets_stay_as_written() -> None:
    text = (
        HEADER
        + "GOOGLE_WORKSPACE,a@corp.test,oauth2,app-1, rt-with-spaces ,cs,https://mail.google.com/ extra\n"
    )
    rows = read_rows(Path("inboxes.csv"), text)
    assert rows.bad == []
    [(_, request)] = rows.requests
    assert request.oauth2 is not None and request.oauth2.refresh_token is not None
    assert request.oauth2.refresh_token.get_secret_value() == " rt-with-spaces "
    assert (request.oauth2.client_id, request.oauth2.scopes) == (
        "app-1",
        ["https://mail.google.com/", "extra"],
    )


def test_a_bad_oauth2_cell_is_named_without_its_value() -> None:
    text = HEADER + "OUTLOOK_365,a@corp.test,oauth2,,secret-refresh-token,,\n"
    rows = read_rows(Path("inboxes.csv"), text)
    [bad] = rows.bad
    assert "oauth2.client_id: is required with grant refresh_token" in str(bad)
    assert "secret-refresh-token" not in str(bad)
