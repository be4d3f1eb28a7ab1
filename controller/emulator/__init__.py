"""The emulator: the four live APIs (era, element, vcda, commvault) served over local HTTP.

``core.py`` holds the contract between the server and the APIs; ``storage.py`` persists each
API's state. ``build_apis`` and ``serve`` (what ``converge emulator`` calls) come next.
"""
