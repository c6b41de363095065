"""Issue 10, "who gets in": the accounts, the containers backend's parameters, `stack env` quoting, topic replicas."""

from __future__ import annotations

import subprocess

import pytest

from pipeline.services import containers, mysql_process
from pipeline.settings import MysqlUrl

PASSWORDS = {"pipeline_admin": "a-pw", "pipeline": "w-pw", "pipeline_reader": "r-pw"}


def _grants(statements: list[tuple[str, tuple[str, ...] | None]], user: str) -> set[str]:
    return {sql for sql, _ in statements if sql.startswith("GRANT") and f"TO '{user}'@" in sql}


def test_each_account_gets_exactly_its_privileges_on_the_pipeline_databases_only() -> None:
    statements = mysql_process.account_statements("127.0.0.1", PASSWORDS)
    on = ("`pipeline`.*", "`pipeline\\_%`.*")
    assert _grants(statements, "pipeline") == {f"GRANT SELECT, INSERT, UPDATE, DELETE ON {db} TO "
                                               "'pipeline'@'127.0.0.1'" for db in on}
    assert _grants(statements, "pipeline_reader") == {f"GRANT SELECT ON {db} TO 'pipeline_reader'@'127.0.0.1'"
                                                      for db in on}
    admin = _grants(statements, "pipeline_admin")
    assert len(admin) == 2 and all("CREATE, ALTER, INDEX, DROP" in g for g in admin)
    assert not any("ALL" in sql or "*.*" in sql or "GRANT OPTION" in sql for sql, _ in statements)
    # Passwords travel as parameters, never inside the SQL text.
    created = [(sql, params) for sql, params in statements if sql.startswith("CREATE USER")]
    assert [params for _, params in created] == [(pw,) for pw in PASSWORDS.values()]
    assert not any(pw in sql for sql, _ in statements for pw in PASSWORDS.values())


def test_the_local_stack_urls_name_three_accounts() -> None:
    urls = {k: MysqlUrl.parse(v) for k, v in mysql_process.urls("127.0.0.1", 3307, PASSWORDS).items()}
    assert {k: (u.user, u.password, u.database) for k, u in urls.items()} == {
        "url": ("pipeline", "w-pw", "pipeline"), "admin_url": ("pipeline_admin", "a-pw", "pipeline"),
        "read_url": ("pipeline_reader", "r-pw", "pipeline")}
    fresh = mysql_process.new_passwords()
    assert set(fresh) == set(PASSWORDS) and len(set(fresh.values())) == 3 and all(len(p) >= 24 for p in fresh.values())


def test_containers_publish_on_loopback_and_never_use_the_default_password() -> None:
    assert containers.published(3306, 40001) == {"3306/tcp": ("127.0.0.1", 40001)}
    kafka = containers.kafka_environment(40002, 40003)
    assert kafka["KAFKA_ADVERTISED_LISTENERS"] == "PLAINTEXT://127.0.0.1:40002"
    env = containers.mysql_environment("r4nd0m")
    assert env == {"MYSQL_ROOT_PASSWORD": "r4nd0m", "MYSQL_DATABASE": "pipeline"}  # no MYSQL_USER with ALL
    for weak in ("test", ""):
        with pytest.raises(ValueError):
            containers.mysql_environment(weak)
    statements = containers.provisioning_statements(PASSWORDS)
    assert _grants(statements, "pipeline") == {f"GRANT SELECT, INSERT, UPDATE, DELETE ON {db} TO 'pipeline'@'%'"
                                               for db in ("`pipeline`.*", "`pipeline\\_%`.*")}
    assert statements[-1] == ("DROP USER IF EXISTS 'root'@'%'", None)  # root: from inside the container only


class _Started:
    def __init__(self, log: list[str], name: str) -> None:
        self.log, self.name = log, name

    def stop(self) -> None:
        self.log.append(self.name)


def test_a_half_failed_containers_start_stops_what_it_started() -> None:
    stopped: list[str] = []
    with pytest.raises(ConnectionError), containers.stopped_on_failure() as started:
        started.append(_Started(stopped, "kafka"))
        started.append(_Started(stopped, "mysql"))
        raise ConnectionError("MySQL did not answer")
    assert stopped == ["mysql", "kafka"]
    with containers.stopped_on_failure() as started:
        started.append(_Started(stopped, "kept"))
    assert "kept" not in stopped


def test_stack_env_is_safe_to_eval() -> None:
    from pipeline.cli import env_lines
    from pipeline.services.stack import Connections

    hostile = "p'w\"$(touch /tmp/pwned);`id`"
    writer = MysqlUrl("pipeline", hostile, "127.0.0.1", 3307, "pipeline")
    admin = MysqlUrl("pipeline_admin", "a b", "127.0.0.1", 3307, "pipeline")
    reader = MysqlUrl("pipeline_reader", "r", "127.0.0.1", 3307, "pipeline")
    text = env_lines(Connections("127.0.0.1:9092", writer, "processes", admin, reader))
    assert text.splitlines()[-1] == ("export PIPELINE_KAFKA_BOOTSTRAP PIPELINE_MYSQL_URL PIPELINE_MYSQL_ADMIN_URL "
                                     "PIPELINE_MYSQL_READ_URL")
    shown = subprocess.run(
        ["bash", "-c", 'eval "$(cat)"; printf "%s\\n" "$PIPELINE_MYSQL_URL" "$PIPELINE_MYSQL_ADMIN_URL" '
                       '"$PIPELINE_MYSQL_READ_URL" "$PIPELINE_KAFKA_BOOTSTRAP"'],
        input=text, capture_output=True, text=True, check=True).stdout.splitlines()
    assert [MysqlUrl.parse(u) for u in shown[:3]] == [writer, admin, reader]
    assert shown[3] == "127.0.0.1:9092"
    # No admin known (external services with one account): the line is left out, the reader is the writer.
    single = env_lines(Connections("k:1", writer, "external"))
    assert "PIPELINE_MYSQL_ADMIN_URL" not in single and single.count(writer.render().split("@")[1]) == 2


def test_topics_get_three_replicas_where_the_cluster_has_them() -> None:
    from pipeline.adapters.kafka_io import replication_factor

    assert [replication_factor(n) for n in (1, 2, 3, 5)] == [1, 2, 3, 3]


def test_migrate_is_a_command() -> None:
    from pipeline.cli import build_parser

    assert build_parser().parse_args(["migrate"]).func.__name__ == "_migrate"


def test_a_kafka_cluster_id_beginning_with_a_dash_is_not_read_as_an_option(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """One random cluster id in 64 begins with "-": as a separate argument it read as an option and the start failed."""
    from pipeline.services.kafka_process import format_arguments

    args = format_arguments("-x9Fq", tmp_path / "server.properties")
    assert args[:2] == ["format", "--cluster-id=-x9Fq"] and "-x9Fq" not in args
