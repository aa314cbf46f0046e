#!/usr/bin/env bash
# The service's own PostgreSQL role and database: not a superuser, owner of its database only
# (it runs the migrations there). The postgres image runs this once, on its first start with an
# empty data volume (/docker-entrypoint-initdb.d); later starts keep what the volume holds.
#
# RISKSTREAM_DB_PASSWORD is required; RISKSTREAM_DB_USER and RISKSTREAM_DB_NAME default to
# riskstream. psql quotes the values itself (:"name" an identifier, :'value' a literal).
set -euo pipefail

: "${RISKSTREAM_DB_PASSWORD:?set RISKSTREAM_DB_PASSWORD, the password of the riskstream role}"

psql --no-psqlrc -v ON_ERROR_STOP=1 \
    --username "${POSTGRES_USER:-postgres}" --dbname "${POSTGRES_DB:-postgres}" \
    -v role="${RISKSTREAM_DB_USER:-riskstream}" \
    -v db="${RISKSTREAM_DB_NAME:-riskstream}" \
    -v password="${RISKSTREAM_DB_PASSWORD}" <<'SQL'
CREATE ROLE :"role" LOGIN PASSWORD :'password' NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION;
CREATE DATABASE :"db" OWNER :"role";
REVOKE ALL ON DATABASE :"db" FROM PUBLIC;
SQL
