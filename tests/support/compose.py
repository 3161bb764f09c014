"""docker-compose.yml and the Dockerfile, read the way Docker would read them (no engine runs here).

`Dockerfile.final_stage` gives what the image the services run holds: its user, the directories
its RUN lines create and whom they are chowned to, what it COPYs where. `Compose` gives the
services with the anchors merged, each service's programs (``sh -c`` scripts split into their
commands), volumes, dependencies, and the order ``docker compose up`` starts them in.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from graphlib import TopologicalSorter
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"


@dataclass
class Stage:
    """The last FROM stage of a Dockerfile: what the running image holds."""

    user: str = "root"
    workdir: str = "/"
    made: set[str] = field(default_factory=set)
    """Directories created by ``mkdir`` in RUN lines."""
    owners: dict[str, str] = field(default_factory=dict)
    """Path -> user it was chowned to (``chown user[:group] PATH...``) before the USER line took effect."""
    copies: dict[str, str] = field(default_factory=dict)
    """Image path (absolute) -> source in the build context."""


def final_stage(text: str | None = None) -> Stage:
    text = DOCKERFILE.read_text() if text is None else text
    joined = re.sub(r"\\\n", " ", text)  # line continuations
    lines = [ln.strip() for ln in joined.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    last_from = max(i for i, ln in enumerate(lines) if ln.upper().startswith("FROM "))
    stage = Stage()
    for line in lines[last_from + 1 :]:
        instruction, _, rest = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "USER":
            stage.user = rest.split(":")[0].strip()
        elif instruction == "WORKDIR":
            stage.workdir = rest.strip()
        elif instruction == "COPY" and not rest.startswith("--"):
            src, dst = rest.split()
            stage.copies[str(Path(stage.workdir) / dst)] = src
        elif instruction == "RUN":
            for command in re.split(r"&&|;", rest):
                words = shlex.split(command)
                if words[:1] == ["mkdir"]:
                    stage.made.update(w for w in words[1:] if not w.startswith("-"))
                elif words[:1] == ["chown"]:
                    args = [w for w in words[1:] if not w.startswith("-")]
                    for path in args[1:]:
                        stage.owners[path] = args[0].split(":")[0]
    return stage


@dataclass
class Service:
    name: str
    spec: dict[str, Any]

    @property
    def image(self) -> str:
        return str(self.spec.get("image", ""))

    @property
    def builds_here(self) -> bool:
        return self.spec.get("build") == "."

    @property
    def replicas(self) -> int:
        return int(self.spec.get("deploy", {}).get("replicas", 1))

    @property
    def depends_on(self) -> dict[str, str]:
        deps = self.spec.get("depends_on") or {}
        if isinstance(deps, list):
            return {d: "service_started" for d in deps}
        return {d: c.get("condition", "service_started") for d, c in deps.items()}

    @property
    def mounts(self) -> list[tuple[str, str, bool]]:
        """(source, target, read-only) per volume; a long-syntax mount of a volume's ``subpath`` has
        ``<volume>/<subpath>`` as its source."""
        out = []
        for v in self.spec.get("volumes", []):
            if isinstance(v, dict):
                source = "/".join(filter(None, (v["source"], (v.get("volume") or {}).get("subpath"))))
                out.append((source, v["target"], bool(v.get("read_only"))))
                continue
            source, target, *mode = v.split(":")
            out.append((source, target, mode == ["ro"]))
        return out

    @property
    def script(self) -> str | None:
        """The ``sh -c`` script of the command, with compose's ``$$`` escapes undone."""
        cmd = self.spec.get("command")
        if cmd and cmd[:2] == ["sh", "-c"]:
            return str(cmd[2]).replace("$$", "$")
        return None

    def commands(self) -> list[list[str]]:
        """Every program the service runs with its arguments (a ``sh -c`` script split at ``&&``;
        ``$(...)`` substitutions stand in as one word, leading VAR=value and redirections dropped)."""
        cmd = self.spec.get("command")
        if not cmd:
            return []
        script = self.script
        if script is None:
            return [list(cmd)]
        script = re.sub(r"\$\([^)]*\)", "X", script).replace("exec ", "")
        out = []
        for part in script.split("&&"):
            words = shlex.split(part)
            while words and re.match(r"^[A-Z_]+=", words[0]):
                words = words[1:]
            cut = next((i for i, w in enumerate(words) if w.startswith(">")), len(words))
            out.append(words[:cut])
        return out


class Compose:
    def __init__(self, path: Path = COMPOSE) -> None:
        self.doc: dict[str, Any] = YAML(typ="safe").load(path.read_text())  # safe: merges the << anchors
        self.services = {n: Service(n, s) for n, s in self.doc["services"].items()}
        self.volumes = set(self.doc.get("volumes") or {})

    def start_order(self) -> list[str]:
        """Services in an order ``docker compose up`` may start them (dependencies first)."""
        graph = {n: set(s.depends_on) for n, s in self.services.items()}
        for n, s in self.services.items():
            shared = str(s.spec.get("network_mode", "")).removeprefix("service:")
            if shared in self.services:
                graph[n].add(shared)
        return list(TopologicalSorter(graph).static_order())

    def one_shots(self) -> set[str]:
        """Services others wait on to finish (``service_completed_successfully``)."""
        return {
            d
            for s in self.services.values()
            for d, c in s.depends_on.items()
            if c == "service_completed_successfully"
        }


def pyproject_scripts() -> set[str]:
    import tomllib

    return set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"])
