"""``sleutelbos policy ...`` commands."""

import typer

app = typer.Typer(help="XACML 3.0 PDP and AuthZForce-compatible PAP.", no_args_is_help=True)
