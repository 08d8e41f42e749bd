"""The /api routes, one module per part of docs/http-api.md."""
