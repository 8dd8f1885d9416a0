"""One import root: ``mailstorm`` is the folder of that name (the ground every part uses), and the folders
the project was designed with, kept at the top of the repository, install as its subpackages
(``harness/`` -> ``mailstorm.harness``, ...). Everything else is in pyproject.toml."""

from setuptools import find_packages, setup

SUBPACKAGES = ("harness", "fake_esp", "scenarios", "reports")

packages = ["mailstorm", *(f"mailstorm.{sub}" for sub in find_packages("mailstorm"))]
package_dir = {"mailstorm": "mailstorm"}
for root in SUBPACKAGES:
    package_dir[f"mailstorm.{root}"] = root
    packages += [f"mailstorm.{root}", *(f"mailstorm.{root}.{sub}" for sub in find_packages(root))]

setup(packages=packages, package_dir=package_dir)
