"""Issue 10, "who gets in": the accounts, the containers backend's parameters, `stack env` quoting, topic replicas."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import tomllib
import types
from pathlib import Path
from typing import Any

import pytest

from pipeline.services import containers, mysql_process
from pipeline.settings import MysqlUrl

ROOT = Path(__file__).resolve().parents[2]
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


def test_stack_env_is_safe_to_eval(tmp_path: Path) -> None:
    """Catches env_lines printing a value unquoted: `eval` would cut it at `&`/space or run a `$(...)` in it."""
    from pipeline.commands.stack import env_lines
    from pipeline.services.connections import Connections

    marker = tmp_path / "pwned"
    hostile = f"p'w\"$(touch {marker});`touch {marker}`"
    # render() percent-encodes the password but keeps the query's "?" and "&"; the bootstrap is printed as it is.
    writer = MysqlUrl("pipeline", hostile, "127.0.0.1", 3307, "pipeline", ssl_mode="REQUIRED", ssl_ca="/tmp/a b.pem")
    admin = MysqlUrl("pipeline_admin", "a b", "127.0.0.1", 3307, "pipeline")
    reader = MysqlUrl("pipeline_reader", "r", "127.0.0.1", 3307, "pipeline")
    bootstrap = f"127.0.0.1:9092,h 2:9093;$(touch {marker})&x=1"
    text = env_lines(Connections(bootstrap, writer, "processes", admin, reader))
    assert text.splitlines()[-1] == ("export PIPELINE_KAFKA_BOOTSTRAP PIPELINE_MYSQL_URL PIPELINE_MYSQL_ADMIN_URL "
                                     "PIPELINE_MYSQL_READ_URL")
    shell = subprocess.run(
        ["bash", "-c", 'eval "$(cat)"; wait; printf "%s\\n" "$PIPELINE_MYSQL_URL" "$PIPELINE_MYSQL_ADMIN_URL" '
                       '"$PIPELINE_MYSQL_READ_URL" "$PIPELINE_KAFKA_BOOTSTRAP"'],
        input=text, capture_output=True, text=True, check=True, cwd=tmp_path)
    assert shell.stdout.splitlines() == [writer.render(), admin.render(), reader.render(), bootstrap]
    assert [MysqlUrl.parse(u) for u in shell.stdout.splitlines()[:3]] == [writer, admin, reader]
    assert shell.stderr == "" and not marker.exists()
    # No admin known (external services with one account): the line is left out, the reader is the writer.
    single = env_lines(Connections("k:1", writer, "external"))
    assert "PIPELINE_MYSQL_ADMIN_URL" not in single and single.count(writer.render().split("@")[1]) == 2


class _MysqlStartFailed(Exception):
    pass


class _FakeContainer:
    """testcontainers' DockerContainer without Docker: keeps env and port bindings as it does; start may fail."""

    made: list[_FakeContainer] = []
    fail_image = ""

    def __init__(self, image: str, **kwargs: Any) -> None:
        self.image, self.env, self.stopped = image, dict(kwargs.get("env") or {}), False
        self.ports: dict[str, Any] = {str(p): None for p in kwargs.get("ports") or ()}
        self.made.append(self)

    def with_env(self, key: str, value: str) -> _FakeContainer:
        self.env[key] = value
        return self

    def with_bind_ports(self, container: str | int, host: Any = None) -> _FakeContainer:
        self.ports[str(container)] = host
        return self

    def with_exposed_ports(self, *ports: str | int) -> _FakeContainer:
        self.ports.update({str(p): None for p in ports})
        return self

    def start(self) -> _FakeContainer:
        if self.image == self.fail_image:
            raise _MysqlStartFailed(self.image)
        return self

    def stop(self, *args: Any, **kwargs: Any) -> None:
        self.stopped = True


def test_containers_start_publishes_on_loopback_with_a_random_root_password_and_cleans_up_a_failed_start(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Catches start() binding ports beyond 127.0.0.1, a fixed or "test" root password, or leaving Kafka running."""
    fake_module = types.ModuleType("testcontainers.core.container")
    fake_module.DockerContainer = _FakeContainer  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "testcontainers.core.container", fake_module)
    monkeypatch.setenv("TESTCONTAINERS_RYUK_DISABLED", "true")
    monkeypatch.setattr(_FakeContainer, "made", [])
    monkeypatch.setattr(_FakeContainer, "fail_image", containers.MYSQL_IMAGE)
    root_passwords = []
    for _ in range(2):
        before = len(_FakeContainer.made)
        with pytest.raises(_MysqlStartFailed):
            containers.start()
        kafka, mysql = _FakeContainer.made[before:]
        assert (kafka.image, mysql.image) == (containers.KAFKA_IMAGE, containers.MYSQL_IMAGE)
        assert kafka.stopped and mysql.stopped  # nothing of the failed start is left running
        root_passwords.append(mysql.env["MYSQL_ROOT_PASSWORD"])
        assert "MYSQL_USER" not in mysql.env and "MYSQL_PASSWORD" not in mysql.env
        for container in (kafka, mysql):
            assert container.ports and all(isinstance(bind, tuple) and bind[0] == "127.0.0.1"
                                           for bind in container.ports.values()), container.ports
    assert "test" not in root_passwords and len(set(root_passwords)) == 2 and min(map(len, root_passwords)) >= 24


def test_topics_get_three_replicas_where_the_cluster_has_them() -> None:
    from pipeline.adapters.kafka_io import replication_factor

    assert [replication_factor(n) for n in (1, 2, 3, 5)] == [1, 2, 3, 3]


class _FakeAdmin:
    """kafka-python's KafkaAdminClient without a broker: a cluster of ``brokers`` nodes, the topic not there yet."""

    brokers = 0
    created: list[Any] = []

    def __init__(self, **kwargs: Any) -> None:
        pass

    def list_topics(self) -> list[str]:
        return ["someone-elses"]

    def describe_cluster(self) -> dict[str, Any]:
        return {"brokers": [{"node_id": n, "host": "127.0.0.1", "port": 9092 + n} for n in range(self.brokers)]}

    def create_topics(self, new_topics: list[Any], **kwargs: Any) -> None:
        self.created.extend(new_topics)

    def close(self) -> None:
        pass


@pytest.mark.parametrize(("brokers", "replicas"), [(3, 3), (1, 1)])
def test_ensure_topic_creates_the_topic_with_three_replicas_where_the_cluster_has_them(
        monkeypatch: pytest.MonkeyPatch, brokers: int, replicas: int) -> None:
    """Catches ensure_topic creating topics with a fixed replication factor instead of min(3, brokers)."""
    from pipeline.adapters import kafka_io

    monkeypatch.setattr(kafka_io, "KafkaAdminClient", _FakeAdmin)
    monkeypatch.setattr(_FakeAdmin, "brokers", brokers)
    monkeypatch.setattr(_FakeAdmin, "created", [])
    kafka_io.ensure_topic("127.0.0.1:9092", "trades", partitions=6, options={})
    assert [(t.name, t.num_partitions, t.replication_factor) for t in _FakeAdmin.created] == [("trades", 6, replicas)]


def test_cryptography_is_a_dependency_and_lets_pymysql_rsa_encrypt_a_password() -> None:
    """Catches dropping cryptography: MySQL 8's sha2 logins without TLS then fail whenever the server cache is cold."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa
    from packaging.requirements import Requirement
    from pymysql import _auth

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    installed = importlib.metadata.requires("crypto-pipeline") or []
    for requirements in (declared, installed):
        assert any(r.name == "cryptography" and r.marker is None for r in map(Requirement, requirements))
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    password, salt = "pw-é-s3cret".encode(), bytes(range(1, 21))
    sealed = _auth.sha2_rsa_encrypt(password, salt, pem)
    oaep = padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA1()), algorithm=hashes.SHA1(), label=None)
    assert key.decrypt(sealed, oaep) == bytes(b ^ salt[i % len(salt)] for i, b in enumerate(password + b"\0"))


def test_migrate_is_a_command() -> None:
    from pipeline.cli import build_parser
    from pipeline.commands import migrate

    assert build_parser().parse_args(["migrate"]).func is migrate.run


def test_a_kafka_cluster_id_beginning_with_a_dash_is_not_read_as_an_option(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """One random cluster id in 64 begins with "-": as a separate argument it read as an option and the start failed."""
    from pipeline.services.kafka_process import format_arguments

    args = format_arguments("-x9Fq", tmp_path / "server.properties")
    assert args[:2] == ["format", "--cluster-id=-x9Fq"] and "-x9Fq" not in args
