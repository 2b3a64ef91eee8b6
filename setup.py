"""Maps the repository's top-level runtime/ and backends/ folders to trident.runtime and
trident.backends, so the installed names cannot clash with other distributions' top-level
'runtime' or 'backends' modules. Everything else is in pyproject.toml."""

from setuptools import find_packages, setup

MAPPED = {"trident.runtime": "runtime", "trident.backends": "backends"}

packages = ["trident"]
for installed_name, folder in MAPPED.items():
    packages.append(installed_name)
    packages += [f"{installed_name}.{sub}" for sub in find_packages(where=folder)]

setup(
    packages=packages,
    package_dir={"trident": "trident", **MAPPED},
    package_data={"trident.runtime": ["protocol/*.py", "protocol/*.pyi"]},
)
