"""Remote filters: an SDK filter served on the bus (``host``), the messages it speaks (``wire``, over
bus/schemas/filters.py) and the ``meshbus-filter-host`` command (``__main__``). The proxy's side,
which calls a host, is meshbus.proxy.filters.plugins.remote."""
