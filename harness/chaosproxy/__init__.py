"""A chaos TCP proxy (asyncio), placed between the SUT and the fake ESP to inject network faults.

tc netem is absent from this kernel, so network faults live in user space, as in Toxiproxy: toxics
(latency with jitter, bandwidth, reset, blackhole, slicer; one per module under ``toxics/``) chained per
connection direction, switchable at run time through ``ChaosProxy`` (function API) or its optional
loopback HTTP control (``control``).
"""

from mailstorm.harness.chaosproxy.base import TOXICS
from mailstorm.harness.chaosproxy.proxy import ChaosProxy
from mailstorm.harness.chaosproxy.spec import ToxicSpec, parse_toxic

__all__ = ["TOXICS", "ChaosProxy", "ToxicSpec", "parse_toxic"]
