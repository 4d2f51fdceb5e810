from .app import create_app as create_app
from .options import ServeOptions as ServeOptions
from .server import Address as Address
from .server import running as running
from .server import serve as serve
