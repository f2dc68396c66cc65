#!/usr/bin/env python3
"""Refresh the vendored GraphiQL assets in api/static/graphiql/ from the npm registry.

    python scripts/refresh_graphiql.py            # the pinned versions below
    python scripts/refresh_graphiql.py --check    # fail if the vendored files differ

Installs the pinned packages into a temporary directory with npm (no install scripts),
copies their browser bundles, writes every installed package's licence into
THIRD_PARTY_LICENSES.txt and the versions with SHA-384 digests into versions.json.
The page itself (index.html, graphiql-app.js) is ours and is not touched.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

PINNED = {
    "graphiql": "3.9.0",
    "react": "18.3.1",
    "react-dom": "18.3.1",
    "graphql": "16.9.0",
    # Not copied: installed for its licence, as graphiql.min.js bundles a graphql-ws 5.x.
    "graphql-ws": "5.16.0",
}
# (package, file in the package, name under api/static/graphiql/)
FILES = [
    ("react", "umd/react.production.min.js", "react.production.min.js"),
    ("react-dom", "umd/react-dom.production.min.js", "react-dom.production.min.js"),
    # GraphiQL's UMD bundle carries @graphiql/react, codemirror, graphql-js and the
    # graphql-ws client (GraphiQL.createFetcher's subscriptionUrl) inside it.
    ("graphiql", "graphiql.min.js", "graphiql.min.js"),
    ("graphiql", "graphiql.min.css", "graphiql.min.css"),
]
TARGET = Path(__file__).resolve().parent.parent / "api" / "static" / "graphiql"
LICENCE_NAMES = ("LICENSE", "LICENSE.md", "LICENSE.txt", "LICENCE", "license", "license.md")


def install(workdir: Path) -> Path:
    (workdir / "package.json").write_text('{"private": true}')
    specs = [f"{name}@{version}" for name, version in PINNED.items()]
    subprocess.run(
        ["npm", "install", "--no-audit", "--no-fund", "--ignore-scripts", "--save-exact", *specs],
        cwd=workdir, check=True, stdout=sys.stderr,
    )  # fmt: skip
    return workdir / "node_modules"


def packages(modules: Path) -> list[Path]:
    found = []
    for manifest in sorted(modules.glob("**/package.json")):
        package = manifest.parent
        if package.parent.name == "node_modules" or package.parent.parent.name == "node_modules":
            data = json.loads(manifest.read_text())
            if data.get("name") and data.get("version"):
                found.append(package)
    return found


def licences(modules: Path) -> str:
    parts = [
        "Licences of the packages whose code is in the vendored GraphiQL assets\n"
        "(every package npm installed for "
        + ", ".join(f"{n}@{v}" for n, v in PINNED.items())
        + "; the bundles hold a subset).\n"
    ]
    for package in packages(modules):
        data = json.loads((package / "package.json").read_text())
        text = next(
            ((package / n).read_text(errors="replace") for n in LICENCE_NAMES
             if (package / n).is_file()),
            None,
        )  # fmt: skip
        header = f"{data['name']}@{data['version']} ({data.get('license', 'see package')})"
        parts.append("=" * 78 + "\n" + header + "\n" + "=" * 78 + "\n")
        parts.append((text or "No licence file in the package; see its package.json.\n").rstrip()
                     + "\n")  # fmt: skip
    return "\n".join(parts)


def sri(data: bytes) -> str:
    return "sha384-" + base64.b64encode(hashlib.sha384(data).digest()).decode()


def build(out: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="graphiql-") as tmp:
        modules = install(Path(tmp))
        versions: dict[str, object] = {"packages": {}, "files": {}}
        for name in PINNED:
            data = json.loads((modules / name / "package.json").read_text())
            versions["packages"][name] = data["version"]  # type: ignore[index]
        for package, source, name in FILES:
            data = (modules / package / source).read_bytes()
            (out / name).write_bytes(data)
            versions["files"][name] = {"from": f"{package}/{source}", "integrity": sri(data)}  # type: ignore[index]
        (out / "THIRD_PARTY_LICENSES.txt").write_text(licences(modules))
        (out / "versions.json").write_text(json.dumps(versions, indent=2) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    args = parser.parse_args()
    if not args.check:
        TARGET.mkdir(parents=True, exist_ok=True)
        build(TARGET)
        print(f"GraphiQL assets refreshed in {TARGET}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        build(Path(tmp))
        names = [name for _, _, name in FILES] + ["THIRD_PARTY_LICENSES.txt", "versions.json"]
        stale = [n for n in names
                 if not (TARGET / n).is_file()
                 or (TARGET / n).read_bytes() != (Path(tmp) / n).read_bytes()]  # fmt: skip
    if stale:
        print("stale vendored GraphiQL files: " + ", ".join(stale), file=sys.stderr)
        return 1
    print("vendored GraphiQL assets match the pinned versions")
    return 0


if __name__ == "__main__":
    sys.exit(main())
