raise RuntimeError("shadowed the stdlib")
