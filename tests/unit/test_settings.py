from pathlib import Path

import pytest

from pipeline.errors import ConfigError
from pipeline.settings import DEFAULT_SYMBOLS, MysqlUrl, Settings


def test_defaults_and_parsing() -> None:
    s = Settings.from_mapping({"PIPELINE_MYSQL_URL": "mysql://u:s%40cret@db:3307/prod",
                               "PIPELINE_SYMBOLS": "btcusdt, ethusdt", "PIPELINE_WATERMARK_SECONDS": "5"})
    assert s.symbols == ("BTCUSDT", "ETHUSDT")
    assert s.mysql_url == MysqlUrl("u", "s@cret", "db", 3307, "prod")
    assert s.watermark_seconds == 5
    assert Settings.from_mapping({}).symbols == DEFAULT_SYMBOLS
    assert Settings.from_mapping({}).topic_partitions == 3
    assert Settings.from_mapping({"PIPELINE_TOPIC_PARTITIONS": " 12 "}).topic_partitions == 12
    assert Settings.from_mapping({}).max_offsets_per_trigger == 500_000
    assert Settings.from_mapping({"PIPELINE_MAX_OFFSETS_PER_TRIGGER": "20000"}).max_offsets_per_trigger == 20_000
    assert Settings.from_mapping({}).driver_batch_max == 5_000
    assert Settings.from_mapping({"PIPELINE_DRIVER_BATCH_MAX": "0"}).driver_batch_max == 0


def test_secrets_never_show() -> None:
    s = Settings.from_mapping({"PIPELINE_MYSQL_URL": "mysql://u:hunter2@db/prod"})
    assert "hunter2" not in repr(s) and "hunter2" not in str(s.mysql_url)
    assert s.mysql_url is not None and "hunter2" in s.mysql_url.render()


@pytest.mark.parametrize("env", [
    {"PIPELINE_MYSQL_URL": "postgres://u:p@h/db"}, {"PIPELINE_MYSQL_URL": "mysql://h/db"},
    {"PIPELINE_SYMBOLS": "BTC-USDT"}, {"PIPELINE_SYMBOLS": " , "}, {"PIPELINE_WATERMARK_SECONDS": "ten"},
    {"PIPELINE_TOPIC": "bad topic"}, {"PIPELINE_TOPIC_PARTITIONS": "0"}, {"PIPELINE_TOPIC_PARTITIONS": "-3"},
    {"PIPELINE_TOPIC_PARTITIONS": "2.5"}, {"PIPELINE_TOPIC_PARTITIONS": "10001"},
    {"PIPELINE_MAX_OFFSETS_PER_TRIGGER": "99"}, {"PIPELINE_MAX_OFFSETS_PER_TRIGGER": "1e6"},
    {"PIPELINE_MAX_OFFSETS_PER_TRIGGER": "100000001"}, {"PIPELINE_MAX_OFFSETS_PER_TRIGGER": "-5"},
    {"PIPELINE_DRIVER_BATCH_MAX": "-1"}, {"PIPELINE_DRIVER_BATCH_MAX": "100001"}, {"PIPELINE_DRIVER_BATCH_MAX": "nan"},
    {"PIPELINE_SPARK_MASTER": "mesos://m:5050"}, {"PIPELINE_SPARK_DRIVER_MEMORY": "lots"},
    {"PIPELINE_SPARK_LOG_LEVEL": "loud"}, {"PIPELINE_STACK_BACKEND": "docker"},
])
def test_bad_settings_fail_at_construction(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        Settings.from_mapping(env)


def test_default_checkpoint_lives_with_the_local_stack(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    from pipeline.services import stack

    settings = Settings.from_mapping({"PIPELINE_STATE_DIR": str(tmp_path)})
    assert stack.checkpoint_dir(settings) == tmp_path / "checkpoint"  # no stack: beside the state
    (tmp_path / "stack.json").write_text(json.dumps({"backend": "processes", "run_dir": str(tmp_path / "run"),
                                                     "bootstrap": "127.0.0.1:1", "url": "mysql://u:p@h:1/db"}))
    assert stack.checkpoint_dir(settings) == tmp_path / "run" / "checkpoint"  # deleted with the stack's data
    explicit = Settings.from_mapping({"PIPELINE_STATE_DIR": str(tmp_path), "PIPELINE_CHECKPOINT_DIR": "/x/y"})
    assert stack.checkpoint_dir(explicit) == Path("/x/y")


def test_provisioning_names_the_debian_packages_for_what_is_missing() -> None:
    from pipeline.services.provision import missing_packages

    assert missing_packages(lambda name: True) == []
    assert missing_packages(lambda name: name in ("java", "mvn")) == ["mariadb-server"]
    assert missing_packages(lambda name: name == "mysqld") == ["openjdk-17-jre-headless", "maven"]


def test_the_admin_and_read_urls_come_from_their_own_variables() -> None:
    s = Settings.from_mapping({"PIPELINE_MYSQL_URL": "mysql://w:wpw@db/prod",
                               "PIPELINE_MYSQL_ADMIN_URL": "mysql://a:apw@db/prod",
                               "PIPELINE_MYSQL_READ_URL": "mysql://r:rpw@db/prod"})
    assert s.mysql_admin_url == MysqlUrl("a", "apw", "db", 3306, "prod")
    assert s.read_url() == MysqlUrl("r", "rpw", "db", 3306, "prod")
    assert not any(pw in repr(s) or pw in str(s) for pw in ("wpw", "apw", "rpw"))
    writer_only = Settings.from_mapping({"PIPELINE_MYSQL_URL": "mysql://w:wpw@db/prod"})
    assert writer_only.mysql_admin_url is None and writer_only.read_url() == writer_only.mysql_url
    with pytest.raises(ConfigError, match="PIPELINE_MYSQL_ADMIN_URL"):
        Settings.from_mapping({"PIPELINE_MYSQL_ADMIN_URL": "postgres://a:b@db/prod"})


def test_the_stack_fills_in_its_accounts_only_together_with_its_writer() -> None:
    stack_writer, stack_admin, stack_reader = (MysqlUrl(u, "x", "127.0.0.1", 1, "pipeline")
                                               for u in ("pipeline", "pipeline_admin", "pipeline_reader"))
    filled = Settings.from_mapping({}).with_connections("k:1", stack_writer, stack_admin, stack_reader)
    assert (filled.mysql_url, filled.mysql_admin_url, filled.read_url()) == (stack_writer, stack_admin, stack_reader)
    # A writer from the environment is another server: the stack's admin and reader must not be mixed in.
    env = Settings.from_mapping({"PIPELINE_MYSQL_URL": "mysql://w:p@db/prod"})
    mixed = env.with_connections("k:1", stack_writer, stack_admin, stack_reader)
    assert mixed.mysql_url == env.mysql_url and mixed.mysql_admin_url is None and mixed.read_url() == env.mysql_url


@pytest.mark.parametrize(("query", "expected"), [
    ("ssl-mode=REQUIRED", {"ssl_mode": "REQUIRED"}),
    ("ssl-mode=verify_identity&ssl-ca=/etc/ca.pem", {"ssl_mode": "VERIFY_IDENTITY", "ssl_ca": "/etc/ca.pem"}),
    ("ssl-ca=/c/ca.pem&ssl-cert=/c/me.pem&ssl-key=/c/me.key",
     {"ssl_ca": "/c/ca.pem", "ssl_cert": "/c/me.pem", "ssl_key": "/c/me.key"}),
    ("ssl-mode=DISABLED", {"ssl_mode": "DISABLED"}),
])
def test_mysql_url_tls_parameters_are_parsed(query: str, expected: dict[str, str]) -> None:
    url = MysqlUrl.parse(f"mysql://u:pw@db:3306/prod?{query}")
    assert {k: getattr(url, k) for k in ("ssl_mode", "ssl_ca", "ssl_cert", "ssl_key") if getattr(url, k)} == expected
    assert MysqlUrl.parse(url.render()) == url  # `stack env` and the test helpers hand it on whole
    assert "pw" not in str(url).replace("prod", "") and "ssl" in str(url)


@pytest.mark.parametrize(("query", "needle"), [
    ("sslmode=require", "unknown parameter(s) sslmode"),
    ("ssl-mode=REQUIRED&charset=latin1&timeout=3", "unknown parameter(s) charset, timeout"),
    ("ssl-mode=SOMETIMES", "ssl-mode must be one of"),
    ("ssl-mode=REQUIRED&ssl-mode=DISABLED", "given twice"),
    ("ssl-mode=DISABLED&ssl-ca=/ca.pem", "contradicts ssl-ca"),
    ("ssl-key=/k.pem", "ssl-key needs ssl-cert"),
    ("ssl-ca=", "ssl-ca is empty"),
])
def test_unknown_or_contradictory_url_parameters_are_errors(query: str, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_mapping({"PIPELINE_MYSQL_READ_URL": f"mysql://u:hunter2@db/prod?{query}"})
    assert needle in str(info.value) and "PIPELINE_MYSQL_READ_URL" in str(info.value)
    assert "hunter2" not in str(info.value)


def test_tls_modes_reach_pymysql(tmp_path: Path) -> None:
    import ssl

    from tests.tls_helpers import make_tls_files

    files = make_tls_files(tmp_path)
    base = "mysql://u:p@127.0.0.1:3306/prod"
    assert "ssl" not in MysqlUrl.parse(base).connect_arguments()  # nothing asked: the driver's default
    assert MysqlUrl.parse(f"{base}?ssl-mode=DISABLED").connect_arguments()["ssl_disabled"] is True

    def context(query: str) -> ssl.SSLContext:
        arguments = MysqlUrl.parse(f"{base}?{query}").connect_arguments()
        assert arguments["host"] == "127.0.0.1" and arguments["database"] == "prod"
        return arguments["ssl"]

    required = context("ssl-mode=REQUIRED")
    assert required.verify_mode == ssl.CERT_NONE and not required.check_hostname
    verify_ca = context(f"ssl-mode=VERIFY_CA&ssl-ca={files.ca}")
    assert verify_ca.verify_mode == ssl.CERT_REQUIRED and not verify_ca.check_hostname
    assert len(verify_ca.get_ca_certs()) == 1
    identity = context(f"ssl-mode=VERIFY_IDENTITY&ssl-ca={files.ca}")
    assert identity.verify_mode == ssl.CERT_REQUIRED and identity.check_hostname
    assert context(f"ssl-ca={files.ca}").verify_mode == ssl.CERT_REQUIRED  # a CA alone means: verify with it
    assert context(f"ssl-mode=REQUIRED&ssl-cert={files.cert}&ssl-key={files.key}").verify_mode == ssl.CERT_NONE
    with pytest.raises(ConfigError, match="does not exist"):
        MysqlUrl.parse(f"{base}?ssl-mode=VERIFY_CA&ssl-ca={tmp_path / 'missing.pem'}").connect_arguments()


def test_kafka_security_settings_map_to_kafka_python_and_spark(tmp_path: Path) -> None:
    s = Settings.from_mapping({"PIPELINE_KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
                               "PIPELINE_KAFKA_SASL_MECHANISM": "scram-sha-512",
                               "PIPELINE_KAFKA_SASL_PLAIN_USERNAME": "svc",
                               "PIPELINE_KAFKA_SASL_PLAIN_PASSWORD": 'pa"ss\\word',
                               "PIPELINE_KAFKA_SSL_CAFILE": str(_file(tmp_path / "ca.pem")),
                               "PIPELINE_KAFKA_SSL_CHECK_HOSTNAME": "false"})
    assert s.kafka_client_options() == {
        "security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512", "sasl_plain_username": "svc",
        "sasl_plain_password": 'pa"ss\\word', "ssl_cafile": str(tmp_path / "ca.pem"), "ssl_check_hostname": False}
    assert s.kafka_spark_options() == {
        "kafka.security.protocol": "SASL_SSL",
        "kafka.sasl.mechanism": "SCRAM-SHA-512",
        "kafka.sasl.jaas.config": 'org.apache.kafka.common.security.scram.ScramLoginModule required '
                                  'username="svc" password="pa\\"ss\\\\word";',
        "kafka.ssl.truststore.type": "PEM",
        "kafka.ssl.truststore.location": str(tmp_path / "ca.pem"),
        "kafka.ssl.endpoint.identification.algorithm": "",
    }
    assert "pa\"ss" not in repr(s) and "pa\"ss" not in str(s)
    plain = Settings.from_mapping({"PIPELINE_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                                   "PIPELINE_KAFKA_SASL_MECHANISM": "PLAIN",
                                   "PIPELINE_KAFKA_SASL_PLAIN_USERNAME": "u",
                                   "PIPELINE_KAFKA_SASL_PLAIN_PASSWORD": "p"})
    assert plain.kafka_spark_options()["kafka.sasl.jaas.config"] == (
        'org.apache.kafka.common.security.plain.PlainLoginModule required username="u" password="p";')
    assert Settings.from_mapping({}).kafka_client_options() == {} == Settings.from_mapping({}).kafka_spark_options()


def test_kafka_client_certificates_for_spark(tmp_path: Path) -> None:
    from tests.tls_helpers import make_tls_files

    files = make_tls_files(tmp_path)
    env = {"PIPELINE_KAFKA_SECURITY_PROTOCOL": "SSL", "PIPELINE_KAFKA_SSL_CERTFILE": str(files.cert),
           "PIPELINE_KAFKA_SSL_KEYFILE": str(files.key), "PIPELINE_KAFKA_SSL_PASSWORD": "keypw"}
    spark = Settings.from_mapping(env).kafka_spark_options()
    assert spark["kafka.ssl.keystore.type"] == "PEM" and spark["kafka.ssl.key.password"] == "keypw"
    assert spark["kafka.ssl.keystore.certificate.chain"] == files.cert.read_text()
    assert spark["kafka.ssl.keystore.key"].startswith("-----BEGIN PRIVATE KEY-----")
    combined = Settings.from_mapping({"PIPELINE_KAFKA_SECURITY_PROTOCOL": "SSL",
                                      "PIPELINE_KAFKA_SSL_CERTFILE": str(files.cert)}).kafka_spark_options()
    assert combined["kafka.ssl.keystore.location"] == str(files.cert)
    (tmp_path / "rsa.pem").write_text("-----BEGIN RSA PRIVATE KEY-----\nxx\n-----END RSA PRIVATE KEY-----\n")
    with pytest.raises(ConfigError, match="PKCS#8"):
        Settings.from_mapping({**env, "PIPELINE_KAFKA_SSL_KEYFILE": str(tmp_path / "rsa.pem")}).kafka_spark_options()


def _file(path: Path) -> Path:
    path.write_text("x")
    return path


@pytest.mark.parametrize(("env", "needle"), [
    ({"PIPELINE_KAFKA_SASL_JAAS_CONFIG": "x", "PIPELINE_KAFKA_LINGER_MS": "5"},
     "unsupported Kafka setting(s) PIPELINE_KAFKA_LINGER_MS, PIPELINE_KAFKA_SASL_JAAS_CONFIG"),
    ({"PIPELINE_KAFKA_SECURITY_PROTOCOL": "TLS"}, "must be one of PLAINTEXT"),
    ({"PIPELINE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "PIPELINE_KAFKA_SASL_MECHANISM": "PLAIN"},
     "needs PIPELINE_KAFKA_SASL_PLAIN_USERNAME, PIPELINE_KAFKA_SASL_PLAIN_PASSWORD"),
    ({"PIPELINE_KAFKA_SASL_PLAIN_USERNAME": "u"}, "need PIPELINE_KAFKA_SECURITY_PROTOCOL=SASL_SSL"),
    ({"PIPELINE_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "PIPELINE_KAFKA_SASL_MECHANISM": "GSSAPI",
      "PIPELINE_KAFKA_SASL_PLAIN_USERNAME": "u", "PIPELINE_KAFKA_SASL_PLAIN_PASSWORD": "p"}, "must be one of PLAIN"),
    ({"PIPELINE_KAFKA_SSL_CAFILE": "/etc/hostname"}, "need PIPELINE_KAFKA_SECURITY_PROTOCOL=SSL or SASL_SSL"),
    ({"PIPELINE_KAFKA_SECURITY_PROTOCOL": "SSL", "PIPELINE_KAFKA_SSL_CAFILE": "/nope.pem"}, "is not a file"),
    ({"PIPELINE_KAFKA_SECURITY_PROTOCOL": "SSL", "PIPELINE_KAFKA_SSL_CHECK_HOSTNAME": "maybe"}, "true or false"),
])
def test_bad_kafka_security_settings_fail_at_construction(env: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_mapping(env)
    assert needle in str(info.value)


def test_a_checkpoint_url_keeps_its_double_slash() -> None:
    """A Path folded hdfs://nn:8020/ckpt into hdfs:/nn:8020/ckpt, a directory named "hdfs:" on the local disk."""
    from pipeline.spark.job import checkpoint_location

    remote = Settings.from_mapping({"PIPELINE_CHECKPOINT_DIR": "hdfs://nn:8020/pipeline/ckpt/"}).checkpoint_dir
    assert remote == "hdfs://nn:8020/pipeline/ckpt"
    assert checkpoint_location(remote, "stream") == "hdfs://nn:8020/pipeline/ckpt/stream"  # type: ignore[arg-type]
    local = Settings.from_mapping({"PIPELINE_CHECKPOINT_DIR": "/var/lib/pipeline/ckpt"}).checkpoint_dir
    assert isinstance(local, Path) and checkpoint_location(local, "stream") == "/var/lib/pipeline/ckpt/stream"


def test_environment_rebuilds_the_same_settings(tmp_path: Path) -> None:
    env = {"PIPELINE_KAFKA_BOOTSTRAP": "k1:9092,k2:9092", "PIPELINE_MYSQL_URL": "mysql://w:p%40ss@db:3307/prod",
           "PIPELINE_MYSQL_ADMIN_URL": "mysql://a:x@db:3307/prod?ssl-mode=REQUIRED",
           "PIPELINE_MYSQL_READ_URL": "mysql://r:y@db:3307/prod", "PIPELINE_SYMBOLS": "BTCUSDT,SOLUSDT",
           "PIPELINE_TOPIC": "t.x", "PIPELINE_TOPIC_PARTITIONS": "5", "PIPELINE_CHECKPOINT_DIR": "hdfs://nn/ck",
           "PIPELINE_MAX_OFFSETS_PER_TRIGGER": "25000", "PIPELINE_DRIVER_BATCH_MAX": "100",
           "PIPELINE_WATERMARK_SECONDS": "7", "PIPELINE_STATE_DIR": str(tmp_path / "s"),
           "PIPELINE_CACHE_DIR": str(tmp_path / "c"), "PIPELINE_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
           "PIPELINE_KAFKA_SASL_MECHANISM": "PLAIN", "PIPELINE_KAFKA_SASL_PLAIN_USERNAME": "u",
           "PIPELINE_KAFKA_SASL_PLAIN_PASSWORD": "p w", "PIPELINE_SPARK_MASTER": "spark://m:7077",
           "PIPELINE_SPARK_DRIVER_MEMORY": "2g", "PIPELINE_SPARK_LOG_LEVEL": "info",
           "PIPELINE_STACK_BACKEND": "processes"}
    settings = Settings.from_mapping(env)
    assert Settings.from_mapping(settings.environment()) == settings
    assert settings.spark_master == "spark://m:7077" and settings.spark_log_level == "INFO"
    assert Settings.from_mapping(Settings.from_mapping({}).environment()) == Settings.from_mapping({})
