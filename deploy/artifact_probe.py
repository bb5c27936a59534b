"""Run by check_artifact.py as ``python -I -S artifact_probe.py IMAGE WARM`` in the artifact.

Only the standard library and the current directory (the unzipped artifact, like /var/task) are on
sys.path. Imports the Lambda handler, answers a real API Gateway REST (v1) and HTTP API (v2) event
with a base64 multipart JPEG and an empty body, times them, and prints one JSON line.
"""

import base64
import json
import os
import resource
import sys
import time

T0 = time.perf_counter()
sys.path[0] = os.getcwd()  # not this script's folder: only the artifact
HOST = "abc123.execute-api.eu-west-1.amazonaws.com"
ORIGIN = "https://example.org"
BOUNDARY = "skyclassboundary7MA4YWxk"
HEAVY = ("torch", "torchvision", "albumentations", "cv2", "uvicorn", "typer", "rich", "boto3")


def multipart(jpeg: bytes) -> bytes:
    head = (
        f"--{BOUNDARY}\r\n"
        'Content-Disposition: form-data; name="file"; filename="photo.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    )
    return head.encode() + jpeg + f"\r\n--{BOUNDARY}--\r\n".encode()


def v1_event(payload: bytes, content_type: str) -> dict:
    headers = {"Content-Type": content_type, "Origin": ORIGIN, "Host": HOST}
    return {
        "resource": "/{proxy+}",
        "path": "/classify",
        "httpMethod": "POST",
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": {"proxy": "classify"},
        "stageVariables": None,
        "requestContext": {
            "resourcePath": "/{proxy+}",
            "httpMethod": "POST",
            "path": "/dev/classify",
            "stage": "dev",
            "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
            "identity": {"sourceIp": "203.0.113.7", "userAgent": "check_artifact"},
            "accountId": "000000000000",
            "apiId": "abc123",
            "protocol": "HTTP/1.1",
        },
        "body": base64.b64encode(payload).decode() if payload else None,
        "isBase64Encoded": bool(payload),
    }


def v2_event(payload: bytes, content_type: str) -> dict:
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": "/classify",
        "rawQueryString": "",
        "headers": {"content-type": content_type, "origin": ORIGIN, "host": HOST},
        "requestContext": {
            "apiId": "abc123",
            "domainName": HOST,
            "http": {
                "method": "POST",
                "path": "/classify",
                "protocol": "HTTP/1.1",
                "sourceIp": "203.0.113.7",
                "userAgent": "check_artifact",
            },
            "requestId": "JKJaXmPLvHcESHA=",
            "routeKey": "$default",
            "stage": "$default",
            "accountId": "000000000000",
            "timeEpoch": 1700000000000,
        },
        "body": base64.b64encode(payload).decode(),
        "isBase64Encoded": True,
    }


def main() -> None:
    image_path, warm = sys.argv[1], int(sys.argv[2])
    with open(image_path, "rb") as fh:
        body = multipart(fh.read())
    ctype = f"multipart/form-data; boundary={BOUNDARY}"
    from skyclass.serve.lambda_context import LocalContext
    from skyclass.serve.lambda_entry import classify_image

    def context() -> LocalContext:
        return LocalContext(function_name="skyclass-check", aws_request_id="check")

    t_import = time.perf_counter()
    first = classify_image(v1_event(body, ctype), context())
    t_first = time.perf_counter()
    answers = {
        "v1": first,
        "v2": classify_image(v2_event(body, ctype), context()),
        "empty": classify_image(v1_event(b"", "image/jpeg"), context()),
    }
    latencies = []
    for _ in range(warm):
        started = time.perf_counter()
        classify_image(v2_event(body, ctype), context())
        latencies.append(time.perf_counter() - started)
    latencies.sort()
    used = ("numpy", "onnxruntime", "fastapi", "skyclass")
    report = {
        "import_s": t_import - T0,
        "first_answer_s": t_first - T0,
        "warm_p50_ms": 1000 * latencies[len(latencies) // 2] if latencies else None,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "heavy_modules": sorted(m for m in sys.modules if m.split(".")[0] in HEAVY),
        "answers": answers,
        "files": [sys.modules[m].__file__ for m in used],
    }
    print(json.dumps(report))


main()
