"""Stand-in for ansible-test's get-pip bootstrap script.

ansible-test --venv downloads get-pip.py from ci-files.testing.ansible.com to put pip into the
virtual environments it makes; CI machines reach only the package registries. This does the
same from the standard library and the configured package index: ensurepip, then pip install
of what ansible-test asked for (pip==VERSION, setuptools, wheel).
"""

import subprocess
import sys

subprocess.check_call([sys.executable, "-m", "ensurepip", "--default-pip"], stdout=subprocess.DEVNULL)
wanted = [arg for arg in sys.argv[1:] if arg not in ("--no-setuptools", "--no-wheel")]
subprocess.check_call([sys.executable, "-m", "pip", "install", *wanted])
