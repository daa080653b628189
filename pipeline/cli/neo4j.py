"""``cnngraph neo4j start|stop|status|env``: the managed local Neo4j server (thin over :mod:`pipeline.neo4j.server`)."""

from __future__ import annotations

import click

from pipeline.cli.options import progress_bar
from pipeline.neo4j.server import HTTP_PORT_ENV, PLUGINS_ENV, PORT_ENV, ManagedServer
from pipeline.progress import NULL


@click.group("neo4j")
def neo4j_group() -> None:
    """Run a local Neo4j Community server from Maven Central jars (needs Java 17 and Maven).

    It listens on 127.0.0.1 only, with a generated password, serves Neo4j Browser over HTTP and
    runs Graph Data Science and APOC; it is the default target of cnngraph's loaders and exports
    when NEO4J_URI is not set.
    """


@neo4j_group.command()
@click.option("--port", type=int, default=None,
              help=f"Bolt port on 127.0.0.1 [default: ${PORT_ENV} or 7687].")
@click.option("--http-port", type=int, default=None,
              help=f"HTTP port on 127.0.0.1, for Neo4j Browser [default: ${HTTP_PORT_ENV} or 7474].")
@click.option("--no-plugins", is_flag=True, default=None,
              help=f"Run without Graph Data Science and APOC (or {PLUGINS_ENV}=0): smaller heap, faster start.")
@click.option("-s", "--silent", is_flag=True, help="Print nothing but errors.")
def start(port: int | None, http_port: int | None, no_plugins: bool | None, silent: bool) -> None:
    """Start the server in the background (downloading it on first use).

    A server already running is left as it is (stop it first to change its ports or plugins).
    """
    server = ManagedServer(port=port, http_port=http_port, plugins=False if no_plugins else None)
    conn = server.start(NULL if silent else progress_bar())
    if not silent:
        info = server.status()
        click.echo(f"Neo4j {server.version} is running at {conn.uri} (pid {info['pid']}); "
                   f"logs in {server.log_path.parent}")
        click.echo(f"Neo4j Browser: {info['browser']}  (user neo4j; password: `cnngraph neo4j env`)")
        click.echo(f"Plugins: {info['plugins']}; heap {info['heap']}, page cache {info['pagecache']}")
        click.echo('Point other clients at it with: eval "$(cnngraph neo4j env)"')


@neo4j_group.command()
def stop() -> None:
    """Stop the server."""
    server = ManagedServer()
    stopped = server.stop()
    click.echo("Neo4j stopped." if stopped else "Neo4j was not running.")


@neo4j_group.command()
@click.pass_context
def status(ctx: click.Context) -> None:
    """Show whether the server runs, where, and its files; exit 1 when it is down."""
    info = ManagedServer().status()
    for key, value in info.items():
        click.echo(f"{key}: {value if value is not None else '-'}")
    if not info["running"]:
        ctx.exit(1)


@neo4j_group.command()
def env() -> None:
    """Print the export line for NEO4J_URI, NEO4J_USERNAME and NEO4J_PASSWORD (for eval)."""
    click.echo(ManagedServer().env_exports())

