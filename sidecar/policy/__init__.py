"""Pure policy decisions: no sockets, no files, no clocks read behind the caller's back."""

from .acl import AccessControl, AclOperation, AppPolicy, evaluate_acl
from .acl_parse import parse_access_control
from .configuration import (
    Configuration,
    Handler,
    build_configuration,
    configuration_to_document,
    parse_configuration,
)
from .decision import Decision

__all__ = [
    "AccessControl",
    "AclOperation",
    "AppPolicy",
    "Configuration",
    "Decision",
    "Handler",
    "build_configuration",
    "configuration_to_document",
    "evaluate_acl",
    "parse_access_control",
    "parse_configuration",
]
