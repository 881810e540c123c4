"""``trustmesh ca …`` (placeholder group; the CA commands are filled in by the CA work)."""

import click


@click.group("ca")
def ca_group() -> None:
    """The bundled CA: init, issue, token, serve, bundle."""
