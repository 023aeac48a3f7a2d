#!/bin/sh
# The MLflow tracking server as digitops runs it, in one place: on Kubernetes (mlflow.yaml runs
# this file from the ConfigMap `mlflow-server`) and in the rehearsal on one machine
# (tests/rehearsal, `make rehearsal`), so the two cannot drift apart. Runs, the Model Registry
# and MLflow's users live in PostgreSQL; artifacts live in S3 and travel through this server
# (--serve-artifacts), so clients need only the tracking URI and a login. Reads:
#   MLFLOW_BACKEND_STORE_URI        postgresql+psycopg2://USER:PASSWORD@HOST:PORT/DB (SQLAlchemy 2.1
#                                   takes plain postgresql:// for psycopg 3, which is not installed)
#   MLFLOW_ARTIFACTS_DESTINATION    s3://BUCKET (with MLFLOW_S3_ENDPOINT_URL and AWS_* for MinIO)
#   MLFLOW_HOST, MLFLOW_PORT, MLFLOW_ALLOWED_HOSTS, MLFLOW_WORKERS (default 4)
#   MLFLOW_AUTH_ADMIN_USERNAME, MLFLOW_AUTH_ADMIN_PASSWORD   the admin login (MLflow's own
#                                   variables; the admin is made on the first start)
#   MLFLOW_FLASK_SERVER_SECRET_KEY  the basic-auth app's CSRF key (MLflow 3.17 refuses to start
#                                   without one)
#   MLFLOW_AUTH_CONFIG_PATH         where the auth app's settings are written
set -eu
printf '[mlflow]\ndefault_permission = READ\ndatabase_uri = %s\nauthorization_function = mlflow.server.auth:authenticate_request_basic_auth\n' \
  "$MLFLOW_BACKEND_STORE_URI" > "$MLFLOW_AUTH_CONFIG_PATH"
exec mlflow server --app-name basic-auth \
  --host "$MLFLOW_HOST" --port "$MLFLOW_PORT" --workers "${MLFLOW_WORKERS:-4}" \
  --backend-store-uri "$MLFLOW_BACKEND_STORE_URI" \
  --artifacts-destination "$MLFLOW_ARTIFACTS_DESTINATION" --serve-artifacts \
  --allowed-hosts "$MLFLOW_ALLOWED_HOSTS"
