"""Lambda's Python runtimes and architectures: what a layer is built for.

A :class:`Target` is one runtime and architecture, and what follows from it: the Python
version, the ABI tag, the CPU, the newest glibc and so the manylinux tags its wheels may
carry, and pip's cross-platform options for them.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass

from mlayer.errors import ConfigError

# Runtime -> (OS, newest glibc, deprecation date or None), as AWS lists them:
# https://docs.aws.amazon.com/lambda/latest/dg/lambda-runtimes.html
RUNTIME_INFO: dict[str, tuple[str, tuple[int, int], str | None]] = {
    "python3.14": ("Amazon Linux 2023", (2, 34), None),
    "python3.13": ("Amazon Linux 2023", (2, 34), None),
    "python3.12": ("Amazon Linux 2023", (2, 34), None),
    "python3.11": ("Amazon Linux 2", (2, 26), "2026-06-30"),
    "python3.10": ("Amazon Linux 2", (2, 26), "2026-06-30"),
}


@dataclass(frozen=True)
class Target:
    """A Lambda runtime and architecture, and what wheels must match for it."""

    runtime: str
    arch: str

    def __post_init__(self) -> None:
        if self.runtime not in RUNTIME_INFO:
            raise ConfigError(
                f"unknown runtime {self.runtime!r}; choose one of {', '.join(RUNTIME_INFO)}"
            )
        if self.arch not in ("x86_64", "arm64"):
            raise ConfigError(f"unknown arch {self.arch!r}; choose x86_64 or arm64")

    @property
    def python_version(self) -> str:
        return self.runtime.removeprefix("python")

    @property
    def minor(self) -> int:
        return int(self.python_version.split(".")[1])

    @property
    def abi(self) -> str:
        return f"cp3{self.minor}"

    @property
    def machine(self) -> str:
        return "aarch64" if self.arch == "arm64" else "x86_64"

    @property
    def glibc(self) -> tuple[int, int]:
        return RUNTIME_INFO[self.runtime][1]

    @property
    def glibc_text(self) -> str:
        return f"{self.glibc[0]}.{self.glibc[1]}"

    @property
    def os_name(self) -> str:
        return RUNTIME_INFO[self.runtime][0]

    @property
    def cache_tag(self) -> str:
        return f"cpython-3{self.minor}"

    @property
    def deprecated(self) -> str | None:
        return RUNTIME_INFO[self.runtime][2]

    @property
    def docker_platform(self) -> str:
        return "linux/arm64" if self.arch == "arm64" else "linux/amd64"

    def platforms(self) -> list[str]:
        """The manylinux tags the runtime accepts, oldest first (as the script prints them)."""
        tags: list[str] = []
        first = 17
        if self.machine == "x86_64":
            tags += ["manylinux1_x86_64", "manylinux2010_x86_64"]
            first = 5
        tags.append(f"manylinux2014_{self.machine}")
        tags += [f"manylinux_2_{i}_{self.machine}" for i in range(first, self.glibc[1] + 1)]
        return tags

    def pip_target_args(self) -> list[str]:
        args = [
            "--only-binary=:all:",
            "--implementation",
            "cp",
            "--python-version",
            self.python_version,
            "--abi",
            self.abi,
        ]
        for tag in self.platforms():
            args += ["--platform", tag]
        return args

    def describe(self) -> str:
        return (
            f"{self.runtime} {self.arch} ({self.abi}, manylinux up to glibc "
            f"{self.glibc[0]}.{self.glibc[1]}, {self.os_name})"
        )


def host_machine() -> str:
    machine = platform.machine().lower()
    return "aarch64" if machine in ("aarch64", "arm64") else machine
