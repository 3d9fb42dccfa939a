"""Mount the repository's top-level folders as subpackages of the one import package ``fedft``.

The folders keep the repository layout readable (``server/``, ``kernels/``, ...) while nothing
installs a generic top-level name that collides with real PyPI packages. Metadata lives in
pyproject.toml; this file only builds the package-dir mapping.
"""

from pathlib import Path

from setuptools import find_packages, setup

MOUNTS = {
    "fedft.cli": "cli",
    "fedft.core": "core",
    "fedft.proto": "protos/fedft/proto",
    "fedft.server": "server",
    "fedft.client": "client",
    "fedft.runtime": "runtime",
    "fedft.strategies": "strategies",
    "fedft.kernels": "kernels",
    "fedft.privacy": "privacy",
    "fedft.simulation": "simulation",
}

# ``fedft`` itself is an implicit namespace package: it has no folder of its own.
package_dir: dict[str, str] = {}
packages: list[str] = []
for package, folder in MOUNTS.items():
    package_dir[package] = folder
    packages.append(package)
    for sub in find_packages(folder):
        packages.append(f"{package}.{sub}")
        package_dir[f"{package}.{sub}"] = str(Path(folder, *sub.split(".")))

setup(package_dir=package_dir, packages=packages)
