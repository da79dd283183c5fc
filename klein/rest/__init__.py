"""The REST API compatible with the hosted Klein APIs (the only wing that imports fastapi)."""
