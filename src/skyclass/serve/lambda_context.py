"""A stand-in for the context object AWS Lambda passes a handler, to invoke it outside Lambda.

Mangum reads nothing from it that matters to the app, but it passes it on (``scope["aws.context"]``)
and a handler may log its request id; the artifact check and the tests invoke the handler with it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LocalContext:
    """The attributes and the one method of ``awslambdaric``'s ``LambdaContext`` that code reads."""

    function_name: str = "skyclass-local"
    memory_limit_in_mb: int = 1769
    aws_request_id: str = "local"
    invoked_function_arn: str = "arn:aws:lambda:eu-west-1:000000000000:function:skyclass-local"
    remaining_ms: int = 15000

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms
