"""``sleutelbos custody ...`` commands."""

import typer

app = typer.Typer(help="Key custody: keys made and used inside an HSM over PKCS#11.", no_args_is_help=True)
