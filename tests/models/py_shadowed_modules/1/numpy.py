raise RuntimeError("shadowed numpy")
