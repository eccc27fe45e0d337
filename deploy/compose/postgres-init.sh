#!/bin/sh
# First start of the compose PostgreSQL: a login for Grafana that can only read Terrain's tables, the ones
# that exist now and the ones `terrain migrate` creates later.
set -eu
psql -v ON_ERROR_STOP=1 -v pw="$GRAFANA_DB_PASSWORD" --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<'SQL'
CREATE ROLE grafana_reader LOGIN PASSWORD :'pw';
GRANT CONNECT ON DATABASE terrain TO grafana_reader;
GRANT USAGE ON SCHEMA public TO grafana_reader;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO grafana_reader;
ALTER DEFAULT PRIVILEGES FOR ROLE terrain IN SCHEMA public GRANT SELECT ON TABLES TO grafana_reader;
SQL
