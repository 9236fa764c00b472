"""The limits of the API contract, in one place for the server, the client and the CLI.

These are promises to callers (the proto comments state them too), so this module imports
nothing: a client reads them without loading any of the server. The server's tunable
limits (streams, pool sizes, timeouts) are settings, with their defaults in config.Config.
"""

# A series id is 1 to this many printable characters.
SERIES_ID_MAX_LENGTH = 128
# Readings in one IngestReadingsRequest, whichever of its forms carries them.
MAX_READINGS_PER_MESSAGE = 50_000
# The largest message either side sends or accepts, unless the server is configured otherwise.
DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024

# QueryAggregates: page_size 0 means the default; larger values are lowered to the maximum.
BUCKETS_DEFAULT_PAGE_SIZE = 1_000
BUCKETS_MAX_PAGE_SIZE = 10_000
# ListQueryHistory, likewise.
HISTORY_DEFAULT_PAGE_SIZE = 10
HISTORY_MAX_PAGE_SIZE = 1_000
