"""Systems under test: where the load goes and what the chaos timeline can do to it.

A target kind is one module here: its spec model, its class with ``start``/``stop`` and ``@register``
(``TARGETS`` in ``base`` finds it); abilities beyond that (actions on the timeline, queue depth, liveness)
are separate Protocols in ``base``.
"""
