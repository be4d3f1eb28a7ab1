"""Default values shared by the CLI's options and the layers that use them.

Imported by ``cli`` when it declares its options and by ``orchestrating`` for its
``RunOptions``. It lives apart from ``orchestrating`` so that declaring ``--state`` does not
load the network, state and planning layers: ``converge --help`` and ``converge validate``
must start without them. Keep it free of imports.
"""

# Relative to the current directory, like Terraform's local state: one estate per checkout.
DEFAULT_STATE = "sqlite:///.converge/state.db"
