"""schemathesis against the app's own /openapi.json, in process (ASGI), with bounded examples.

Every operation in the schema gets generated requests (bodies, path and query values, both the
valid and the schema-violating kind): no answer is a 5xx, and every answer's status, content type,
headers and body match what the schema declares.
"""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from skyclass.serve.app import create_app
from skyclass.serve.settings import ServeSettings
from tests.conftest import BUNDLED_MODEL, CLASSES
from tests.reliability.corpus import source_photo

APP = create_app(ServeSettings(model_dirs=(BUNDLED_MODEL,)))
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)
# Valid requests and schema-violating ones (wrong types, out-of-range top_k, missing bodies...).
schema.config.generation.update(modes=list(schemathesis.GenerationMode))

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@schema.parametrize()
@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
    database=None,
)
def test_api_conforms_to_its_schema(case: schemathesis.Case) -> None:
    response = case.call_and_validate(checks=CHECKS)
    assert response.status_code < 500


def test_schema_covers_every_route() -> None:
    """The fuzzing above reaches every public operation (a route left out of the schema is not)."""
    operations = {
        f"{op.method.upper()} {op.path}" for op in (r.ok() for r in schema.get_all_operations())
    }
    assert operations == {
        "POST /classify",
        "POST /classify/{model}",
        "GET /health",
        "GET /models",
    }


def test_real_photo_answers_conform_to_the_schema() -> None:
    """Generated bodies are never photos: send real ones, so the 200 answer is validated too."""
    jpeg = source_photo().read_bytes()
    for path in ("/classify", "/classify/{model}"):
        operation = schema[path]["POST"]
        params = {"model": "flying-objects"} if "{model}" in path else None
        for media_type, body in (
            ("image/jpeg", jpeg),
            ("multipart/form-data", {"file": jpeg}),
        ):
            case = operation.Case(body=body, media_type=media_type, path_parameters=params)
            response = case.call_and_validate(checks=CHECKS)
            assert response.status_code == 200, response.text
            assert response.json()["label"] in CLASSES
