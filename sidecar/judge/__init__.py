"""The sans-I/O judge: every decision on a request, as pure code returning frozen verdicts.

The proxies (:mod:`sidecar.proxy.inbound`, :mod:`sidecar.proxy.outbound`) are thin I/O around
it: they feed the request head (and, when asked, the body) in and carry out the verdict.
"""

from .inbound import InboundJudge, InboundSite
from .outbound import OutboundJudge, OutboundSite
from .verdict import Answer, Facts, Forward, ForwardPlan, ReadBody, Verdict, judge_failed

__all__ = [
    "Answer",
    "Facts",
    "Forward",
    "ForwardPlan",
    "InboundJudge",
    "InboundSite",
    "OutboundJudge",
    "OutboundSite",
    "ReadBody",
    "Verdict",
    "judge_failed",
]
