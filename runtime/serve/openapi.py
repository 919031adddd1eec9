"""The OpenAPI 3.1 document served at ``/openapi.json`` (data only; a leaf of the import map)."""
from __future__ import annotations

from typing import Any

from .._common import package_version


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 description served at /openapi.json."""
    err = {"description": "error", "content": {"application/json": {"schema": {
        "$ref": "#/components/schemas/Error"}}}}

    def q(name: str, typ: str, desc: str, minimum: int | None = None) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": typ}
        if minimum is not None:
            schema["minimum"] = minimum
        return {"name": name, "in": "query", "required": False, "description": desc,
                "schema": schema}

    params = [
        q("model", "string", "served model name (GET /v1/models); default: the default model"),
        q("beam_width", "integer", "1 = greedy, > 1 = CTC prefix beam search", 1),
        q("allowed", "string", "only these characters may appear"),
        q("min_length", "integer", "shortest allowed text", 0),
        q("max_length", "integer", "longest allowed text", 0),
        q("top_k", "integer", "alternatives to return (beam search)", 1),
    ]
    binary = {"schema": {"type": "string", "format": "binary"}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "captcha-edge", "version": package_version(),
                 "description": "Read text captchas with captcha_edge TFLite models. No "
                                "authentication beyond an optional shared bearer token."},
        "paths": {
            "/v1/recognize": {"post": {
                "summary": "Recognize one or more captcha images",
                "description": "A raw image body (one image), or multipart/form-data with one "
                               "or more file parts (any field name) and optional text fields "
                               "with the same names as the query parameters.",
                "parameters": params,
                "requestBody": {"required": True, "content": {
                    "image/*": binary, "application/octet-stream": binary,
                    "multipart/form-data": {"schema": {"type": "object", "properties": {
                        "file": {"type": "array", "items": {"type": "string",
                                                            "format": "binary"}}}}}}},
                "responses": {
                    "200": {"description": "one result per image, in order (a bad image in a "
                                           "batch gets its own error)",
                            "content": {"application/json": {"schema": {
                                "$ref": "#/components/schemas/Recognition"}}}},
                    "400": err, "401": err, "404": err, "413": err, "415": err, "422": err}}},
            "/v1/models": {"get": {"summary": "Served models", "responses": {"200": {
                "description": "models", "content": {"application/json": {}}}}}},
            "/healthz": {"get": {"summary": "Liveness and readiness (no token needed)",
                                 "responses": {"200": {"description": "ready"},
                                               "503": err}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {
                "description": "text format", "content": {"text/plain": {}}}}}},
        },
        "components": {
            "schemas": {
                "Error": {"type": "object", "required": ["error", "status"], "properties": {
                    "error": {"type": "string"}, "status": {"type": "integer"}}},
                "Result": {"type": "object", "properties": {
                    "path": {"type": "string", "description": "file name of the part, or "
                                                               "'body'"},
                    "text": {"type": ["string", "null"]},
                    "confidence": {"type": ["number", "null"]},
                    "error": {"type": ["string", "null"]},
                    "model": {"type": "string"},
                    "alternatives": {"type": "array", "items": {"type": "object"}}}},
                "Recognition": {"type": "object", "properties": {
                    "model": {"type": "string"},
                    "results": {"type": "array",
                                "items": {"$ref": "#/components/schemas/Result"}}}},
            },
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
