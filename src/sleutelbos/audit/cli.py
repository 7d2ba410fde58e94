"""``sleutelbos audit ...`` commands."""

import typer

app = typer.Typer(help="Tamper-evident audit log (RFC 9162 Merkle tree, signed checkpoints).", no_args_is_help=True)
