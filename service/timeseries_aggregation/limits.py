"""The limits of the API contract, in one place for the server, the client and the CLI.

These are promises to callers (the proto comments state them too), so this module imports
nothing: a client reads them without loading any of the server. The server's tunable
limits (streams, pool sizes, timeouts) are settings, with their defaults in config.Config.
"""

# A series id is 1 to this many printable characters.
SERIES_ID_MAX_LENGTH = 128
# A reading's quantity_kwh lies in [-QUANTITY_KWH_MAX_MAGNITUDE, QUANTITY_KWH_MAX_MAGNITUDE]:
# 1e12 kWh (1,000 TWh) is more than a year of Germany's electricity consumption (about 500
# TWh), so no meter comes near it, and sums of any number of such readings stay far inside a
# double's range (2^63 readings of it make 9.2e30 kWh, where a double ends at 1.8e308).
QUANTITY_KWH_MAX_MAGNITUDE = 1e12
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
# What a history entry keeps of a query's selector, so that an entry stays under
# HISTORY_ENTRY_MAX_BYTES whatever the request: the first series ids (in code point order) and
# label pairs (by key), each id and label value cut to its first characters.
HISTORY_MAX_SERIES_IDS = 8
HISTORY_MAX_LABELS = 8
HISTORY_TEXT_MAX_LENGTH = 32
HISTORY_ENTRY_MAX_BYTES = 4_096

# The series catalog: labels per series, the shape of their keys and values, and the
# declared reading interval (whole seconds).
MAX_LABELS = 64
LABEL_KEY_MAX_LENGTH = 63
LABEL_VALUE_MAX_LENGTH = 255
READING_INTERVAL_MIN_SECONDS = 1
READING_INTERVAL_MAX_SECONDS = 86_400
# A selector names at most this many series by id.
SELECTOR_MAX_SERIES_IDS = 1_000
# ListSeries: page_size 0 means the default; larger values are lowered to the maximum.
SERIES_DEFAULT_PAGE_SIZE = 100
SERIES_MAX_PAGE_SIZE = 1_000
# group_by entries of one query.
MAX_GROUP_BY = 8
