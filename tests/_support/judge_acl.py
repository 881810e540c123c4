"""An ACL for one caller (``analyst-agent`` in ``default``), for the judge's playbooks."""

from __future__ import annotations

from sidecar.policy.acl import AccessControl
from sidecar.policy.configuration import parse_configuration


def acl_for(operations: list[dict], default: str = "deny") -> AccessControl:
    """Global default allow; ``analyst-agent`` gets ``default`` and ``operations``."""
    return parse_configuration(
        {
            "apiVersion": "dapr.io/v1alpha1",
            "kind": "Configuration",
            "metadata": {"name": "c"},
            "spec": {
                "accessControl": {
                    "defaultAction": "allow",
                    "policies": [
                        {
                            "appId": "analyst-agent",
                            "trustDomain": "public",
                            "namespace": "default",
                            "defaultAction": default,
                            "operations": operations,
                        }
                    ],
                }
            },
        }
    ).access_control
