"""What a wheel of acetwist carries."""

import configparser
import os

from twisted.trial.unittest import SynchronousTestCase

from acetwist.testing import repo_root


class PackagingTests(SynchronousTestCase):
    def test_every_package_is_listed_for_the_wheel(self) -> None:
        """Every directory of acetwist/ with an __init__.py is in setup.cfg's packages (the list is explicit)."""
        root = repo_root()
        config = configparser.ConfigParser()
        config.read(os.path.join(root, "setup.cfg"))
        listed = set(config["options"]["packages"].split())
        found = set()
        for directory, _, files in os.walk(os.path.join(root, "acetwist")):
            if "__init__.py" in files and "__pycache__" not in directory:
                found.add(os.path.relpath(directory, root).replace(os.sep, "."))
        self.assertEqual(found - listed, set())
