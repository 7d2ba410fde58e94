"""``sleutelbos identity ...`` commands."""

import typer

app = typer.Typer(help="Identity manager: OAuth 2.0 / OpenID Connect, Keyrock-compatible.", no_args_is_help=True)
