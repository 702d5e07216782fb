#!/usr/bin/env python3
"""Validate AWS API request bodies against a botocore service model.

Usage: validate_request.py SERVICE OPERATION FILE...

Each FILE holds one JSON request body (e.g. an ECS RegisterTaskDefinition input). The
result is one JSON document on stdout:

    {"service": "ecs", "operation": "RegisterTaskDefinition", "botocore": "1.44.8",
     "results": [{"file": "...", "errors": ["Invalid type for parameter ...", ...]}]}

An empty "errors" list means botocore's ParamValidator (the check every boto3 call runs
before sending) accepts the body. Exit status: 0 when the files were read (whatever the
validation result), 2 on usage errors (unknown service/operation, unreadable file).
"""

import json
import sys

import botocore
import botocore.session
from botocore.exceptions import UnknownServiceError
from botocore.model import OperationNotFoundError
from botocore.validate import ParamValidator


def errors_for(validator, shape, body):
    """Every validation error for one body, one message per error."""
    if not isinstance(body, dict):
        return ["request body must be a JSON object, got %s" % type(body).__name__]
    report = validator.validate(body, shape)
    if not report.has_errors():
        return []
    # ValidationErrors keeps (type, name, details) triples; format each one on its own.
    raw = getattr(report, "_errors", None)
    formatter = getattr(report, "_format_error", None)
    if raw is not None and formatter is not None:
        return [formatter(error) for error in raw]
    return [line for line in report.generate_report().splitlines() if line.strip()]


def main(argv):
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    service, operation, files = argv[0], argv[1], argv[2:]
    session = botocore.session.get_session()
    try:
        model = session.get_service_model(service)
        shape = model.operation_model(operation).input_shape
    except (UnknownServiceError, OperationNotFoundError) as err:
        print("validate_request: %s" % err, file=sys.stderr)
        return 2
    validator = ParamValidator()
    results = []
    for name in files:
        try:
            with open(name, "rb") as handle:
                raw = handle.read()
        except OSError as err:
            print("validate_request: %s: %s" % (name, err), file=sys.stderr)
            return 2
        try:
            body = json.loads(raw)
        except ValueError as err:
            results.append({"file": name, "errors": ["not JSON: %s" % err]})
            continue
        results.append({"file": name, "errors": errors_for(validator, shape, body)})
    json.dump(
        {
            "service": service,
            "operation": operation,
            "botocore": botocore.__version__,
            "results": results,
        },
        sys.stdout,
    )
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
