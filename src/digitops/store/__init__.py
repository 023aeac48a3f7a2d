"""The request store: the single record of production, written by the service and the Lambda
function, read by `prepare`, the feature store and the monitor (docs/production-data.md)."""
