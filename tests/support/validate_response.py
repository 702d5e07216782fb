#!/usr/bin/env python3
"""Validate recorded AWS API response bodies against a botocore service model.

Usage: validate_response.py SERVICE OPERATION FILE...

Each FILE holds one JSON response body (e.g. an ECS DescribeServiceRevisions output). Two
checks per body, both botocore's own code:

1. ParamValidator against the operation's OUTPUT shape: unknown members, wrong types
   (timestamps as epoch numbers, as the JSON protocols send them), missing required members,
   range/length limits.
2. Timestamps are epoch-second JSON numbers (the wire format of the JSON protocols; a string
   such as moto's "25/11/2026, 17:15:11" passes botocore's lenient checks but not aws-sdk-rust).
3. botocore's protocol parser for the service (json / rest-json) reads the body as an HTTP 200
   response: what boto3 would hand to a caller. Every top-level member of the body must come
   out of the parser (nothing silently dropped).

The result is one JSON document on stdout:

    {"service": "ecs", "operation": "DescribeServiceRevisions", "botocore": "1.44.8",
     "results": [{"file": "...", "errors": ["..."]}]}

An empty "errors" list means the body is a faithful output of that operation. Exit status: 0
when the files were read (whatever the result), 2 on usage errors.
"""

import json
import sys

import botocore
import botocore.parsers
import botocore.session
from botocore.exceptions import UnknownServiceError
from botocore.model import OperationNotFoundError
from botocore.validate import ParamValidator


def shape_errors(validator, shape, body):
    report = validator.validate(body, shape)
    if not report.has_errors():
        return []
    raw = getattr(report, "_errors", None)
    formatter = getattr(report, "_format_error", None)
    if raw is not None and formatter is not None:
        return [formatter(error) for error in raw]
    return [line for line in report.generate_report().splitlines() if line.strip()]


def parser_errors(protocol, shape, raw, body):
    parser = botocore.parsers.create_parser(protocol)
    response = {"status_code": 200, "headers": {}, "body": raw}
    try:
        parsed = parser.parse(response, shape)
    except Exception as err:  # any parser failure is a finding, not a crash
        return ["botocore %s parser: %s: %s" % (protocol, type(err).__name__, err)]
    errors = []
    if "Error" in parsed:
        errors.append("botocore %s parser read an error: %s" % (protocol, parsed["Error"]))
    for key in body:
        if key in shape.members and key not in parsed:
            errors.append("botocore %s parser dropped member %r" % (protocol, key))
    return errors


def timestamp_errors(shape, value, path=""):
    """JSON protocols send timestamps as epoch-second numbers unless the member says otherwise;
    botocore parses strings leniently, strict SDKs (aws-sdk-rust) reject them."""
    errors = []
    if shape.type_name == "timestamp":
        fmt = shape.serialization.get("timestampFormat", "unixTimestamp")
        if fmt == "unixTimestamp" and (isinstance(value, bool) or not isinstance(value, (int, float))):
            errors.append("%s: timestamp %r is not epoch seconds (a JSON number)" % (path, value))
    elif shape.type_name == "structure" and isinstance(value, dict):
        for key, item in value.items():
            if key in shape.members:
                errors += timestamp_errors(shape.members[key], item, "%s.%s" % (path, key) if path else key)
    elif shape.type_name == "list" and isinstance(value, list):
        for index, item in enumerate(value):
            errors += timestamp_errors(shape.member, item, "%s[%d]" % (path, index))
    elif shape.type_name == "map" and isinstance(value, dict):
        for key, item in value.items():
            errors += timestamp_errors(shape.value, item, "%s.%s" % (path, key))
    return errors


def main(argv):
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    service, operation, files = argv[0], argv[1], argv[2:]
    session = botocore.session.get_session()
    try:
        model = session.get_service_model(service)
        shape = model.operation_model(operation).output_shape
    except (UnknownServiceError, OperationNotFoundError) as err:
        print("validate_response: %s" % err, file=sys.stderr)
        return 2
    if shape is None:
        print("validate_response: %s %s has no output shape" % (service, operation), file=sys.stderr)
        return 2
    protocol = model.metadata["protocol"]
    validator = ParamValidator()
    results = []
    for name in files:
        try:
            with open(name, "rb") as handle:
                raw = handle.read()
        except OSError as err:
            print("validate_response: %s: %s" % (name, err), file=sys.stderr)
            return 2
        try:
            body = json.loads(raw)
        except ValueError as err:
            results.append({"file": name, "errors": ["not JSON: %s" % err]})
            continue
        if not isinstance(body, dict):
            results.append({"file": name, "errors": ["response body must be a JSON object"]})
            continue
        errors = shape_errors(validator, shape, body) + parser_errors(protocol, shape, raw, body)
        if protocol in ("json", "rest-json"):
            errors += timestamp_errors(shape, body)
        results.append({"file": name, "errors": errors})
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
