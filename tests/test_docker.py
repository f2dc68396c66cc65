"""docker/: no Docker daemon or registry here, so what can be checked without one is.

- The Dockerfile passes hadolint with no finding at any level.
- docker/compose.yaml validates against the Compose specification's JSON schema (the copy
  check-jsonschema vendors, with its licence) and has the shape the README promises.
- .dockerignore lets exactly the build's sources into the context, no key or database;
  a wheel built from that context alone holds the whole ledger.
- docker/secrets.sh makes keys the ledger reads, and never replaces one.
- The compose services run together as plain processes: each one's image environment,
  compose environment, secrets (files in a temporary /run/secrets of its own) and
  command, through the image's entrypoint, against a PostgreSQL cluster that asks for
  the password like the postgres service does. `init` prepares, writes through two `api`
  replicas are projected by `projector` and sealed by its sealer.

A missing tool fails the test, naming it; nothing is skipped.
"""

from __future__ import annotations

import base64
import copy
import importlib.resources
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import psycopg
import pytest
import yaml

from tests.cluster import Cluster, free_port

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
DOCKERFILE = DOCKER / "Dockerfile"
COMPOSE = DOCKER / "compose.yaml"
BIN = Path(sys.executable).parent  # the venv's bin: ledger, hadolint


def tool(name: str) -> Path:
    path = BIN / name
    assert path.exists(), f"{path} is missing: run `.venv/bin/pip install -e '.[dev]'`"
    return path


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


# ----- the Dockerfile ------------------------------------------------------------------


@dataclass
class Instruction:
    keyword: str
    arguments: str
    line: int


def dockerfile() -> list[Instruction]:
    """The instructions, continuation lines joined, comments dropped."""
    instructions: list[Instruction] = []
    pending = ""
    start = 0
    for number, raw in enumerate(DOCKERFILE.read_text().splitlines(), 1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        text = pending + stripped
        pending = ""
        keyword, _, arguments = text.partition(" ")
        instructions.append(Instruction(keyword.upper(), arguments.strip(), start))
    return instructions


def final_stage() -> list[Instruction]:
    instructions = dockerfile()
    last_from = max(i for i, ins in enumerate(instructions) if ins.keyword == "FROM")
    return instructions[last_from:]


def exec_form(instruction: Instruction) -> list[str]:
    arguments = instruction.arguments
    if instruction.keyword == "HEALTHCHECK":
        arguments = arguments[arguments.index("CMD ") + 4 :]
    value = json.loads(arguments)
    assert isinstance(value, list), f"line {instruction.line}: not the exec form"
    return [str(v) for v in value]


def image_environment() -> dict[str, str]:
    """ENV of the runtime stage, with that of `base`, which it is built on (the build
    stage sets none)."""
    env: dict[str, str] = {}
    for ins in dockerfile():
        if ins.keyword == "ENV":
            for pair in shlex.split(ins.arguments):
                name, _, value = pair.partition("=")
                env[name] = value
    return env


def test_dockerfile_passes_hadolint() -> None:
    result = subprocess.run(
        [str(tool("hadolint")), "--format", "json", "--failure-threshold", "style",
         str(DOCKERFILE)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    findings = json.loads(result.stdout or "[]")
    assert findings == [], json.dumps(findings, indent=1)
    assert result.returncode == 0, result.stderr
    # An inline ignore must say why, on the comment line above it.
    lines = DOCKERFILE.read_text().splitlines()
    for number, line in enumerate(lines):
        if "hadolint ignore" in line:
            assert number > 0 and lines[number - 1].startswith("#"), f"unexplained: {line}"


def test_dockerfile_builds_a_wheel_and_runs_unprivileged() -> None:
    instructions = dockerfile()
    froms = [ins.arguments for ins in instructions if ins.keyword == "FROM"]
    # One pinned base (an exact Python release on slim Debian), then stages built on it.
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm AS base", froms[0]), froms
    assert froms[1:] == ["base AS build", "base"], froms
    runs = [ins.arguments for ins in instructions if ins.keyword == "RUN"]
    assert any("pip wheel" in r and "--wheel-dir /wheels ." in r for r in runs), runs
    final = final_stage()
    installs = [
        ins.arguments for ins in final if ins.keyword == "RUN" and "pip install" in ins.arguments
    ]
    assert installs and all("--no-index" in r and "/wheels" in r for r in installs), installs
    users = [ins.arguments for ins in final if ins.keyword == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root"), users
    # Nothing secret goes into the image: only sources and the entrypoint are copied.
    for ins in instructions:
        if ins.keyword in ("COPY", "ADD"):
            assert ins.keyword == "COPY", f"line {ins.line}: ADD"
            assert not re.search(r"secret|\.ledger|\.key\b", ins.arguments), ins.arguments
    for name in image_environment():
        assert not re.search(r"KEY|PASSWORD|TOKEN", name) or name.endswith("_FILE"), name
    (health,) = [ins for ins in final if ins.keyword == "HEALTHCHECK"]
    assert "http://127.0.0.1:8000/healthz" in " ".join(exec_form(health))
    (entrypoint,) = [ins for ins in final if ins.keyword == "ENTRYPOINT"]
    assert exec_form(entrypoint) == ["ledger-entrypoint"]
    (cmd,) = [ins for ins in final if ins.keyword == "CMD"]
    assert exec_form(cmd)[:2] == ["ledger", "serve"]
    assert {"--host", "0.0.0.0", "--no-projector"} <= set(exec_form(cmd))


# ----- compose.yaml --------------------------------------------------------------------


def compose_schema() -> dict[str, Any]:
    """The Compose specification's schema as check-jsonschema vendors it (with its
    licence, LICENSE.compose-spec, beside it)."""
    vendor = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    assert vendor.joinpath("licenses/LICENSE.compose-spec").is_file()
    schema: dict[str, Any] = json.loads(vendor.joinpath("compose-spec.json").read_text())
    return schema


def schema_errors(document: dict[str, Any]) -> list[str]:
    schema = compose_schema()
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    validator = validator_class(schema, format_checker=validator_class.FORMAT_CHECKER)
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}"
        for e in validator.iter_errors(document)
    ]


def test_compose_file_follows_the_compose_specification() -> None:
    document = compose()
    assert schema_errors(document) == []
    # The schema does catch mistakes: a misspelt key, a wrong type.
    broken = copy.deepcopy(document)
    broken["services"]["api"]["restrat"] = "on-failure"
    broken["services"]["postgres"]["volumes"] = "pgdata"  # not a list
    errors = schema_errors(broken)
    assert any("restrat" in e for e in errors), errors
    assert any(e.startswith("services/postgres/volumes") for e in errors), errors


def test_compose_services_are_pinned_restarted_and_keep_secrets_in_files() -> None:
    document = compose()
    services = document["services"]
    assert set(services) == {"postgres", "init", "api", "projector", "nats", "relay"}
    # NATS and the relay only with `--profile relay`, the NATS image pinned.
    assert services["nats"]["profiles"] == services["relay"]["profiles"] == ["relay"]
    assert re.fullmatch(r"nats:\d+\.\d+\.\d+(-\w+)?", services["nats"]["image"])
    assert services["relay"]["command"] == ["ledger", "relay"]
    for name, service in services.items():
        assert service.get("restart") in ("on-failure", "unless-stopped"), name
        assert "container_name" not in service, f"{name}: a fixed name prevents --scale"
        for value in (service.get("environment") or {}).values():
            assert not re.search(r"postgresql://[^@/]*:[^@/]*@", str(value)), "password in URL"
        for variable in service.get("environment") or {}:
            assert variable not in ("LEDGER_CIPHER_KEY", "POSTGRES_PASSWORD", "PGPASSWORD")
    postgres = services["postgres"]
    assert re.fullmatch(r"postgres:\d+\.\d+(-\w+)?", postgres["image"]), postgres["image"]
    assert postgres["healthcheck"]["test"][1] == "pg_isready"
    volume = postgres["volumes"][0].split(":")[0]
    assert volume in document["volumes"], "a named volume"
    assert postgres["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/db_password"
    # Every secret is a file the operator makes (docker/secrets.sh), never in git.
    for secret in document["secrets"].values():
        assert secret["file"].startswith("./secrets/"), secret
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", "docker/secrets/cipher.key"], cwd=ROOT, check=False
    )
    assert ignored.returncode == 0, "docker/secrets/ must be ignored by git"
    # The api scales: a range of loopback ports, never one fixed host port.
    (port,) = services["api"]["ports"]
    assert re.fullmatch(r"127\.0\.0\.1:(\d+)-(\d+):8000", port), port
    # The ledger's processes read the KEK as <LEDGER_DATA_DIR>/cipher.key, a secret.
    for name in ("init", "api", "projector", "relay"):
        env = services[name]["environment"]
        targets = {s["target"] for s in services[name]["secrets"]}
        assert env["LEDGER_DATA_DIR"] == "/run/secrets" and "cipher.key" in targets, name
        assert env["LEDGER_SIGNING_KEY"] == "/run/secrets/signing.key", name
        assert "signing.key" in targets, name
        assert services[name]["depends_on"], name
    assert services["api"]["depends_on"]["init"]["condition"] == "service_completed_successfully"
    assert services["init"]["depends_on"]["postgres"]["condition"] == "service_healthy"


# ----- .dockerignore and the build context ----------------------------------------------


def _pattern(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern (Go's filepath.Match plus `**`) as a regex."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i : end + 1], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def in_context(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Docker's rule: the last pattern that matches the path or one of its parents."""
    parts = path.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    included = True
    for exclude, pattern in rules:
        if any(pattern.fullmatch(c) for c in candidates):
            included = not exclude
    return included


def dockerignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        exclude = not line.startswith("!")
        rules.append((exclude, _pattern(os.path.normpath(line.lstrip("!")).strip("/"))))
    return rules


def context_files() -> list[str]:
    """What `docker build` would send from the repository root (the venv aside: big)."""
    rules = dockerignore_rules()
    files = []
    for directory, dirs, names in os.walk(ROOT):
        dirs[:] = [d for d in dirs if not (directory == str(ROOT) and d == ".venv")]
        for name in names:
            path = os.path.relpath(os.path.join(directory, name), ROOT)
            if in_context(path, rules):
                files.append(path)
    return sorted(files)


def test_dockerignore_sends_the_sources_and_no_secret(tmp_path: Path) -> None:
    rules = dockerignore_rules()
    outside = (
        ".ledger/cipher.key",
        ".ledger/signing.key",
        ".ledger/pgdata/PG_VERSION",
        "docker/secrets/cipher.key",
        "docker/secrets/db_password",
        ".git/config",
        ".venv/bin/python",
        "tests/test_docker.py",
        "ledger/__pycache__/x.pyc",
    )
    for secret in outside:
        assert not in_context(secret, rules), secret
    files = context_files()
    top = {f.split("/")[0] for f in files}
    assert top <= {"pyproject.toml", "README.md", "ledger", "projections", "api", "docker"}, top
    assert [f for f in files if f.startswith("docker/")] == ["docker/entrypoint.py"]
    # Every COPY source of the Dockerfile is in the context.
    for ins in dockerfile():
        if ins.keyword == "COPY" and "--from" not in ins.arguments:
            sources = [a for a in ins.arguments.split() if not a.startswith("--")][:-1]
            for source in sources:
                assert any(f == source or f.startswith(source.rstrip("/") + "/")
                           for f in files), source  # fmt: skip


def test_a_wheel_built_from_the_context_alone_holds_the_ledger(tmp_path: Path) -> None:
    """The build stage's `pip wheel .`, on a copy of exactly the build context."""
    context = tmp_path / "context"
    for f in context_files():
        (context / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, context / f)
    wheels = tmp_path / "wheels"
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir",
         str(wheels), "."],
        cwd=context, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    (wheel,) = wheels.glob("compliance_ledger-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        entry_points = next(n for n in names if n.endswith("entry_points.txt"))
        assert "ledger = api.cli:main" in z.read(entry_points).decode()
    assert "ledger/rulesets/prc_2014.toml" in names
    for package in ("ledger", "projections", "api", "api/graphql", "ledger/domain"):
        assert f"{package}/__init__.py" in names, package
    assert not any(n.startswith("tests/") for n in names)
    # Installed on its own, the wheel's code runs: the ruleset loads, the CLI parses.
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--target", str(target), str(wheel)], check=True, timeout=120)  # fmt: skip
    probe = (
        "import ledger, api.cli; from ledger.ruleset import load_ruleset; load_ruleset();"
        " api.cli.build_parser(); print(ledger.__file__)"
    )
    ran = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": str(target)}, timeout=60,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip().startswith(str(target)), ran.stdout


# ----- secrets.sh and the entrypoint --------------------------------------------------


def make_secrets(directory: Path) -> str:
    made = subprocess.run(
        ["sh", str(DOCKER / "secrets.sh"), str(directory)],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    return made.stdout


def test_secrets_script_makes_keys_the_ledger_reads_and_keeps_them(tmp_path: Path) -> None:
    from ledger.signing import Signer
    from ledger.vault import Vault

    secrets = tmp_path / "secrets"
    out = make_secrets(secrets)
    assert out.count("created") == 3, out
    assert secrets.stat().st_mode & 0o777 == 0o700
    contents = {p.name: p.read_text() for p in secrets.iterdir()}
    assert set(contents) == {"db_password", "cipher.key", "signing.key"}
    for p in secrets.iterdir():
        assert p.stat().st_mode & 0o777 == 0o444, p  # readable by the container's uid
    Vault.from_environment(secrets)  # base64 of 32 bytes, as <data dir>/cipher.key
    os.environ["LEDGER_SIGNING_KEY"] = str(secrets / "signing.key")
    try:
        Signer.from_environment(tmp_path)
    finally:
        del os.environ["LEDGER_SIGNING_KEY"]
    assert re.fullmatch(r"[0-9a-f]{64}\n", contents["db_password"])
    again = make_secrets(secrets)
    assert again.count("kept") == 3, again
    assert {p.name: p.read_text() for p in secrets.iterdir()} == contents


def test_entrypoint_writes_the_password_file_and_runs_the_command(tmp_path: Path) -> None:
    secret = tmp_path / "db_password"
    secret.write_text("p@ss:w\\rd %\n")
    pgpass = tmp_path / "home" / ".pgpass"
    env = {**os.environ, "LEDGER_DATABASE_PASSWORD_FILE": str(secret), "PGPASSFILE": str(pgpass)}
    ran = subprocess.run(
        [sys.executable, str(DOCKER / "entrypoint.py"), sys.executable, "-c",
         "import os; print(os.environ['PGPASSFILE'])"],
        env=env, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == str(pgpass)
    assert pgpass.read_text() == "*:*:*:*:p@ss\\:w\\\\rd %\n"
    assert pgpass.stat().st_mode & 0o777 == 0o600  # libpq ignores a looser file
    missing = subprocess.run(
        [sys.executable, str(DOCKER / "entrypoint.py"), "true"],
        env={**env, "LEDGER_DATABASE_PASSWORD_FILE": str(tmp_path / "nope")},
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert missing.returncode == 2
    assert missing.stderr.startswith("ledger-entrypoint: LEDGER_DATABASE_PASSWORD_FILE: ")
    assert "No such file" in missing.stderr


# ----- the services, run as processes ------------------------------------------------


def interpolate(text: str, host_env: dict[str, str]) -> str:
    """Compose's interpolation: $$ is a dollar, ${NAME} and ${NAME:-default}."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, default = match.group(1), match.group(3) or ""
        return host_env.get(name) or default

    return re.sub(r"\$\$|\$\{(\w+)(:-([^}]*))?\}", one, text)


@dataclass
class Service:
    """A compose service as a process on this machine: its container's paths mapped into
    a directory of its own."""

    name: str
    spec: dict[str, Any]
    root: Path
    cluster: Cluster
    secrets: Path
    host_env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.run_secrets = self.root / "run" / "secrets"
        self.home = self.root / "home" / "ledger"
        self.data = self.root / "var" / "lib" / "ledger"
        for d in (self.run_secrets, self.home, self.data):
            d.mkdir(parents=True, exist_ok=True)
        sources = compose()["secrets"]
        for entry in self.spec.get("secrets", []):
            entry = {"source": entry, "target": entry} if isinstance(entry, str) else entry
            source = (COMPOSE.parent / sources[entry["source"]]["file"]).resolve()
            assert source.parent == (DOCKER / "secrets").resolve(), source
            mounted = self.run_secrets / entry["target"]
            mounted.unlink(missing_ok=True)  # read-only (0444), like the source
            shutil.copy2(self.secrets / source.name, mounted)

    def path(self, value: str) -> str:
        for inside, outside in (("/run/secrets", self.run_secrets), ("/home/ledger", self.home),
                                ("/var/lib/ledger", self.data)):  # fmt: skip
            if value == inside or value.startswith(inside + "/"):
                return str(outside) + value[len(inside) :]
        return value

    def environment(self) -> dict[str, str]:
        env = {
            "PATH": f"{BIN}:{os.environ['PATH']}",
            "HOME": str(self.home),
            "LANG": "C.UTF-8",
        }
        env.update({k: self.path(v) for k, v in image_environment().items()})
        for name, value in (self.spec.get("environment") or {}).items():
            env[name] = self.path(interpolate(str(value), self.host_env))
        url = env["LEDGER_DATABASE_URL"]
        assert "@postgres:5432/" in url, url
        env["LEDGER_DATABASE_URL"] = url.replace(
            "@postgres:5432/", f"@127.0.0.1:{self.cluster.port}/"
        )
        return env

    def command(self, override: list[str] | None = None) -> list[str]:
        command = override or [interpolate(str(a), self.host_env) for a in self.spec["command"]]
        (entrypoint,) = [i for i in final_stage() if i.keyword == "ENTRYPOINT"]
        assert exec_form(entrypoint) == ["ledger-entrypoint"]
        return [sys.executable, str(DOCKER / "entrypoint.py"), *command]

    def run(self, *override: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """A one-shot: the service's command, or `docker compose run --rm SERVICE ...`."""
        return subprocess.run(
            self.command(list(override) or None), env=self.environment(), cwd=self.home,
            capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip

    def start(self, replace: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        command = self.command()
        command = [(replace or {}).get(a, a) for a in command]
        log = open(self.root / "output.log", "wb")  # noqa: SIM115 (kept by the process)
        return subprocess.Popen(command, env=self.environment(), cwd=self.home, stdout=log,
                                stderr=subprocess.STDOUT)  # fmt: skip

    def output(self) -> str:
        log = self.root / "output.log"
        return log.read_text(errors="replace") if log.exists() else ""

    def healthcheck(self, port: int | None = None) -> int:
        """The service's healthcheck, or the image's: its exit status."""
        if "healthcheck" in self.spec:
            test = list(self.spec["healthcheck"]["test"])
        else:
            (health,) = [i for i in final_stage() if i.keyword == "HEALTHCHECK"]
            test = ["CMD", *exec_form(health)]
        assert test[0] == "CMD", test
        argv = [a.replace("127.0.0.1:8000/", f"127.0.0.1:{port}/") for a in test[1:]]
        if argv[0] == "python":
            argv[0] = sys.executable
        # Run as `docker exec` does: the container's environment, not the entrypoint.
        done = subprocess.run(argv, env=self.environment(), cwd=self.home,
                              capture_output=True, timeout=30)  # fmt: skip
        return done.returncode


def prepare_postgres(cluster: Cluster, service: dict[str, Any], secrets: Path) -> None:
    """What the postgres image does with its environment: a superuser with the password
    of the secret, its database; then password authentication over TCP."""
    env = service["environment"]
    user, database = env["POSTGRES_USER"], env["POSTGRES_DB"]
    password = (secrets / Path(env["POSTGRES_PASSWORD_FILE"]).name).read_text().strip()
    with psycopg.connect(cluster.url, autocommit=True) as conn:
        conn.execute(f'CREATE ROLE "{user}" LOGIN SUPERUSER')
        conn.execute(f"ALTER ROLE \"{user}\" PASSWORD '{password}'")
        conn.execute(f'CREATE DATABASE "{database}" OWNER "{user}"')
    (cluster.data / "pg_hba.conf").write_text(
        "local all all trust\n"
        "host all postgres 127.0.0.1/32 trust\n"
        "host all all 127.0.0.1/32 scram-sha-256\n"
    )
    cluster._pg_ctl("reload")


@pytest.fixture
def system(tmp_path: Path) -> Iterator[tuple[Cluster, Path]]:
    secrets = tmp_path / "secrets"
    make_secrets(secrets)
    with Cluster() as cluster:
        prepare_postgres(cluster, compose()["services"]["postgres"], secrets)
        yield cluster, secrets


def wait(what: str, check: Any, timeout: float = 60, processes: tuple[Service, ...] = ()) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            got = check()
        except (httpx.HTTPError, AssertionError, KeyError):
            got = None
        if got:
            return got
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {s.name}\n{s.output()[-3000:]}" for s in processes)
            raise AssertionError(f"timed out waiting for {what}\n{logs}")
        time.sleep(0.2)


def gql(port: int, token: str, query: str, **variables: Any) -> dict[str, Any]:
    response = httpx.post(
        f"http://127.0.0.1:{port}/graphql",
        json={"query": query, "variables": variables},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def mutate(port: int, token: str, name: str, input: dict[str, Any], key: str) -> dict[str, Any]:
    query = (
        f"mutation($input: {name[0].upper()}{name[1:]}Input!, $key: String!) {{"
        f" {name}(input: $input, idempotencyKey: $key) {{ __typename"
        " ... on CommandSuccess { position providerId accountId sanctionId }"
        " ... on MutationError { code message } } }"
    )
    result = gql(port, token, query, input=input, key=key)
    assert "errors" not in result, result
    got: dict[str, Any] = result["data"][name]
    assert got["__typename"] == "CommandSuccess", got
    return got


def test_compose_services_run_together(system: tuple[Cluster, Path], tmp_path: Path) -> None:
    from ledger.signing import Signer
    from ledger.vault import kek_id_of

    cluster, secrets = system
    services = compose()["services"]
    host_env = {"LEDGER_DEMO_ACCOUNTS": "3"}  # as in `LEDGER_DEMO_ACCOUNTS=3 docker compose up`

    def service(name: str, instance: int = 1) -> Service:
        return Service(name, services[name], tmp_path / f"{name}-{instance}", cluster, secrets,
                       host_env)  # fmt: skip

    # init: the demo, then on the next `up` nothing new; without the demo, the tables.
    init = service("init")
    first = init.run()
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("ready: schema") and "\ndemo: " in first.stdout, first.stdout
    again = init.run()
    assert again.returncode == 0 and "already loaded" in again.stdout, again
    host_env.pop("LEDGER_DEMO_ACCOUNTS")
    plain = service("init", 2).run()
    assert plain.returncode == 0 and plain.stdout.startswith("ready: schema"), plain

    # api twice (`--scale api=2`: each replica its own port) and the projector.
    ports = [free_port(), free_port()]
    apis = [service("api", n + 1) for n in range(2)]
    projector = service("projector")
    everyone = (*apis, projector)
    processes = [api.start({"8000": str(port)}) for api, port in zip(apis, ports, strict=True)]
    processes.append(projector.start())
    try:
        for api, port in zip(apis, ports, strict=True):
            healthy = lambda a=api, p=port: a.healthcheck(p) == 0  # noqa: E731
            wait("the api's healthcheck", healthy, processes=everyone)

        # Tokens, as an operator makes them: `docker compose run --rm init ledger token ...`
        def token(*args: str) -> str:
            made = service("init", 3).run("ledger", "token", "create", *args)
            assert made.returncode == 0, made.stderr
            return made.stdout.split(": ", 1)[1].strip()

        regulator = token("--role", "regulator", "--name", "compose-test")
        provider_id = mutate(ports[0], regulator, "registerProvider",
                             {"code": "dock", "name": "Dock", "licenceRef": "L-dock"},
                             "p1")["providerId"]  # fmt: skip
        operator = token("--role", "provider", "--provider", provider_id, "--name", "dock-ops")
        account = mutate(ports[1], operator, "registerAccount",
                         {"providerId": provider_id, "handle": "harbour", "kind": "personal"},
                         "a1")["accountId"]  # fmt: skip
        mutate(ports[0], operator, "verifyIdentity",
               {"accountId": account, "realName": "Li Lei", "idNumber": "110101199003070011",
                "method": "id_card"}, "v1")  # fmt: skip
        last = mutate(ports[1], regulator, "imposeSanction",
                      {"accountId": account, "level": "warning", "ruleIds": ["art.9"],
                       "reason": "test"}, "s1")  # fmt: skip
        position = last["position"]

        # Projected by the projector: either replica reads it.
        def projected() -> bool:
            got = gql(ports[0], regulator, """query($id: ID!, $p: ID!) { account(id: $id) { handle
                verified sanctionsByLevel { level count } } provider(id: $p) { accounts } }""",
                      id=account, p=provider_id)  # fmt: skip
            assert "errors" not in got, got
            return bool(got["data"]["account"] and got["data"]["account"]["verified"]
                        and got["data"]["account"]["sanctionsByLevel"]
                        and got["data"]["provider"]["accounts"] == 1)  # fmt: skip

        wait("the projector", projected, processes=everyone)

        # Sealed by the sealer: an inclusion proof of the last write checks offline,
        # under the key of the signing.key secret.
        def proof() -> dict[str, Any] | None:
            got = gql(ports[1], regulator, """query($p: Position!) { inclusionProof(position:
                $p) { document head { publicKey treeSize } } }""", p=position)  # fmt: skip
            return None if "errors" in got else got["data"]["inclusionProof"]

        sealed = wait("the sealer", proof, processes=everyone)
        os.environ["LEDGER_SIGNING_KEY"] = str(secrets / "signing.key")
        try:
            public_key = Signer.from_environment(tmp_path).public_key_hex
        finally:
            del os.environ["LEDGER_SIGNING_KEY"]
        assert sealed["head"]["publicKey"] == public_key
        document = tmp_path / "proof.json"
        document.write_text(json.dumps(sealed["document"]))
        checked = subprocess.run([str(tool("ledger")), "verify-proof", str(document),
                                  "--public-key", public_key], capture_output=True, text=True,
                                 timeout=60)  # fmt: skip
        assert checked.returncode == 0, checked.stdout + checked.stderr

        # The whole log verifies, the read side is healthy and every replica ready.
        verified = service("projector", 2).run("ledger", "verify")
        assert verified.returncode == 0 and "OK" in verified.stdout, verified
        wait("the projector's healthcheck", lambda: projector.healthcheck() == 0,
             processes=everyone)  # fmt: skip
        for port in ports:
            wait("readyz", lambda p=port: httpx.get(f"http://127.0.0.1:{p}/readyz",
                 timeout=5).status_code == 200, processes=everyone)  # fmt: skip

        # Identities are sealed under the KEK of the cipher.key secret, and no process
        # made a key of its own anywhere.
        kek = base64.b64decode((secrets / "cipher.key").read_text())
        status = service("init", 4).run("ledger", "keys", "status")
        assert f"current key-encryption key: {kek_id_of(kek)}" in status.stdout, status
        for s in (*everyone, init):
            assert list(s.data.iterdir()) == [], f"{s.name} wrote into the image's data dir"
            assert sorted(p.name for p in s.run_secrets.iterdir()) == [
                "cipher.key", "db_password", "signing.key"]  # fmt: skip
    finally:
        for p in processes:
            p.send_signal(signal.SIGTERM)  # `docker compose stop`
        codes = [p.wait(timeout=15) for p in processes]  # compose waits 10 s, then kills
    logs = "\n".join(s.output()[-2000:] for s in everyone)
    # uvicorn shuts down cleanly, then re-raises the signal (143 in a container) with one
    # worker, or exits 0 as the manager of several (the default: one per core).
    assert [c in (0, -signal.SIGTERM) for c in codes[:2]] == [True, True] and codes[2] == 0, (
        codes, logs)  # fmt: skip
    for api in apis:
        assert "Application shutdown complete." in api.output(), api.output()
    assert "projector: stopped" in projector.output()


def test_a_wrong_database_password_is_one_clear_line(
    system: tuple[Cluster, Path], tmp_path: Path
) -> None:
    cluster, _ = system
    wrong = tmp_path / "other-secrets"
    make_secrets(wrong)  # other keys, another password
    init = Service("init", compose()["services"]["init"], tmp_path / "init", cluster, wrong)
    failed = init.run()
    assert failed.returncode == 1
    assert "password authentication failed" in failed.stderr, failed.stderr
    assert len(failed.stderr.strip().splitlines()) == 1, failed.stderr
