"""A module that calls sys.exit while it is imported, as a script without a main guard does
(`env.id=tests.exiting_module:Anything-v0`)."""

import sys

sys.exit(0)
