"""The toxics, one per module (its spec model, its class, ``@register``); ``TOXICS`` finds them."""
