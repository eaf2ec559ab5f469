"""What the user should do about each outcome, in words specific enough to act on."""

from __future__ import annotations

from jobs.errors import Reason
from jobs.providers import Provider

_GENERAL: dict[Reason, str] = {
    Reason.NO_SUCH_HOST: (
        "The server name does not exist in DNS. Check the host for typos and that the domain's "
        "DNS records are published."
    ),
    Reason.DNS_UNAVAILABLE: (
        "DNS did not answer for the server name. This is usually temporary; the check will be "
        "retried. If it persists, check the domain's name servers."
    ),
    Reason.CONNECT_TIMEOUT: (
        "Nothing answered on that port. A firewall or the hosting provider is probably blocking "
        "it (port 25 and 465 are often blocked on cloud hosts); check the port and firewall rules."
    ),
    Reason.NO_GREETING: (
        "The server accepted the connection but never said hello. This usually means the port "
        "expects implicit TLS (465, 993) while plain or STARTTLS was used, or a firewall is "
        "interfering; check the port and TLS setting."
    ),
    Reason.TLS_HANDSHAKE_TIMEOUT: (
        "The TLS handshake did not finish in time. Check that the port really speaks TLS and "
        "that nothing on the path intercepts it."
    ),
    Reason.RESPONSE_TIMEOUT: (
        "The server stopped answering in the middle of the conversation. It may be overloaded; "
        "the check will be retried."
    ),
    Reason.CONNECTION_REFUSED: (
        "The server refused the connection: nothing listens on that port. Check the port number "
        "and that the mail service is running."
    ),
    Reason.CONNECTION_CLOSED: (
        "The server closed the connection unexpectedly. It may be rate-limiting or restarting; "
        "the check will be retried."
    ),
    Reason.NETWORK_UNREACHABLE: (
        "The server's address cannot be reached from here. Check the host and network routes."
    ),
    Reason.SERVICE_UNAVAILABLE: (
        "The server answered that the service is not available right now. Wait and retry; if it "
        "persists, contact the mail provider."
    ),
    Reason.PROTOCOL_ERROR: (
        "The server did not speak the expected protocol. Check that the host and port are the "
        "mail server's SMTP or IMAP port."
    ),
    Reason.TOO_MANY_CONNECTIONS: (
        "The mailbox has too many open connections. Close other mail clients or tools using it; "
        "the check will be retried later."
    ),
    Reason.DESTINATION_REFUSED: (
        "The server name resolves to an address this service does not connect to (a private "
        "network, loopback, link-local or cloud metadata address), so nothing was sent. Use the "
        "mail server's public host name. Operators whose mail servers are on a private network "
        "can allow it with INBOXCHECK_ALLOW_NETWORKS (for example 10.0.0.0/8)."
    ),
    Reason.CERT_EXPIRED: (
        "The server's TLS certificate has expired. The mail provider or server admin must renew it."
    ),
    Reason.CERT_UNTRUSTED: (
        "The server's TLS certificate is not signed by a trusted authority (self-signed or a "
        "private CA). Install a publicly trusted certificate, or add the CA to the trust store."
    ),
    Reason.HOSTNAME_MISMATCH: (
        "The server's TLS certificate is for a different name. Use the host name the certificate "
        "names (often the provider's own host, not your domain)."
    ),
    Reason.TLS_MODE_MISMATCH: (
        "The TLS mode does not fit the port: use implicit TLS (SSL) for 465 and 993, and STARTTLS "
        "for 587 and 143."
    ),
    Reason.STARTTLS_UNAVAILABLE: (
        "The server does not offer STARTTLS, so the password would travel in clear text and was "
        "not sent. Use the server's TLS port (465 for SMTP, 993 for IMAP) or enable TLS on it."
    ),
    Reason.TLS_HANDSHAKE_FAILED: (
        "The TLS handshake failed. Check the server's TLS configuration and the port's TLS mode."
    ),
    Reason.TLS_REQUIRED: (
        "The server takes logins only over TLS (or TLS is off for SMTP here, and the password was "
        "not sent). Turn smtp_use_tls on (STARTTLS on 587, or implicit TLS on 465) and keep "
        "imap_use_ssl on; set allow_insecure_auth only for a server on a trusted network that has "
        "no TLS."
    ),
    Reason.INVALID_CREDENTIALS: (
        "The server rejected the username or password. Check both (the username is usually the "
        "full email address); if the account uses two-step verification, use an app password."
    ),
    Reason.APP_PASSWORD_REQUIRED: (
        "The account has two-step verification and refuses its normal password here. Create an "
        "app password and use it instead."
    ),
    Reason.WEB_LOGIN_REQUIRED: (
        "The provider blocked this sign-in as unusual. Sign in to the mailbox once in a web "
        "browser from a trusted device, confirm it was you, then validate again; an app "
        "password avoids this."
    ),
    Reason.IMAP_DISABLED: (
        "IMAP access is turned off for this mailbox. Enable IMAP in the mailbox settings, or ask "
        "the domain admin to allow it."
    ),
    Reason.SMTP_AUTH_DISABLED: (
        "Authenticated SMTP (SMTP AUTH) is disabled for this mailbox or tenant. An admin must "
        "enable it, or the inbox must connect with OAuth2."
    ),
    Reason.BASIC_AUTH_DISABLED: (
        "The provider no longer accepts passwords (basic authentication) for this account, app "
        "passwords included. Connect the inbox with OAuth2."
    ),
    Reason.AUTH_MECHANISM_UNSUPPORTED: (
        "The server offers no password login method this check can use (PLAIN or LOGIN over "
        "TLS). Enable password authentication on the server, or connect with OAuth2."
    ),
    Reason.TOO_MANY_ATTEMPTS: (
        "The provider is rate-limiting logins for this account. Do not retry right away; the "
        "check will be retried after a pause."
    ),
    Reason.TEMPORARY_AUTH_FAILURE: (
        "The server could not check the login right now. The check will be retried."
    ),
    Reason.MAILBOX_UNAVAILABLE: (
        "The login worked but the INBOX could not be opened. Check that the mailbox exists and "
        "is not locked, archived or over quota."
    ),
    Reason.OAUTH_REAUTH_REQUIRED: (
        "The OAuth2 refresh token no longer works (revoked, expired after months unused, or the "
        "password changed). The inbox owner must connect the inbox again (sign in and consent); "
        "then send the new refresh token."
    ),
    Reason.OAUTH_CONSENT_REQUIRED: (
        "Signing in needs a person: consent to the app, a multi-factor or an interactive sign-in, "
        "or a conditional access policy blocks it. The inbox owner (or the tenant admin, for "
        "consent and policies) must sign in once interactively and grant the app's access."
    ),
    Reason.OAUTH_APP_MISCONFIGURED: (
        "The platform's OAuth app is refused by the provider (wrong or expired client secret, an "
        "unknown or unauthorised app, a scope it may not ask for): every inbox using this app "
        "fails. The platform's operator must fix the app's registration or credentials; the "
        "inbox owner cannot."
    ),
    Reason.AUTHENTICATED_NOT_CONNECTED: (
        "The server accepted the login, then refused every command: the account is "
        "authenticated but not connected to a mailbox. At Microsoft 365 this is in practice a "
        "wrong password or a user without an Exchange Online mailbox (no license with Exchange, "
        "or a shared mailbox signed in to directly). Check the password and that the user has a "
        "mailbox, then validate again."
    ),
    Reason.MALFORMED_PAYLOAD: "Fix the request as the message says and enqueue it again.",
    Reason.SEALED_CREDENTIALS: (
        "The credentials could not be opened. Producer and worker must share the same "
        "INBOXCHECK_SECRET_KEY; reseal and enqueue again."
    ),
}

_APP_PASSWORD_REASONS = (Reason.INVALID_CREDENTIALS, Reason.APP_PASSWORD_REQUIRED)
_ACCESS_OFF_REASONS = (Reason.INVALID_CREDENTIALS, Reason.IMAP_DISABLED, Reason.SMTP_AUTH_DISABLED)


def _each(provider: Provider, reasons: tuple[Reason, ...], text: str) -> dict[tuple[Provider, Reason], str]:
    return {(provider, reason): text for reason in reasons}


# Where a provider answers one generic text for a cause only it has, its advice says that cause.
_BY_PROVIDER: dict[tuple[Provider, Reason], str] = {
    (Provider.GOOGLE, Reason.APP_PASSWORD_REQUIRED): (
        "Google refuses the account password because 2-Step Verification is on. In the Google "
        "Account open Security > 2-Step Verification > App passwords, create one for Mail, and "
        "use its 16 characters as the password."
    ),
    (Provider.GOOGLE, Reason.INVALID_CREDENTIALS): (
        "Google rejected the username or password. Use the full address as username; with "
        "2-Step Verification on, the password must be an app password (Security > 2-Step "
        "Verification > App passwords)."
    ),
    (Provider.GOOGLE, Reason.IMAP_DISABLED): (
        "IMAP is off for this Gmail account: turn it on under Gmail Settings > Forwarding and "
        "POP/IMAP, or ask the Workspace admin to allow IMAP for the domain."
    ),
    (Provider.MICROSOFT, Reason.SMTP_AUTH_DISABLED): (
        "Microsoft 365 has SMTP AUTH turned off. A tenant admin must enable 'Authenticated SMTP' "
        "for this mailbox (Admin center > Users > Active users > Mail > Manage email apps) and "
        "allow it for the tenant, or the inbox must use OAuth2."
    ),
    (Provider.MICROSOFT, Reason.BASIC_AUTH_DISABLED): (
        "Microsoft 365 refuses password sign-in for this account, however right the password: "
        "the tenant has basic authentication turned off, or its sign-in policy (security "
        "defaults, multi-factor or Conditional Access) blocks it. App passwords will not work "
        "either. Connect the inbox with Microsoft's OAuth2 flow, or have an admin exempt it from "
        "the policy."
    ),
    (Provider.MICROSOFT, Reason.APP_PASSWORD_REQUIRED): (
        "The account uses multi-factor sign-in. Create an app password (Admin center > Users > "
        "Active users > Manage app passwords) or use OAuth2 if the tenant enforces it."
    ),
    (Provider.GOOGLE, Reason.OAUTH_REAUTH_REQUIRED): (
        "Google no longer accepts this refresh token: revoked, unused for six months, the "
        "password changed, too many tokens for the app, or an app left in Testing (tokens last "
        "seven days there). The inbox owner must connect the inbox again."
    ),
    (Provider.MICROSOFT, Reason.OAUTH_REAUTH_REQUIRED): (
        "Microsoft no longer accepts this refresh token (revoked, or unused for 90 days). The "
        "inbox owner must connect the inbox again; always keep the newest refresh token Microsoft "
        "returns, since each refresh issues one."
    ),
    (Provider.MICROSOFT, Reason.OAUTH_APP_MISCONFIGURED): (
        "Microsoft refuses the platform's app (client secret wrong or expired, app not in the "
        "tenant, or a scope it lacks). The platform's operator must fix the app registration in "
        "Entra ID; for app-only access the tenant admin grants IMAP.AccessAsApp and SMTP.SendAsApp "
        "and gives the Exchange service principal access to the mailbox."
    ),
    (Provider.MICROSOFT, Reason.INVALID_CREDENTIALS): (
        "Microsoft rejected the login. Check the password; if it is right, SMTP AUTH may be off "
        "for this mailbox (Admin center > Active users > Mail > Manage email apps > "
        "Authenticated SMTP), or the tenant may require OAuth2."
    ),
    **_each(
        Provider.ICLOUD,
        _APP_PASSWORD_REASONS,
        "iCloud Mail takes only an app-specific password over IMAP and SMTP, never the Apple "
        "Account password. Create one at account.apple.com > Sign-In and Security > "
        "App-Specific Passwords and use it; the username is the full iCloud address.",
    ),
    **_each(
        Provider.YAHOO,
        _APP_PASSWORD_REASONS,
        "Yahoo and AOL take only an app password over IMAP and SMTP. Create one under Account "
        "Info > Account Security > Generate app password and use it instead of the account "
        "password.",
    ),
    **_each(
        Provider.FASTMAIL,
        _APP_PASSWORD_REASONS,
        "Fastmail takes only an app password over IMAP and SMTP. Create one in Fastmail's "
        "settings under Privacy & Security (app passwords), giving it IMAP and SMTP access, and "
        "use it.",
    ),
    **_each(
        Provider.GMX,
        _ACCESS_OFF_REASONS,
        "GMX refuses IMAP and SMTP until they are switched on: in the GMX mailbox's settings, "
        "under POP3 & IMAP, allow access to the account via POP3 and IMAP; then check the "
        "password (an app password if two-factor sign-in is on).",
    ),
    **_each(
        Provider.WEB_DE,
        _ACCESS_OFF_REASONS,
        "WEB.DE refuses IMAP and SMTP until they are switched on: in the WEB.DE mailbox's "
        "settings, under POP3/IMAP, allow access via POP3 and IMAP; then check the password (an "
        "app password if two-factor sign-in is on).",
    ),
    **_each(
        Provider.ZOHO,
        (*_ACCESS_OFF_REASONS, Reason.APP_PASSWORD_REQUIRED),
        "Zoho Mail needs IMAP access enabled (Settings > Mail Accounts > IMAP Access) before "
        "IMAP or SMTP logins work; with two-factor sign-in on, use an application-specific "
        "password (Zoho Accounts > Security > App Passwords).",
    ),
    **_each(
        Provider.YANDEX,
        (*_ACCESS_OFF_REASONS, Reason.APP_PASSWORD_REQUIRED),
        "Yandex Mail needs access by mail clients allowed (Mail settings > Email clients: allow "
        "IMAP, with app passwords) and then an app password for mail (Yandex ID > Security > "
        "App passwords); the account password is refused.",
    ),
    **_each(
        Provider.MAIL_RU,
        _APP_PASSWORD_REASONS,
        "Mail.ru takes a password for external applications over IMAP and SMTP, not the account "
        "password. Create one under Account settings > Security > Passwords for external "
        "applications and use it.",
    ),
    **_each(
        Provider.PROTON,
        (
            *_APP_PASSWORD_REASONS,
            Reason.NO_SUCH_HOST,
            Reason.CONNECT_TIMEOUT,
            Reason.CONNECTION_REFUSED,
        ),
        "Proton Mail has no IMAP or SMTP servers on the internet: it works only through Proton "
        "Mail Bridge on the user's own machine (a paid plan). Run Bridge and use the host, ports "
        "and the Bridge password it shows, not the Proton account password.",
    ),
}


def resolution(reason: Reason, provider: Provider | None = None) -> str:
    """The advice for `reason`, the provider's own where it has one."""
    if provider is not None and (provider, reason) in _BY_PROVIDER:
        return _BY_PROVIDER[(provider, reason)]
    return _GENERAL[reason]
