# -*- test-case-name: tests.test_config -*-
"""
Typed settings for the proxy: one table of options, read from flags, then
C{ACETWIST_<NAME>} environment variables, then acexy's variables, then defaults.

Every option is validated when the process starts; a bad value is a usage
error there, never a crash later. L{values} parses values, L{options} is
the table, L{settings} builds L{Settings}.
"""

from acetwist.config.options import OPTIONS, OptionSpec, env_name
from acetwist.config.settings import Settings, resolve
from acetwist.config.values import (
    ConfigError, parse_duration, parse_engine_url, parse_engine_urls, parse_listen, parse_orchestrator_url,
    parse_prefix, parse_redis_url, parse_size, with_backlog)

__all__ = [
    "OPTIONS", "OptionSpec", "env_name", "Settings", "resolve", "ConfigError", "parse_duration",
    "parse_engine_url", "parse_engine_urls", "parse_listen", "parse_orchestrator_url", "parse_prefix",
    "parse_redis_url", "parse_size", "with_backlog",
]
