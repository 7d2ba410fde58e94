"""``sleutelbos policy ...`` commands."""

from __future__ import annotations

from pathlib import Path

import typer

from sleutelbos.policy.xacml import InvalidPolicy, InvalidRequest, Pdp, load_policy

app = typer.Typer(help="XACML 3.0 PDP and AuthZForce-compatible PAP.", no_args_is_help=True)


@app.command()
def decide(
    policy: Path = typer.Option(..., "--policy", exists=True, dir_okay=False, help="The root Policy or PolicySet."),
    policies: Path | None = typer.Option(
        None, "--policies", exists=True, file_okay=False, help="A directory of policies the root may reference."
    ),
    request: Path = typer.Option(
        ..., "--request", exists=True, dir_okay=False, help="A XACML request: .json (JSON Profile) or XML."
    ),
) -> None:
    """Decide one request against a policy and print the XACML response (XML, or JSON for a .json request)."""
    try:
        root = load_policy(policy.read_bytes())
        repository = [load_policy(p.read_bytes()) for p in sorted(policies.glob("*.xml"))] if policies else []
        pdp = Pdp(root, [root, *repository])
    except InvalidPolicy as exc:
        typer.echo(f"invalid policy: {exc.detail}", err=True)
        raise typer.Exit(2) from None
    body = request.read_bytes()
    try:
        response = pdp.decide_json(body) if request.suffix.lower() == ".json" else pdp.decide_xml(body)
    except InvalidRequest as exc:
        typer.echo(f"invalid request: {exc.detail}", err=True)
        raise typer.Exit(2) from None
    typer.echo(response.decode("utf-8"))
