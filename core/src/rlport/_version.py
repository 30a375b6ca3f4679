__version__ = "0.1.0"

#: The hook-API version the core provides. Plugins declare the range they support
#: (``Manifest.hook_api``, packaging specifiers); the core refuses a plugin whose range
#: does not contain this version. Bump the major number on an incompatible hook change.
HOOK_API_VERSION = "1.1"  # 1.1: rlport_doctor, rlport_weight_transport, ProbeResult.env/findings
