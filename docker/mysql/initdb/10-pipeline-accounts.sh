# The pipeline's MySQL accounts, created once, when the MySQL image initialises an empty data volume.
#
# Mounted into /docker-entrypoint-initdb.d. It is a shell script, not a .sql file, because the passwords come from
# the environment (set in .env, required by docker-compose.yml); it is not executable, so the image's entrypoint
# sources it and docker_process_sql (the entrypoint's root connection to its temporary server) is at hand.
#
#   pipeline_admin   schema owner: creates and migrates the tables (PIPELINE_MYSQL_ADMIN_URL)
#   pipeline         writer: SELECT, INSERT, UPDATE, DELETE, nothing else (PIPELINE_MYSQL_URL)
#   pipeline_reader  read-only: SELECT (PIPELINE_MYSQL_READ_URL, Grafana's datasource)
#
# Each account reaches the database `pipeline` only, and no account other than root gets a global privilege.

pipeline_sql_string() {  # $1 as a MySQL string literal: backslashes and single quotes escaped
	local s=${1//\\/\\\\}
	s=${s//\'/\\\'}
	printf "'%s'" "$s"
}

pipeline_accounts_sql() {
	local name
	for name in PIPELINE_MYSQL_ADMIN_PASSWORD PIPELINE_MYSQL_PASSWORD PIPELINE_MYSQL_READER_PASSWORD; do
		if [ -z "${!name:-}" ]; then
			echo "10-pipeline-accounts.sh: $name is not set; refusing to create accounts without a password" >&2
			return 1
		fi
	done
	cat <<-SQL
		CREATE USER 'pipeline_admin'@'%' IDENTIFIED BY $(pipeline_sql_string "$PIPELINE_MYSQL_ADMIN_PASSWORD");
		GRANT ALL PRIVILEGES ON \`pipeline\`.* TO 'pipeline_admin'@'%';
		CREATE USER 'pipeline'@'%' IDENTIFIED BY $(pipeline_sql_string "$PIPELINE_MYSQL_PASSWORD");
		GRANT SELECT, INSERT, UPDATE, DELETE ON \`pipeline\`.* TO 'pipeline'@'%';
		CREATE USER 'pipeline_reader'@'%' IDENTIFIED BY $(pipeline_sql_string "$PIPELINE_MYSQL_READER_PASSWORD");
		GRANT SELECT ON \`pipeline\`.* TO 'pipeline_reader'@'%';
	SQL
}

# A missing password stops the initialisation (exit, in the entrypoint's shell) before anything is created.
if ! pipeline_accounts=$(pipeline_accounts_sql); then
	exit 1
fi
docker_process_sql <<<"$pipeline_accounts"
unset pipeline_accounts
