#!/usr/bin/env python3
"""Register ECS task definitions with boto3 and describe them back.

Usage: ecs_roundtrip.py FILE...

Each FILE holds one RegisterTaskDefinition request body (JSON). The endpoint, credentials and
region come from the environment (AWS_ENDPOINT_URL etc., e.g. a moto server). Prints one JSON
document on stdout:

    {"results": [{"file": "...", "arn": "...", "taskDefinition": {...}, "tags": [...],
                  "error": null}, ...]}

"error" is the API's (or boto3's) error message when registration fails; the other files are
still processed. Exit status 2 only on usage errors or unreadable files.
"""

import json
import sys

import boto3
from botocore.exceptions import BotoCoreError, ClientError


def main(files):
    if not files:
        print(__doc__, file=sys.stderr)
        return 2
    ecs = boto3.client("ecs")
    results = []
    for name in files:
        try:
            with open(name, "rb") as handle:
                body = json.load(handle)
        except (OSError, ValueError) as err:
            print("ecs_roundtrip: %s: %s" % (name, err), file=sys.stderr)
            return 2
        result = {"file": name, "arn": None, "taskDefinition": None, "tags": [], "error": None}
        try:
            registered = ecs.register_task_definition(**body)["taskDefinition"]
            result["arn"] = registered["taskDefinitionArn"]
            described = ecs.describe_task_definition(
                taskDefinition=result["arn"], include=["TAGS"]
            )
            result["taskDefinition"] = described["taskDefinition"]
            result["tags"] = described.get("tags", [])
        except (ClientError, BotoCoreError, TypeError) as err:
            result["error"] = "%s: %s" % (type(err).__name__, err)
        results.append(result)
    json.dump({"results": results}, sys.stdout, default=str)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
