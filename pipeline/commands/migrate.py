"""``pipeline migrate``: create or update the MySQL schema, as the schema owner when one is known."""

from __future__ import annotations

import argparse

from pipeline.commands.context import Context


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("migrate", help="create or update the MySQL schema (as PIPELINE_MYSQL_ADMIN_URL, else "
                                       "PIPELINE_MYSQL_URL)")
    p.set_defaults(func=run)


def run(_args: argparse.Namespace, ctx: Context) -> int:
    from pipeline.adapters.mysql import migrations

    admin = ctx.mysql_admin_url()
    url = admin or ctx.mysql_url()
    before = migrations.schema_version(url)
    version = migrations.migrate_schema(url, "PIPELINE_MYSQL_ADMIN_URL" if admin else "PIPELINE_MYSQL_URL")
    change = "already current" if before == version else f"migrated from version {before}"
    print(f"migrate: schema at version {version} ({change}) in {url}")
    return 0
