"""A module that raises while it is imported (`env.id=tests.raising_module:Anything-v0`)."""

raise RuntimeError("this module is broken")
