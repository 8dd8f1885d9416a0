"""Systems under test: where the load goes and what the chaos timeline can do to it.

A target kind is one class with ``start``/``stop`` registered by name in ``REGISTRY``; abilities beyond
that (actions on the timeline, queue depth) are separate Protocols in ``base``.
"""
