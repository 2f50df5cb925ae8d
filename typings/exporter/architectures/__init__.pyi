# The wheel installs architectures/ as exporter.architectures ([tool.setuptools.package-dir]); mypy has
# no such mapping, so these stubs point each exporter.architectures module at the checked source in
# architectures/ (which mypy checks as the package `architectures`: [tool.mypy] mypy_path).
from architectures import *
