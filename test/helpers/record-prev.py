#!/usr/bin/python3
"""A chained CNI test plugin that records what it was given and passes prevResult through.

Its conflist entry names a file in "record_to"; each ADD appends the stdin document it received
as one JSON line, so a test can compare the prevResult one plugin handed to the next."""
import json
import os
import sys

conf = json.load(sys.stdin)
command = os.environ.get("CNI_COMMAND", "")
if command == "VERSION":
    print(json.dumps({"cniVersion": conf.get("cniVersion", "1.0.0"), "supportedVersions": ["0.3.1", "0.4.0", "1.0.0"]}))
elif command == "ADD":
    with open(conf["record_to"], "a") as record:
        record.write(json.dumps(conf) + "\n")
    print(json.dumps(conf.get("prevResult", {"cniVersion": conf["cniVersion"]})))
