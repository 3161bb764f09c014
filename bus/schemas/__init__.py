"""Every message that crosses the bus, one module per family (STYLE E6).

Schema ids: ``meshbus.<family>.v<major>.<Name>`` carried in the ``Meshbus-Schema``
header (see `meshbus.bus.codec`). To add a message: define a frozen dataclass with a
docstring per field in the family's module, decorate it with ``@message(id)``, give new
fields defaults, and re-export it here.
"""

from .common import ErrorReply, Health, HealthRequest

__all__ = ["ErrorReply", "Health", "HealthRequest"]
