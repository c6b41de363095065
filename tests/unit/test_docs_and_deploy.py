"""What users copy: README commands, docker-compose.yml and the Grafana dashboard must match the code."""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import yaml

from pipeline.adapters.mysql.migrations import MIGRATIONS
from pipeline.cli import build_parser
from pipeline.settings import MysqlUrl, Settings

ROOT = Path(__file__).resolve().parents[2]
DOCS = ("ARCHITECTURE", "C4_MODEL", "ADR", "TROUBLESHOOTING", "OPERATIONS_RUNBOOK", "INCIDENT_PLAYBOOK", "TESTING",
        "SECURITY", "PERFORMANCE", "ROADMAP", "FAQ")


def readme_commands() -> list[list[str]]:
    """Every `pipeline ...` command in README.md, in code blocks, tables and inline code."""
    text = (ROOT / "README.md").read_text()
    found = re.findall(r"(?m)^\s{4}(pipeline [^\n&|]+)", text) + re.findall(r"`(pipeline [^`]+)`", text)
    commands = []
    for raw in found:
        raw = raw.replace("\\|", "|").split(" & ")[0].strip().rstrip(')"')
        if "|" in raw:  # choices written as a|b: take the first
            raw = re.sub(r"(\S+?)\|\S+", r"\1", raw)
        raw = raw.replace("[", "").replace("]", "").replace(" ...", "")
        commands.append(shlex.split(raw)[1:])
    return commands


def test_readme_commands_are_real_commands() -> None:
    commands = readme_commands()
    assert len(commands) >= 10
    parser = build_parser()
    for args in commands:
        placeholders = {"PATH": "x.csv", "N": "5", "S": "BTCUSDT"}
        parser.parse_args([placeholders.get(a, a) for a in args])


def test_docs_hold_the_eleven_documents() -> None:
    for name in DOCS:
        text = (ROOT / "docs" / f"{name}.md").read_text()
        assert len(text) > 800, f"docs/{name}.md is a stub"


# The passwords compose requires (``${VAR:?...}``): no defaults, set in .env (see .env.example).
PASSWORDS = ("PIPELINE_MYSQL_ADMIN_PASSWORD", "PIPELINE_MYSQL_PASSWORD", "PIPELINE_MYSQL_READER_PASSWORD",
             "GRAFANA_ADMIN_PASSWORD")
TEST_ENV = {name: f"pw{i}{'0f' * 8}" for i, name in enumerate(PASSWORDS)}
# The MySQL accounts, fixed by the design: who connects with which URL, holding which grants on `pipeline`.
ACCOUNTS = {  # account: (its URL variable in the processor, its password variable, its grants)
    "pipeline_admin": ("PIPELINE_MYSQL_ADMIN_URL", "PIPELINE_MYSQL_ADMIN_PASSWORD", {"ALL PRIVILEGES"}),
    "pipeline": ("PIPELINE_MYSQL_URL", "PIPELINE_MYSQL_PASSWORD", {"SELECT", "INSERT", "UPDATE", "DELETE"}),
    "pipeline_reader": ("PIPELINE_MYSQL_READ_URL", "PIPELINE_MYSQL_READER_PASSWORD", {"SELECT"}),
}
INIT_SCRIPT = ROOT / "docker/mysql/initdb/10-pipeline-accounts.sh"


class MissingVariable(Exception):
    pass


_COMPOSE_VARIABLE = re.compile(r"\$\$|\$\{(\w+)(?:(:?[-?])([^}]*))?\}|\$(\w+)")


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's variable substitution: ``$VAR``, ``${VAR}``, ``${VAR:-default}``, ``${VAR:?error}`` (unset or empty
    is an error: compose refuses to start), ``$$`` for a literal dollar."""
    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, operator, argument = match.group(1) or match.group(4), match.group(2), match.group(3)
        value = env.get(name)
        if operator in (":?", "?") and (value is None or (operator == ":?" and value == "")):
            raise MissingVariable(f"{name}: {argument}")
        if operator in (":-", "-") and (value is None or (operator == ":-" and value == "")):
            return argument
        return value or ""
    return _COMPOSE_VARIABLE.sub(substitute, text)


def load_compose(env: dict[str, str] | None = None) -> dict[str, Any]:
    compose: dict[str, Any] = yaml.safe_load(interpolate((ROOT / "docker-compose.yml").read_text(),
                                                         TEST_ENV if env is None else env))
    return compose


def test_compose_services_and_settings_match_the_code() -> None:
    compose = load_compose()
    assert set(compose["services"]) == {"kafka", "mysql", "producer", "processor", "grafana"}
    env = compose["services"]["processor"]["environment"]
    known = {f"PIPELINE_{f.name.upper()}" for f in dataclasses.fields(Settings)}
    designed = {spec[0] for spec in ACCOUNTS.values()}  # the admin and read URLs, fixed by the design
    assert set(env) <= known | designed, set(env) - known - designed
    # The URLs parse with the same code, and point at the compose services.
    settings = Settings.from_mapping({k: str(v) for k, v in env.items() if k in known})
    assert settings.mysql_url is not None and settings.mysql_url.host in compose["services"]
    assert settings.kafka_bootstrap and settings.kafka_bootstrap.split(":")[0] in compose["services"]
    assert compose["services"]["producer"]["command"] == ["produce", "--mode", "live"]
    assert compose["services"]["processor"]["command"] == ["process"]
    build_parser().parse_args(compose["services"]["producer"]["command"])
    assert (ROOT / compose["services"]["producer"]["build"]["dockerfile"]).exists()


@pytest.mark.parametrize("missing", PASSWORDS)
@pytest.mark.parametrize("empty", [False, True])
def test_compose_refuses_to_start_without_each_password(missing: str, empty: bool) -> None:
    env = {k: v for k, v in TEST_ENV.items() if k != missing} | ({missing: ""} if empty else {})
    with pytest.raises(MissingVariable, match=f"^{missing}: set {missing} in .env$"):
        load_compose(env)
    text = (ROOT / "docker-compose.yml").read_text()
    assert "change-me" not in text and not re.search(r"PASSWORD:?-", text), "a password has a default"


def test_env_example_lists_every_password_and_holds_none() -> None:
    example = dict(line.split("=", 1) for line in (ROOT / ".env.example").read_text().splitlines()
                   if line.strip() and not line.startswith("#"))
    required = set(re.findall(r"\$\{(\w+):\?", (ROOT / "docker-compose.yml").read_text()))
    assert required == set(PASSWORDS)
    assert required <= set(example) and all(example[name] == "" for name in required), example
    git = shutil.which("git")
    if git and (ROOT / ".git").exists():
        tracked = subprocess.run([git, "-C", str(ROOT), "ls-files", ".env"], capture_output=True, text=True).stdout
        assert tracked.strip() == "", ".env (real passwords) is committed"


def run_init_script(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Source the init script as the MySQL image's entrypoint does, with docker_process_sql printing the SQL."""
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash is not installed")
    program = (f"set -eo pipefail; docker_process_sql() {{ echo '-- docker_process_sql' \"$@\"; cat; }}; "
               f"source {shlex.quote(str(INIT_SCRIPT))}")
    return subprocess.run([bash, "-c", program], env={"PATH": "/usr/bin:/bin"} | env, capture_output=True,
                          text=True, check=False)


def _sql_string(literal: str) -> str:
    assert literal[0] == literal[-1] == "'"
    return re.sub(r"\\(.)", r"\1", literal[1:-1])


def test_mysql_accounts_come_from_an_init_script_with_least_privilege(tmp_path: Path) -> None:
    mysql = load_compose()["services"]["mysql"]
    # The image's MYSQL_USER would get ALL on the database; no root password is set either.
    assert not {"MYSQL_USER", "MYSQL_PASSWORD", "MYSQL_ROOT_PASSWORD"} & set(mysql["environment"])
    assert mysql["environment"]["MYSQL_DATABASE"] == "pipeline"
    assert "./docker/mysql/initdb:/docker-entrypoint-initdb.d:ro" in mysql["volumes"]
    assert INIT_SCRIPT.parent.is_dir() and sorted(p.name for p in INIT_SCRIPT.parent.iterdir()) == [INIT_SCRIPT.name]
    assert not INIT_SCRIPT.stat().st_mode & 0o111, "executable: the entrypoint would run it without its functions"
    # Passwords a naive script would let break out of the SQL string (or the shell).
    hostile = {"PIPELINE_MYSQL_ADMIN_PASSWORD": "a'b\\'; DROP DATABASE pipeline; -- ",
               "PIPELINE_MYSQL_PASSWORD": f"$(touch {tmp_path}/pwned)`touch {tmp_path}/pwned`\\",
               "PIPELINE_MYSQL_READER_PASSWORD": 'r"e\\nad'}
    result = run_init_script({name: mysql["environment"][name] for name in hostile} | hostile)
    assert result.returncode == 0, result.stderr
    sql = result.stdout
    created = {user: _sql_string(literal) for user, literal
               in re.findall(r"CREATE USER '(\w+)'@'%' IDENTIFIED BY ('(?:[^'\\]|\\.)*');", sql)}
    grants = {user: ({p.strip() for p in privileges.split(",")}, on)
              for privileges, on, user in re.findall(r"GRANT ([A-Z ,]+) ON (\S+) TO '(\w+)'@'%';", sql)}
    assert created == {user: hostile[spec[1]] for user, spec in ACCOUNTS.items()}
    assert grants == {user: (spec[2], "`pipeline`.*") for user, spec in ACCOUNTS.items()}
    statements = [st.strip() for st in re.sub(r"'(?:[^'\\]|\\.)*'", "''", sql).split(";") if st.strip()]
    assert len(statements) == 6, sql  # nothing else: no global grant, no GRANT OPTION
    assert not (tmp_path / "pwned").exists()
    # The passwords it reads are the ones compose gives the mysql service, under the same names.
    assert {spec[1] for spec in ACCOUNTS.values()} <= set(mysql["environment"])
    missing = run_init_script({"PIPELINE_MYSQL_PASSWORD": "x", "PIPELINE_MYSQL_READER_PASSWORD": "y"})
    assert missing.returncode != 0 and "PIPELINE_MYSQL_ADMIN_PASSWORD is not set" in missing.stderr
    assert "docker_process_sql" not in missing.stdout  # nothing created with an empty password


def test_processor_writes_as_the_writer_and_migrates_as_the_schema_owner() -> None:
    services = load_compose()["services"]
    env = services["processor"]["environment"]
    for user, (variable, password_variable, _) in ACCOUNTS.items():
        url = MysqlUrl.parse(env[variable], variable)
        assert (url.user, url.host, url.port, url.database) == (user, "mysql", 3306, "pipeline"), variable
        assert url.password == TEST_ENV[password_variable] == services["mysql"]["environment"][password_variable]


def test_producer_and_kafka_get_no_mysql_credentials() -> None:
    services = load_compose()["services"]
    for name in ("producer", "kafka"):
        env = services[name].get("environment", {})
        assert not [k for k in env if "MYSQL" in k], name
        assert not [v for v in env.values() if any(pw in str(v) for pw in TEST_ENV.values())], name


def test_mysql_healthcheck_keeps_the_password_off_argv() -> None:
    test = load_compose()["services"]["mysql"]["healthcheck"]["test"]
    argv = shlex.split(test[1]) if test[0] == "CMD-SHELL" else test[1:]
    assert argv[0] == "mysqladmin" and "ping" in argv
    assert not [a for a in argv if re.match(r"-p|--password", a) or "PASSWORD" in a.upper() or "PWD" in a.upper()]
    assert not [a for a in argv if any(pw in a for pw in TEST_ENV.values())]
    # Over TCP: the entrypoint's temporary server (still creating the accounts) listens on the socket only.
    assert "--host=127.0.0.1" in argv or ("-h" in argv and argv[argv.index("-h") + 1] == "127.0.0.1")


def test_the_image_runs_as_an_unprivileged_user() -> None:
    lines = [line.strip() for line in (ROOT / "docker/Dockerfile").read_text().splitlines()]
    users = [i for i, line in enumerate(lines) if line.upper().startswith("USER ")]
    assert users, "no USER: the containers run as root"
    user = lines[users[-1]].split()[1].split(":")[0]
    assert user not in ("root", "0")
    entrypoint = max(i for i, line in enumerate(lines) if line.upper().startswith("ENTRYPOINT"))
    assert users[-1] < entrypoint
    # What the running user needs (the connector jars resolved at build time) is in its home, not root's.
    assert not [line for line in lines[users[-1]:] if "/root" in line]


def test_published_ports_are_on_loopback_only() -> None:
    for name, service in load_compose()["services"].items():
        for port in service.get("ports", []):
            host_ip = port.get("host_ip") if isinstance(port, dict) else str(port).rsplit(":", 2)[0]
            assert isinstance(port, dict) or str(port).count(":") == 2, f"{name}: {port} publishes on every interface"
            assert host_ip == "127.0.0.1", f"{name}: {port}"


def test_grafana_has_no_anonymous_access_and_a_required_admin_password() -> None:
    grafana = load_compose()["services"]["grafana"]["environment"]
    assert str(grafana.get("GF_AUTH_ANONYMOUS_ENABLED", "false")).lower() == "false"
    assert str(grafana.get("GF_USERS_ALLOW_SIGN_UP", "false")).lower() == "false"
    assert grafana["GF_SECURITY_ADMIN_PASSWORD"] == TEST_ENV["GRAFANA_ADMIN_PASSWORD"]
    # Grafana holds the read-only account's password and no other MySQL password.
    mysql_passwords = {v for k, v in TEST_ENV.items() if k.startswith("PIPELINE_MYSQL")}
    held = {v for v in grafana.values() if str(v) in mysql_passwords}
    assert held == {TEST_ENV["PIPELINE_MYSQL_READER_PASSWORD"]}


def test_grafana_datasource_uses_only_the_read_only_account() -> None:
    provisioned = yaml.safe_load((ROOT / "docker/grafana/provisioning/datasources/mysql.yaml").read_text())
    [datasource] = provisioned["datasources"]
    assert datasource["user"] == "pipeline_reader" and ACCOUNTS["pipeline_reader"][2] == {"SELECT"}
    assert datasource["secureJsonData"]["password"] in ("$PIPELINE_MYSQL_READER_PASSWORD",
                                                         "${PIPELINE_MYSQL_READER_PASSWORD}")
    assert datasource.get("editable") is False  # not changeable from the UI


def grafana_percentencode(value: str) -> str:
    """Grafana's ``${var:percentencode}``: encodeURIComponent, plus ! ' ( ) * encoded (scenes' formatRegistry)."""
    return quote(value, safe="-_.~")


def test_dashboard_sql_cannot_be_broken_by_a_symbol() -> None:
    dashboard = json.loads((ROOT / "docker/grafana/dashboards/pipeline.json").read_text())
    [variable] = dashboard["templating"]["list"]
    assert variable["name"] == "symbol"
    assert "$" not in variable["query"] and "[[" not in variable["query"]  # its own query interpolates nothing
    assert variable["regex"] == "/^[A-Z0-9]{2,20}$/"  # only options spelled as symbols are offered
    assert variable["allowCustomValue"] is False and not variable.get("multi") and not variable.get("includeAll")
    sqls = [t["rawSql"] for p in dashboard["panels"] for t in p["targets"]]
    references_of = [re.findall(r"\$\{symbol[^}]*\}|\$symbol\b|\[\[symbol[^\]]*\]\]", sql) for sql in sqls]
    assert sum(1 for refs in references_of if refs) == 3  # the three per-symbol panels
    for sql, references in zip(sqls, references_of, strict=True):
        assert set(references) <= {"${symbol:percentencode}"}, sql
        assert sql.count("${symbol:percentencode}") == sql.count("'${symbol:percentencode}'"), sql
        # Whatever value reaches the panel (a URL's var-symbol=...), the statement keeps its shape.
        shape = re.sub(r"'[^'\\]*'", "''", sql.replace("${symbol:percentencode}", "BTCUSDT"))
        for hostile in ("x' OR '1'='1", "x\\' OR 1=1 -- ", "BTCUSDT'; DELETE FROM moving_averages; -- ", "é'\"`"):
            interpolated = sql.replace("${symbol:percentencode}", grafana_percentencode(hostile))
            assert re.sub(r"'[^'\\]*'", "''", interpolated) == shape, interpolated


def test_compose_validates_with_docker_when_available() -> None:
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "compose", "version"], capture_output=True).returncode != 0:
        pytest.skip("docker compose is not installed here; the structure is checked by the test above")
    result = subprocess.run([docker, "compose", "-f", str(ROOT / "docker-compose.yml"), "config", "--quiet"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_grafana_dashboard_queries_name_real_columns() -> None:
    dashboard = json.loads((ROOT / "docker/grafana/dashboards/pipeline.json").read_text())
    ddl = " ".join(MIGRATIONS[0])
    columns = set(re.findall(r"^\s*(\w+) (?:VARCHAR|DATETIME|DECIMAL|BIGINT|TINYINT|INT|MEDIUMTEXT)", ddl, re.M))
    sqls = [t["rawSql"] for p in dashboard["panels"] for t in p["targets"]]
    assert sqls
    for sql in sqls:
        body = re.sub(r"'[^']*'|\$__\w+\([^)]*\)|\"[^\"]*\"|\$\w+", "", sql)
        words = set(re.findall(r"\b([a-z_]+)\b", body))
        tables = {"moving_averages", "quarantine"}
        keywords = {"select", "as", "from", "where", "and", "order", "by", "group", "count", "min", "desc", "limit",
                    "left", "is", "time", "open", "high", "low", "close", "trades", "open_windows", "oldest",
                    "distinct", "aggtrades"}
        unknown = words - columns - tables - keywords
        assert not unknown, f"{unknown} in {sql}"
    datasource = yaml.safe_load((ROOT / "docker/grafana/provisioning/datasources/mysql.yaml").read_text())
    assert datasource["datasources"][0]["uid"] == "pipeline-mysql"
