"""CondaDependencies: a conda environment file built in code, as the v1 SDK's class.

trainyard installs the file's pip part in a layer over the image (managed dependencies); conda
packages other than python and pip need conda in the image. Unlike the service, no SDK package
is added: the in-run `trainyard` package is mounted into every run.
"""

from __future__ import annotations

import os
import re
import sys
TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing stays out of the import time
    from typing import Iterable, List, Optional

from .exceptions import UserErrorException

DEFAULT_NAME = "project_environment"
DEFAULT_CHANNELS = ["anaconda", "conda-forge"]


def _default_python() -> str:
    return "%d.%d" % sys.version_info[:2]


def _scalar(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


class CondaDependencies(object):
    """A conda environment specification: name, channels, conda packages and pip packages."""

    def __init__(self, conda_dependencies_file_path: Optional[str] = None,
                 _underlying_structure: Optional[dict] = None) -> None:
        self._name = DEFAULT_NAME
        self._channels = []  # type: List[str]
        self._conda = []  # type: List[str]
        self._pip = []  # type: List[str]
        self._pip_options = []  # type: List[str]
        self._source_text = None  # type: Optional[str]
        self._opaque = False
        if conda_dependencies_file_path:
            with open(conda_dependencies_file_path, encoding="utf-8") as f:
                self._parse(f.read(), conda_dependencies_file_path)
        elif _underlying_structure is not None:
            self._load(_underlying_structure)
        else:
            self._channels = list(DEFAULT_CHANNELS)
            self._conda = ["python=" + _default_python()]

    # --- construction ----------------------------------------------------------------------

    @staticmethod
    def create(pip_indexing: bool = True, conda_packages: Optional[Iterable[str]] = None,
               pip_packages: Optional[Iterable[str]] = None,
               python_version: Optional[str] = None,
               pin_sdk_version: bool = True) -> "CondaDependencies":
        """A new specification with `python_version` (default: this interpreter's version)."""
        cd = CondaDependencies()
        cd.set_python_version(python_version or _default_python())
        for p in conda_packages or []:
            cd.add_conda_package(p)
        for p in pip_packages or []:
            cd.add_pip_package(p)
        return cd

    @staticmethod
    def _from_file_whole(path: str) -> "CondaDependencies":
        """A conda file kept as written for the daemon, which reads the whole format; read
        here too when its shape is the usual one, so the program can change it."""
        with open(path, encoding="utf-8") as f:
            text = f.read()
        try:
            cd = CondaDependencies._from_text(text, path)
        except UserErrorException:
            cd = CondaDependencies._from_text("", path)
            cd._opaque = True
        cd._source_text = text
        return cd

    def _text_for_daemon(self) -> str:
        """What the daemon gets: the file as written while unchanged, else the serialised form."""
        return self._source_text if self._source_text is not None else \
            self.serialize_to_string()

    def _changed(self) -> None:
        if self._opaque:
            raise UserErrorException(
                "this conda file's shape is read by the daemon only; change the file itself")
        self._source_text = None

    @staticmethod
    def _from_text(text: str, where: str = "conda file") -> "CondaDependencies":
        cd = CondaDependencies.__new__(CondaDependencies)
        CondaDependencies.__init__(cd, _underlying_structure={})
        cd._parse(text, where)
        return cd

    def _load(self, doc: dict) -> None:
        self._name = str(doc.get("name", DEFAULT_NAME))
        self._channels = [str(c) for c in doc.get("channels", [])]
        for dep in doc.get("dependencies", []):
            if isinstance(dep, dict) and "pip" in dep:
                self._pip.extend(str(p) for p in dep["pip"])
            else:
                self._conda.append(str(dep))

    def _parse(self, text: str, where: str) -> None:
        """Reads the usual shape of environment.yml (name, channels, dependencies with a pip
        list). Anything else is an error naming the line: the daemon reads the full format
        when the file is given whole (Environment.from_conda_specification)."""
        doc = {"channels": [], "dependencies": []}  # type: dict
        section = None
        in_pip = False
        for number, raw in enumerate(text.splitlines(), 1):
            line = raw.split(" #", 1)[0].rstrip() if not raw.lstrip().startswith("#") else ""
            if not line.strip():
                continue
            indent = len(line) - len(line.lstrip(" "))
            body = line.strip()
            is_item = body.startswith("- ") or body == "-"
            if indent == 0 and not is_item:
                in_pip = False
                key, _, value = body.partition(":")
                if key in ("name", "prefix") and value.strip():
                    if key == "name":
                        doc["name"] = _scalar(value)
                    continue
                if key in ("channels", "dependencies") and not value.strip():
                    section = key
                    continue
                if key == "variables":
                    section = None
                    continue
                raise UserErrorException("%s:%d: cannot read %r here (expected name, channels or "
                                         "dependencies)" % (where, number, body))
            if section is None:
                continue
            if not is_item:
                raise UserErrorException("%s:%d: expected a list item, got %r"
                                         % (where, number, body))
            item = body[1:].strip()
            if section == "dependencies" and re.match(r"^pip\s*:\s*$", item):
                in_pip = True
                doc["dependencies"].append({"pip": []})
                pip_indent = indent
                continue
            if in_pip and indent > pip_indent:
                doc["dependencies"][-1]["pip"].append(_scalar(item))
                continue
            in_pip = False
            flow = re.match(r"^pip\s*:\s*\[(.*)\]$", item)
            if section == "dependencies" and flow:
                doc["dependencies"].append(
                    {"pip": [_scalar(p) for p in flow.group(1).split(",") if p.strip()]})
                continue
            if re.search(r":\s|:$|^[\[{]", item):
                raise UserErrorException("%s:%d: cannot read %r here (expected a package)"
                                         % (where, number, item))
            doc[section].append(_scalar(item))
        self._name, self._channels, self._conda, self._pip = DEFAULT_NAME, [], [], []
        self._load(doc)

    # --- reading ---------------------------------------------------------------------------

    @property
    def conda_packages(self) -> Iterable[str]:
        return iter(list(self._conda))

    @property
    def pip_packages(self) -> Iterable[str]:
        return iter(list(self._pip))

    @property
    def conda_channels(self) -> Iterable[str]:
        return iter(list(self._channels))

    @property
    def pip_options(self) -> Iterable[str]:
        return iter(list(self._pip_options))

    def get_python_version(self) -> Optional[str]:
        for p in self._conda:
            m = re.match(r"^python\s*[=<>!~]*=?\s*([0-9][^\s]*)$", p)
            if m:
                return m.group(1)
        return None

    # --- changing --------------------------------------------------------------------------

    @staticmethod
    def _base(spec: str) -> str:
        return re.split(r"[=<>!~\[\s;@]", spec.strip(), 1)[0].lower()

    def _replace(self, items: List[str], spec: str) -> None:
        self._changed()
        base = self._base(spec)
        for i, existing in enumerate(items):
            if self._base(existing) == base:
                items[i] = spec
                return
        items.append(spec)

    def add_conda_package(self, conda_package: str) -> None:
        """Adds a conda package, replacing another version of the same package."""
        self._replace(self._conda, conda_package)

    def remove_conda_package(self, conda_package: str) -> None:
        self._changed()
        base = self._base(conda_package)
        self._conda = [p for p in self._conda if self._base(p) != base]

    def add_pip_package(self, pip_package: str) -> None:
        """Adds a pip requirement, replacing another version of the same package."""
        self._replace(self._pip, pip_package)

    def remove_pip_package(self, pip_package: str) -> None:
        self._changed()
        base = self._base(pip_package)
        self._pip = [p for p in self._pip if self._base(p) != base]

    def add_channel(self, channel: str) -> None:
        self._changed()
        if channel not in self._channels:
            self._channels.append(channel)

    def remove_channel(self, channel: str) -> None:
        self._changed()
        self._channels = [c for c in self._channels if c != channel]

    def set_pip_option(self, pip_option: str) -> None:
        self._changed()
        if pip_option not in self._pip_options:
            self._pip_options.append(pip_option)

    def set_python_version(self, version: str) -> None:
        self._replace(self._conda, "python=" + version)

    # --- writing ---------------------------------------------------------------------------

    def serialize_to_string(self) -> str:
        """The environment file as YAML."""
        out = ["# Conda environment specification. Its pip part is installed by trainyard over",
               "# the image when dependencies are managed (user_managed_dependencies = False).",
               "", "name: %s" % self._name, "dependencies:"]
        out.extend("- %s" % p for p in self._conda)
        if self._pip or self._pip_options:
            out.append("- pip:")
            out.extend("  - %s" % p for p in self._pip_options + self._pip)
        out.append("channels:")
        out.extend("- %s" % c for c in self._channels)
        return "\n".join(out) + "\n"

    def save(self, path: Optional[str] = None) -> str:
        """Writes the file (default: ./conda_dependencies.yml); returns its path."""
        path = path or "conda_dependencies.yml"
        folder = os.path.dirname(path)
        if folder:
            os.makedirs(folder, exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(self.serialize_to_string())
        return path

    def save_to_file(self, base_directory: str,
                     conda_file_path: Optional[str] = None) -> str:
        return self.save(os.path.join(base_directory, conda_file_path or "conda_dependencies.yml"))

    def _has_packages(self) -> bool:
        """Whether there is anything to install beyond python and pip themselves."""
        return self._opaque or bool(self._pip) or \
            any(self._base(p) not in ("python", "pip") for p in self._conda)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CondaDependencies) and \
            self.serialize_to_string() == other.serialize_to_string()

    def __repr__(self) -> str:
        return "CondaDependencies(%r)" % self.serialize_to_string()
