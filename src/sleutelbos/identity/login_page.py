"""The authorization endpoint's minimal login and consent page (HTML, no script).

It shows which application asks for which scopes, takes username, password and (when enrolled) a TOTP code, and
posts back to ``/oauth2/authorize`` with the authorization request's parameters, which are validated again there.
Every value is HTML-escaped; the page may not be framed (clickjacking) and is not cached. Left out: a CSRF token
on the form (a forged post can at most log the victim into an attacker-chosen account for a client and redirect URI
that are registered), remembered sessions (every authorization asks for the password again), and consent memory.
"""

from __future__ import annotations

from html import escape

from starlette.responses import HTMLResponse

HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
}


def login_page(app_name: str, scope: list[str], form: dict[str, str], error: str | None = None,
               status: int = 200) -> HTMLResponse:
    hidden = "\n".join(
        f'<input type="hidden" name="{escape(k)}" value="{escape(v)}">' for k, v in sorted(form.items())
    )
    scopes = "".join(f"<li>{escape(s)}</li>" for s in scope) or "<li>(no scope)</li>"
    problem = f'<p class="error" role="alert">{escape(error)}</p>' if error else ""
    html = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sign in — sleutelbos</title>
<style>body{{font-family:sans-serif;max-width:26rem;margin:3rem auto}}label{{display:block;margin:.6rem 0}}
input[type=text],input[type=password]{{width:100%}}.error{{color:#a00}}</style></head>
<body><h1>Sign in</h1>
<p><strong>{escape(app_name)}</strong> asks for access to:</p><ul>{scopes}</ul>
{problem}
<form method="post" action="/oauth2/authorize">
{hidden}
<label>Username <input type="text" name="username" autocomplete="username" required></label>
<label>Password <input type="password" name="password" autocomplete="current-password" required></label>
<label>One-time code (if enrolled) <input type="text" name="totp" inputmode="numeric" autocomplete="one-time-code"
 pattern="[0-9]{{6}}"></label>
<button type="submit" name="consent" value="allow">Allow</button>
<button type="submit" name="consent" value="deny" formnovalidate>Deny</button>
</form></body></html>"""
    return HTMLResponse(html, status_code=status, headers=HEADERS)


def error_page(error: str, detail: str, status: int = 400) -> HTMLResponse:
    html = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Authorization error</title></head>'
        f"<body><h1>Authorization error</h1><p><code>{escape(error)}</code>: {escape(detail)}</p></body></html>"
    )
    return HTMLResponse(html, status_code=status, headers=HEADERS)
