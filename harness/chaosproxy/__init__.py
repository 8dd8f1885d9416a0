"""A chaos TCP proxy (asyncio), placed between the SUT and the fake ESP to inject network faults.

tc netem is absent from this kernel, so network faults live in user space, as in Toxiproxy: toxics
(latency with jitter, bandwidth, reset, blackhole, slicer; one per module under ``toxics/``, found by
the ``TOXICS`` registry in ``base``) chained per connection direction, switchable at run time through
``proxy.ChaosProxy`` (function API) or its optional loopback HTTP control (``control``); ``spec`` parses
a toxic spec. Nothing is imported here: a toxic module imports ``base``, and nothing that reads the
registry may run before every toxic has registered.
"""
