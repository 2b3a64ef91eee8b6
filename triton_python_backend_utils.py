from trident.backends.python.pb_utils import *  # noqa: F401,F403
