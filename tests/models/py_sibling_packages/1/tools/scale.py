import shared_settings

EXTRA = 1


def factor():
    return shared_settings.BASE
