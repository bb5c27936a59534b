"""Rebuild the API Gateway event fixtures in this folder from tests/fixtures/images.

The events have the shapes API Gateway sends to a Lambda proxy integration (AWS docs, "Input format
of a Lambda function for proxy integration" for REST APIs and "Working with AWS Lambda proxy
integrations for HTTP APIs", payload 2.0), with binary media types on (``isBase64Encoded: true``).
Run ``python tests/events/make_events.py`` after changing a fixture image; the JSON files are
committed so the tests read fixed bytes.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
IMAGES = HERE.parent / "fixtures" / "images"
JPEG = IMAGES / "bisky_Flying_Birds_8.jpg"
JPEG2 = IMAGES / "px4ug_vtol_uav_works_valaq_patrol_hero.jpg"
PNG = IMAGES / "px4ug_vtol_birdseye_firefly6pro_hero.png"
BOUNDARY = "----WebKitFormBoundary7MA4YWxkTrZu0gW"
ORIGIN = "https://example.org"
DOMAIN = "a1b2c3d4e5.execute-api.eu-west-1.amazonaws.com"
TIME_EPOCH = 1764000000000


def multipart(field: str, filename: str, mime: str, data: bytes) -> bytes:
    head = (
        f"--{BOUNDARY}\r\n"
        f'Content-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
        f"Content-Type: {mime}\r\n\r\n"
    ).encode()
    return head + data + f"\r\n--{BOUNDARY}--\r\n".encode()


def v1(method: str, path: str, body: bytes | str | None, content_type: str | None, b64: bool):
    """A REST API (payload 1.0) proxy event, stage ``prod``, resource ``/{proxy+}``."""
    headers = {
        "Accept": "application/json",
        "Host": DOMAIN,
        "Origin": ORIGIN,
        "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36",
        "X-Amzn-Trace-Id": "Root=1-6923a580-0123456789abcdef01234567",
        "X-Forwarded-For": "203.0.113.7",
        "X-Forwarded-Port": "443",
        "X-Forwarded-Proto": "https",
    }
    raw = body.encode() if isinstance(body, str) else body
    if content_type:
        headers["Content-Type"] = content_type
    if raw is not None:
        headers["Content-Length"] = str(len(raw))
    text = base64.b64encode(raw).decode() if (b64 and raw is not None) else body
    return {
        "resource": "/{proxy+}",
        "path": path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": {"proxy": path.lstrip("/")},
        "stageVariables": None,
        "requestContext": {
            "resourceId": "x1y2z3",
            "resourcePath": "/{proxy+}",
            "httpMethod": method,
            "extendedRequestId": "Qk3x8FJdjoEFsJA=",
            "requestTime": "24/Nov/2025:16:00:00 +0000",
            "path": f"/prod{path}",
            "accountId": "123456789012",
            "protocol": "HTTP/1.1",
            "stage": "prod",
            "domainPrefix": DOMAIN.split(".")[0],
            "requestTimeEpoch": TIME_EPOCH,
            "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
            "identity": {
                "cognitoIdentityPoolId": None,
                "accountId": None,
                "cognitoIdentityId": None,
                "caller": None,
                "sourceIp": "203.0.113.7",
                "principalOrgId": None,
                "accessKey": None,
                "cognitoAuthenticationType": None,
                "cognitoAuthenticationProvider": None,
                "userArn": None,
                "userAgent": headers["User-Agent"],
                "user": None,
            },
            "domainName": DOMAIN,
            "apiId": DOMAIN.split(".")[0],
        },
        "body": text,
        "isBase64Encoded": b64 and raw is not None,
    }


def v2(method: str, path: str, body: bytes | str | None, content_type: str | None, b64: bool):
    """An HTTP API (payload 2.0) event, ``$default`` stage and route."""
    headers = {
        "accept": "application/json",
        "host": DOMAIN,
        "origin": ORIGIN,
        "user-agent": "curl/8.5.0",
        "x-amzn-trace-id": "Root=1-6923a580-89abcdef0123456789abcdef",
        "x-forwarded-for": "203.0.113.7",
        "x-forwarded-port": "443",
        "x-forwarded-proto": "https",
    }
    raw = body.encode() if isinstance(body, str) else body
    if content_type:
        headers["content-type"] = content_type
    if raw is not None:
        headers["content-length"] = str(len(raw))
    event = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": "",
        "headers": headers,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": DOMAIN.split(".")[0],
            "domainName": DOMAIN,
            "domainPrefix": DOMAIN.split(".")[0],
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "203.0.113.7",
                "userAgent": headers["user-agent"],
            },
            "requestId": "VbXq4h8ZDoEEMnQ=",
            "routeKey": "$default",
            "stage": "$default",
            "time": "24/Nov/2025:16:00:00 +0000",
            "timeEpoch": TIME_EPOCH,
        },
        "isBase64Encoded": b64 and raw is not None,
    }
    if raw is not None:
        event["body"] = base64.b64encode(raw).decode() if b64 else body
    return event


def main() -> None:
    jpeg, jpeg2, png = JPEG.read_bytes(), JPEG2.read_bytes(), PNG.read_bytes()
    form = f"multipart/form-data; boundary={BOUNDARY}"
    events = {
        "v1_classify_multipart_b64": v1(
            "POST", "/classify", multipart("file", JPEG.name, "image/jpeg", jpeg), form, True
        ),
        "v1_classify_raw_jpeg_b64": v1(
            "POST", "/classify/flying-objects", jpeg, "image/jpeg", True
        ),
        "v1_classify_text_body": v1(
            "POST", "/classify", "hello, not an image", "text/plain", False
        ),
        "v1_classify_bad_base64": v1("POST", "/classify", None, "image/jpeg", True)
        | {"body": "@@ this is not base64 @@", "isBase64Encoded": True},
        "v1_get_health": v1("GET", "/health", None, None, False),
        "v2_classify_multipart_b64": v2(
            "POST", "/classify", multipart("image", JPEG2.name, "image/jpeg", jpeg2), form, True
        ),
        "v2_classify_raw_png_b64": v2("POST", "/classify", png, "image/png", True),
        "v2_classify_text_body": v2(
            "POST", "/classify", "not an image at all", "image/jpeg", False
        ),
        "v2_get_models": v2("GET", "/models", None, None, False),
    }
    for name, event in events.items():
        (HERE / f"{name}.json").write_text(json.dumps(event, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
