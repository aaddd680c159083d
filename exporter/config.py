"""process-exporter's YAML config, read unchanged. INTERFACE STUB (being implemented).

load_config(path) -> Config; path None gives the default config (one group per comm of
every user-space process). Errors raise ConfigError whose str() is one line naming the
file, the matcher and the problem.
"""


class ConfigError(Exception):
    pass


def load_config(path=None):
    raise NotImplementedError
