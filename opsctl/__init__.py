"""opsctl: keep nginx + php-fpm fleets alive under sudden traffic."""

import re

from opsctl.paths import collection_dir

# One version for opsctl and the collection it carries and runs: the collection's galaxy.yml.
__version__ = re.search(r"(?m)^version: (\S+)$", (collection_dir() / "galaxy.yml").read_text()).group(1)
