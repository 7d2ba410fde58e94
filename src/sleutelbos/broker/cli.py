"""``sleutelbos broker ...`` commands."""

import typer

app = typer.Typer(help="NGSI-LD context broker (ETSI GS CIM 009).", no_args_is_help=True)
