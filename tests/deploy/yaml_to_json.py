"""Prints the YAML documents of the file named by argv[1] as one JSON list
(PyYAML's safe loader: the independent parser of tests/deploy.rs)."""
import json
import sys

import yaml

with open(sys.argv[1], encoding="utf-8") as f:
    print(json.dumps(list(yaml.safe_load_all(f))))
