"""The old import path of the Python client; it moved to the `gateway_client` package.

`import gateway_client` loads only aiohttp and the standard library; this path also imports the
gateway server (through `gateway/__init__`), so new code should use `gateway_client`.
"""

from gateway_client import *  # noqa: F403 - the old path offers exactly the client's API
from gateway_client import __all__ as __all__
