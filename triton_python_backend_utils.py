from trident.backends.python.pb_utils import *  # noqa: F403
